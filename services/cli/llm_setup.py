"""Choosing the LLM endpoints of a run: your endpoint, the scripted server, or the small local model.

Each mode yields the environment the services need (``ISE_LLM_<ROLE>_*``) and a one-line
statement of what quality of data to expect.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from services.common.errors import ConfigError
from services.common.llm.scripted_server import ScriptedLLMServer

ROLES = ("intent", "user", "agent")
MODES = ("auto", "openai", "scripted", "local")


@dataclass(frozen=True)
class LLMPlan:
    mode: str
    env: dict[str, str]
    quality: str


def resolve_mode(mode: str) -> str:
    if mode not in MODES:
        raise ConfigError(f"--llm must be one of {', '.join(MODES)}, not {mode!r}")
    if mode != "auto":
        return mode
    configured = os.environ.get("OPENAI_BASE_URL") or any(
        os.environ.get(f"ISE_LLM_{r.upper()}_BASE_URL") for r in ROLES
    )
    return "openai" if configured else "local"


def _role_env(base_url: str, models: dict[str, str], key: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for role in ROLES:
        env[f"ISE_LLM_{role.upper()}_BASE_URL"] = base_url
        env[f"ISE_LLM_{role.upper()}_MODEL"] = models[role]
        env[f"ISE_LLM_{role.upper()}_API_KEY"] = key
    return env


SMOKE = (
    "SMOKE QUALITY: a 135M-parameter local model (SmolLM2) stands in for real LLMs; its choices are "
    "weak and the data is not worth training on. Set OPENAI_BASE_URL/OPENAI_API_KEY for real data"
)


def _local_env(base_url: str, local: ModuleType) -> dict[str, str]:
    """The small model needs schema-enforced JSON and one forced tool call per agent turn."""
    env = _role_env(base_url, dict.fromkeys(ROLES, local.MODEL_NAME), "local")
    env["ISE_LLM_INTENT_RESPONSE_FORMAT"] = "text"  # it writes prose well and JSON-wrapped prose badly
    env["ISE_LLM_INTENT_MAX_TOKENS"] = "200"
    env["ISE_INTENT_PROMPT"] = "render_small.md"
    env["ISE_INTENT_MIN_TASK_COVERAGE"] = "0"  # 135M parameters rarely keeps every task
    env["ISE_INTENT_REQUIRE_CONCRETE_DATA"] = "false"
    env["ISE_INTENT_REQUIRE_REFERENCES"] = "false"  # nor names tools and skills on request
    env["ISE_INTENT_MIN_WORDS"] = "12"  # 200 tokens of prose: often under the 80 words asked
    env["ISE_LLM_USER_RESPONSE_FORMAT"] = "json_schema"
    env["ISE_LLM_USER_MAX_TOKENS"] = "400"
    env["ISE_LLM_AGENT_TOOL_CHOICE_FIRST_STEP"] = "required"
    env["ISE_LLM_AGENT_TOOL_CALL_PREFILL"] = local.TOOL_CALL_PREFILL
    env["ISE_LLM_AGENT_TOOL_CALL_STOP"] = local.TOOL_CALL_STOP
    env["ISE_LLM_AGENT_MAX_TOKENS"] = "160"
    return env


@contextlib.contextmanager
def llm_plan(mode: str, *, scenario: str = "default", log_dir: Path | None = None) -> Iterator[LLMPlan]:
    """Start whatever the mode needs for the duration of the block."""
    mode = resolve_mode(mode)
    if mode == "openai":
        if not (os.environ.get("OPENAI_BASE_URL") or os.environ.get("ISE_LLM_AGENT_BASE_URL")):
            raise ConfigError("--llm openai needs OPENAI_BASE_URL and OPENAI_API_KEY (or ISE_LLM_<ROLE>_BASE_URL)")
        yield LLMPlan(mode, {}, "your endpoint: quality is that of the models you configured")
        return
    if mode == "scripted":
        with ScriptedLLMServer() as scripted:
            env = _role_env(scripted.base_url, {r: f"{scenario}:{r}" for r in ROLES}, "scripted")
            yield LLMPlan(mode, env, "scripted replies: a deterministic pipeline check, NOT training data")
        return
    from services.common.llm import local_server as local  # the optional local-llm extra

    server = local.LocalModelServer(log_path=(log_dir / "local-llm.log") if log_dir else None)
    base_url = server.start()
    try:
        yield LLMPlan(mode, _local_env(base_url, local), SMOKE)
    finally:
        server.stop()
