"""The tool schemas we give the agent equal the reference agent's tool interface.

``tests/data/reference_tools.json`` holds the reference's interface as facts (each tool's
parameter names and JSON types, and which are required), written down from the reference's
table. Every tool we expose must match it exactly, carry a description of ours, and be backed
by an argument model that accepts exactly the schema's parameters (no more, no fewer).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from services.executor.tools import all_tool_schemas, resolve_toolset, tool_schemas
from services.executor.tools_exec import ExecArgs
from services.executor.tools_files import EditArgs, LsArgs, ReadArgs, SearchArgs, WriteArgs
from services.executor.tools_memory import MemoryGetArgs, MemorySearchArgs
from services.executor.tools_process import ProcessArgs
from services.executor.tools_web import WebFetchArgs, WebSearchArgs

REFERENCE: dict[str, Any] = {
    name: facts
    for name, facts in json.loads((Path(__file__).parents[1] / "data" / "reference_tools.json").read_text()).items()
    if not name.startswith("_")
}
MODELS: dict[str, type[BaseModel]] = {
    "exec": ExecArgs,
    "process": ProcessArgs,
    "read": ReadArgs,
    "write": WriteArgs,
    "edit": EditArgs,
    "web_search": WebSearchArgs,
    "web_fetch": WebFetchArgs,
    "memory_search": MemorySearchArgs,
    "memory_get": MemoryGetArgs,
    "ls": LsArgs,
    "search": SearchArgs,
}
EXPOSED = {t["function"]["name"]: t for t in tool_schemas("reference")}
# a pydantic field type that is at least as wide as what the schema promises
ACCEPTS = {"number": {"number", "integer"}, "string": {"string"}, "boolean": {"boolean"}}
ACCEPTS |= {"integer": {"integer"}, "object": {"object"}, "array": {"array"}}


def parameters(tool: dict[str, Any]) -> dict[str, Any]:
    params = tool["function"]["parameters"]
    assert params["type"] == "object"
    return params


def model_types(prop: dict[str, Any]) -> set[str]:
    """The JSON types a pydantic field's schema allows (``None`` left out: an omitted parameter)."""
    options = prop.get("anyOf", [prop])
    return {o["type"] for o in options if o.get("type") not in (None, "null")}


def test_we_expose_the_reference_tools_in_the_default_toolset() -> None:
    assert list(EXPOSED) == list(REFERENCE)
    assert resolve_toolset("reference") == tuple(REFERENCE)
    assert resolve_toolset("reference+extras") == (*REFERENCE, "ls", "search")
    assert resolve_toolset("exec,read") == ("exec", "read")
    with pytest.raises(ValueError, match="unknown tool 'bash'"):
        resolve_toolset("reference,bash")


@pytest.mark.parametrize("name", list(REFERENCE))
def test_each_tool_has_the_reference_parameters_types_and_required(name: str) -> None:
    params = parameters(EXPOSED[name])
    facts = REFERENCE[name]
    assert {p: spec["type"] for p, spec in params["properties"].items()} == facts["parameters"]
    assert sorted(params.get("required", [])) == sorted(facts["required"])
    assert list(params["properties"]) == list(facts["parameters"])  # the reference's order, too
    for param, values in facts.get("values", {}).items():
        assert sorted(params["properties"][param]["enum"]) == sorted(values)
    if "env" in params["properties"]:
        value_types = {v["type"] for v in params["properties"]["env"].get("patternProperties", {}).values()}
        assert value_types <= {"string"}
    for param in ("keys", "hex"):
        if param in params["properties"]:
            assert params["properties"][param]["items"] == {"type": "string"}


@pytest.mark.parametrize("name", list(REFERENCE))
def test_each_tool_and_parameter_has_a_description_of_ours(name: str) -> None:
    function = EXPOSED[name]["function"]
    assert isinstance(function["description"], str) and len(function["description"].split()) >= 5
    for param, spec in parameters(EXPOSED[name])["properties"].items():
        assert isinstance(spec.get("description"), str) and spec["description"].strip(), (name, param)


@pytest.mark.parametrize("name", list(all_tool_schemas()))
def test_the_argument_model_accepts_exactly_the_schema_parameters(name: str) -> None:
    model = MODELS[name]
    params = parameters(all_tool_schemas()[name])
    fields = {info.alias or field: info for field, info in model.model_fields.items()}
    assert set(fields) == set(params["properties"]), f"{name}: model fields vs schema"
    assert {f for f, info in fields.items() if info.is_required()} == set(params.get("required", []))
    assert model.model_config.get("extra") == "forbid"  # an unknown parameter is a tool error
    model_props = model.model_json_schema(by_alias=True)["properties"]
    for param, spec in params["properties"].items():
        allowed = model_types(model_props[param])
        assert allowed and allowed <= ACCEPTS[spec["type"]], (name, param, spec["type"], allowed)


def test_the_models_validate_the_reference_parameter_names() -> None:
    """The names as the reference's agents send them (camelCase, ``from``) validate as they are."""
    ExecArgs.model_validate({"command": "ls", "yieldMs": 500, "env": {"A": "1"}, "timeout": 5})
    ProcessArgs.model_validate({"action": "send-keys", "sessionId": "s", "keys": ["C-c"], "hex": ["1b"]})
    EditArgs.model_validate({"path": "a", "oldText": "x", "newText": "y"})
    WebFetchArgs.model_validate({"url": "https://example.com", "extractMode": "text", "maxChars": 500})
    MemorySearchArgs.model_validate({"query": "q", "maxResults": 3, "minScore": 0.5})
    assert MemoryGetArgs.model_validate({"path": "MEMORY.md", "from": 3, "lines": 2}).from_ == 3


@pytest.mark.parametrize("bad", ["..", ".", "-rf", "a/b", "a b", "$(id)", ""])
def test_a_session_id_can_only_name_a_session_folder(bad: str) -> None:
    from pydantic import ValidationError

    from services.executor.tools_process import ProcessArgs

    with pytest.raises(ValidationError):
        ProcessArgs(action="poll", sessionId=bad)
    assert ProcessArgs(action="poll", sessionId="quiet-harbor2").sessionId == "quiet-harbor2"
