"""Unit tests of the scripted LLM's pure reply logic (services.common.llm.scripted_policy)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.common.llm import scripted_policy as policy

pytestmark = pytest.mark.unit

SCRIPTS = Path(policy.__file__).with_name("scripts")
TOOLS = [
    {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
    for n in ("exec", "read", "write", "edit")
]
TUPLE = {
    "persona": {
        "name": "Dana Reyes",
        "role": "Data Analyst",
        "industry": "Retail",
        "communication_style": "brief",
        "work_context": "I run the weekly sales reports.",
    },
    "domains": [{"name": "Data", "description": "data work"}],
    "tasks": [
        {"name": "Clean CSV", "description": "", "domain": "Data"},
        {"name": "Compute Totals", "description": "", "domain": "Data"},
    ],
    "complexity": "medium",
}


@pytest.fixture(scope="module")
def default() -> dict[str, Any]:
    doc = yaml.safe_load((SCRIPTS / "default.yaml").read_text())
    policy.validate_scenario("default", doc)
    return doc


def agent_call(name: str) -> dict[str, Any]:
    return {"id": "c", "type": "function", "function": {"name": name, "arguments": "{}"}}


def conversation(turns: int, steps_in_last: int) -> list[dict[str, Any]]:
    """system + `turns` user messages, each earlier turn closed by an assistant answer."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": "be helpful"}]
    for t in range(turns):
        messages.append({"role": "user", "content": "start" if t == 0 else f"next {t}"})
        if t < turns - 1:
            messages.append({"role": "assistant", "content": "done"})
    for _ in range(steps_in_last):
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [agent_call("exec")]},
            {"role": "tool", "tool_call_id": "c", "content": "ok"},
        ]
    return messages


def ep_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


# ---------------------------------------------------------------- helpers


def test_fill_leaves_unknown_and_literal_braces() -> None:
    assert policy.fill('a {ep} {x} {} {"k": 1} {turn}', {"ep": "12", "turn": 3}) == 'a 12 {x} {} {"k": 1} 3'


def test_join_naturally() -> None:
    assert [policy.join_naturally(x) for x in ([], ["a"], ["a", "b"], ["a", "b", "c"])] == [
        "",
        "a",
        "a and b",
        "a, b and c",
    ]


def test_split_model() -> None:
    assert policy.split_model("default:agent") == ("default", "agent")
    with pytest.raises(policy.PolicyError) as err:
        policy.split_model("gpt-4o")
    assert err.value.status == 404 and "<scenario>:<role>" in err.value.message


def test_message_text_handles_parts() -> None:
    assert policy.message_text({"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}) == "ab"
    assert policy.message_text({"content": None}) == ""


# ---------------------------------------------------------------- agent


@pytest.mark.parametrize(("turns", "steps", "expected"), [(1, 0, (0, 0)), (1, 2, (0, 2)), (3, 1, (2, 1))])
def test_agent_position_counts_turns_and_steps(turns: int, steps: int, expected: tuple[int, int]) -> None:
    assert policy.agent_position(conversation(turns, steps)) == expected


def test_agent_position_needs_a_user_message() -> None:
    with pytest.raises(policy.PolicyError):
        policy.agent_position([{"role": "system", "content": "x"}])


def test_agent_first_step_fills_ep(default: dict[str, Any]) -> None:
    reply = policy.agent_reply(default, conversation(1, 0), TOOLS)
    write, exec_ = reply["tool_calls"]
    assert (write["name"], exec_["name"]) == ("write", "exec")
    args = json.loads(write["arguments"])
    assert args == {
        "path": "notes/plan.md",
        "content": f"plan {ep_of('start')}\n- gather the inputs\n- produce the report\n",
    }
    assert json.loads(exec_["arguments"]) == {"command": "wc -c notes/plan.md && ls notes"}


def test_agent_steps_then_content(default: dict[str, Any]) -> None:
    second = policy.agent_reply(default, conversation(2, 1), TOOLS)
    assert json.loads(second["tool_calls"][0]["arguments"])["command"].startswith("tr a-z A-Z")
    last = policy.agent_reply(default, conversation(2, 2), TOOLS)
    assert last == {"content": default["agent"]["turns"][1]["steps"][2]["content"], "tool_calls": []}


def test_agent_past_steps_uses_last_content_step(default: dict[str, Any]) -> None:
    assert (
        policy.agent_reply(default, conversation(1, 7), TOOLS)["content"]
        == "I wrote notes/plan.md with the first steps."
    )


def test_agent_past_turns_uses_fallback(default: dict[str, Any]) -> None:
    reply = policy.agent_reply(default, conversation(9, 0), TOOLS)
    assert reply == {"content": "Everything you asked for is done.", "tool_calls": []}


def test_agent_raw_arguments_verbatim(default: dict[str, Any]) -> None:
    read, broken = policy.agent_reply(default, conversation(3, 0), TOOLS)["tool_calls"]
    assert json.loads(read["arguments"]) == {"path": "notes/plan.md"}
    assert broken["arguments"] == '{"path": "notes/broken.md", "content": '


def test_agent_rejects_tool_not_offered(default: dict[str, Any]) -> None:
    with pytest.raises(policy.PolicyError) as err:
        policy.agent_reply(default, conversation(1, 0), TOOLS[:1])
    assert err.value.status == 400 and "'write'" in err.value.message


def test_agent_invalid_flag_skips_tool_check() -> None:
    scenario = {
        "agent": {
            "fallback": {"content": "x"},
            "turns": [
                {
                    "steps": [
                        {"tool_calls": [{"name": "nonexistent", "arguments": {"a": "{turn}"}, "invalid": True}]},
                        {"content": "turn {turn} ep {ep}"},
                    ]
                }
            ],
        }
    }
    assert policy.agent_reply(scenario, conversation(1, 0), TOOLS)["tool_calls"] == [
        {"name": "nonexistent", "arguments": '{"a": "0"}'}
    ]
    assert policy.agent_reply(scenario, conversation(1, 1), TOOLS)["content"] == f"turn 0 ep {ep_of('start')}"


# ---------------------------------------------------------------- user


def user_messages(
    assistants: int, system: str = "You are the user. <intent>Build a sales report</intent>"
) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
    for i in range(assistants):
        messages += [{"role": "user", "content": f"agent said {i}"}, {"role": "assistant", "content": "{}"}]
    return [*messages, {"role": "user", "content": "agent said last"}]


def test_user_reply_index_and_excerpt(default: dict[str, Any]) -> None:
    first = json.loads(policy.user_reply(default, user_messages(0))["content"])
    assert first == {
        "completed": False,
        "query": "Let's begin: write a short plan for Build a sales report into notes/plan.md.",
        "reason": "first step",
        "is_success": False,
    }
    assert json.loads(policy.user_reply(default, user_messages(2))["content"])["query"].startswith("Before we wrap up")


def test_user_reply_clamps_to_last(default: dict[str, Any]) -> None:
    for k in (3, 4, 50):
        reply = json.loads(policy.user_reply(default, user_messages(k))["content"])
        assert reply["completed"] is True and reply["is_success"] is True


def test_user_excerpt_is_cut_and_defaulted(default: dict[str, Any]) -> None:
    long = "x" * 100
    query = json.loads(policy.user_reply(default, user_messages(0, f"<intent>{long}</intent>"))["content"])["query"]
    assert "x" * 60 + " into" in query and "x" * 61 not in query
    assert (
        "plan for the task into"
        in json.loads(policy.user_reply(default, user_messages(0, "no tags"))["content"])["query"]
    )


# ---------------------------------------------------------------- intent


def intent_text(scenario: dict[str, Any], intent_tuple: dict[str, Any]) -> str:
    content = policy.intent_reply(
        scenario, [{"role": "user", "content": f"<intent_tuple>{json.dumps(intent_tuple)}</intent_tuple>"}]
    )
    return json.loads(content["content"])["intent"]


def test_intent_is_deterministic_and_filled(default: dict[str, Any]) -> None:
    text = intent_text(default, TUPLE)
    assert text == intent_text(default, json.loads(json.dumps(TUPLE)))
    assert "Dana Reyes" in text and "clean csv and compute totals" in text
    assert not re.search(r"\{[a-z_]+\}", text)


def test_every_template_fills_completely(default: dict[str, Any]) -> None:
    key = policy.digest(TUPLE)
    variables = policy.intent_variables(default["intent"], TUPLE, key)
    for template in default["intent"]["templates"]:
        assert not re.search(r"\{[a-z_]+\}", policy.fill(template, variables)), template
    assert len(default["intent"]["templates"]) >= 4


def test_intent_varies_across_tuples(default: dict[str, Any]) -> None:
    texts = {intent_text(default, {**TUPLE, "persona": {**TUPLE["persona"], "name": f"P{i}"}}) for i in range(20)}
    assert len(texts) == 20
    openings = {t.split()[0] for t in texts}
    assert len(openings) >= 3  # several templates are in use


def test_intent_missing_fields_use_defaults(default: dict[str, Any]) -> None:
    text = intent_text(default, {"complexity": "simple"})
    assert default["intent"]["defaults"]["tasks"] in text


@pytest.mark.parametrize(
    "content", ["no tuple here", "<intent_tuple>{bad</intent_tuple>", "<intent_tuple>[1]</intent_tuple>"]
)
def test_intent_rejects_missing_or_bad_tuple(default: dict[str, Any], content: str) -> None:
    with pytest.raises(policy.PolicyError) as err:
        policy.intent_reply(default, [{"role": "user", "content": content}])
    assert err.value.status == 400 and "intent_tuple" in err.value.message


# ---------------------------------------------------------------- scenarios and completion


def test_merge_keeps_parent_keys() -> None:
    parent = {"user": {"replies": [1], "default_excerpt": "p"}, "agent": {"fallback": {"content": "a"}}}
    merged = policy.merge_scenarios(parent, {"extends": "p", "user": {"replies": [2]}})
    assert merged == {"user": {"replies": [2], "default_excerpt": "p"}, "agent": {"fallback": {"content": "a"}}}


@pytest.mark.parametrize(
    "doc",
    [
        {"user": {"replies": []}},
        {"agent": {"turns": [], "fallback": {}}},
        {
            "agent": {
                "fallback": {"content": "x"},
                "turns": [{"steps": [{"tool_calls": [{"name": "exec", "arguments": {}}]}]}],
            }
        },
        {
            "agent": {
                "fallback": {"content": "x"},
                "turns": [{"steps": [{"tool_calls": [{"name": "exec"}]}, {"content": "y"}]}],
            }
        },
    ],
)
def test_validate_rejects_unusable_scenarios(doc: dict[str, Any]) -> None:
    with pytest.raises(policy.ScenarioError):
        policy.validate_scenario("bad", doc)


def test_check_role_lists_roles() -> None:
    with pytest.raises(policy.PolicyError) as err:
        policy.check_role("s", {"user": {"replies": [1]}}, "agent")
    assert err.value.status == 404 and "roles: user" in err.value.message


def test_completion_schema_and_determinism(default: dict[str, Any]) -> None:
    body = {"model": "default:agent", "messages": conversation(1, 0), "tools": TOOLS, "temperature": 0.3}
    first = policy.build_completion(default, "agent", body)
    assert first == policy.build_completion(default, "agent", dict(body))
    choice = first["choices"][0]
    assert first["object"] == "chat.completion" and first["id"].startswith("chatcmpl-")
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    ids = [c["id"] for c in choice["message"]["tool_calls"]]
    assert len(set(ids)) == 2 and all(i.startswith("call_") for i in ids)
    usage = first["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    other = policy.build_completion(default, "agent", {**body, "messages": conversation(1, 1)})
    assert other["id"] != first["id"] and other["choices"][0]["finish_reason"] == "stop"
    assert "tool_calls" not in other["choices"][0]["message"]


def test_completion_rejects_bad_messages(default: dict[str, Any]) -> None:
    with pytest.raises(policy.PolicyError):
        policy.build_completion(default, "agent", {"model": "default:agent", "messages": "hi"})
