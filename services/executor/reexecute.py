"""Re-execute a recorded episode offline: its tool calls again, in a fresh workspace, with the web
answered from the episode's recording only.

A dataset record holds every tool call of its episode (the assistant messages) and what each
returned (the tool messages); its sidecar ``web/<episode>.jsonl`` holds every web exchange the
egress proxy recorded. ``reexecute`` arms the proxy to replay that recording for a new episode id
(no request of it reaches the network: a request not in the recording gets the proxy's 502),
creates a workspace with the same skills, runs the calls in their recorded order through the
same Toolbox, and compares each result with the recorded one, after blanking what is
measured rather than produced (``tookMs``, pids). It proves a record is execution-grounded and
its web results reproducible without the web.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.egress.control import EgressControl
from services.executor.runtime_prompt import AgentWorld
from services.executor.tools import Toolbox, resolve_toolset
from services.executor.web_access import WebAccess
from services.executor.workspace.base import WorkspaceBackend

_VOLATILE = (
    (re.compile(r'"tookMs": \d+'), '"tookMs": 0'),
    (re.compile(r"\bpid \d+"), "pid N"),
    (re.compile(r"  \d+s  "), "  Ns  "),  # process list: age
)
WEB_TOOLS = ("web_search", "web_fetch")


@dataclass
class CallResult:
    call_id: str
    name: str
    same: bool
    recorded: str
    replayed: str


@dataclass
class ReexecReport:
    episode_id: str
    replay_episode: str
    calls: list[CallResult] = field(default_factory=list)
    exchanges: list[dict[str, Any]] = field(default_factory=list)  # what the proxy saw of the replay

    def offline(self) -> bool:
        """Every web request of the re-execution was answered from the recording."""
        return all(x.get("replay") for x in self.exchanges)

    @property
    def differing(self) -> list[CallResult]:
        return [c for c in self.calls if not c.same]

    def web_identical(self) -> bool:
        return all(c.same for c in self.calls if c.name in WEB_TOOLS)


def normalise(text: str) -> str:
    for pattern, replacement in _VOLATILE:
        text = pattern.sub(replacement, text)
    return text


def recorded_calls(record: dict[str, Any]) -> Iterator[tuple[str, str, str, str]]:
    """(call id, tool name, JSON arguments, recorded result) of every tool call, in order."""
    results = {m.get("tool_call_id"): m.get("content") or "" for m in record["messages"] if m.get("role") == "tool"}
    for message in record["messages"]:
        for call in message.get("tool_calls") or []:
            fn = call["function"]
            yield call["id"], fn["name"], fn["arguments"], results.get(call["id"], "")


def load_recording(record_file: Path, record: dict[str, Any]) -> list[dict[str, Any]]:
    """The record's web recording (its sidecar next to the shard), [] when it made no web request."""
    rel = ((record.get("metadata") or {}).get("web") or {}).get("recording")
    if not rel:
        return []
    path = record_file.parent / rel
    if not path.is_file():
        raise FileNotFoundError(f"the record names its web recording {rel}, but {path} does not exist")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def reexecute(
    record: dict[str, Any],
    recording: list[dict[str, Any]],
    backend: WorkspaceBackend,
    web: WebAccess,
    world: AgentWorld,
) -> ReexecReport:
    """Run the record's tool calls again (blocking); the web answered from ``recording`` only."""
    original = str(record.get("session_id") or "episode")
    replay_id = f"reexec-{uuid.uuid4().hex[:12]}"
    control = EgressControl((web.proxy_host, web.proxy_port), web.secret)
    control.arm_replay(replay_id, recording)
    report = ReexecReport(original, replay_id)
    known = set(resolve_toolset("reference+extras"))
    names = ",".join(sorted({name for _, name, _, _ in recorded_calls(record) if name in known})) or "exec"
    try:
        backend.create(replay_id, "reexecute")
        world.install(backend, replay_id)
        toolbox = Toolbox(backend, replay_id, tools=names, web=web)
        for call_id, name, arguments, recorded in recorded_calls(record):
            replayed = toolbox.run(call_id, name, arguments).content
            same = normalise(replayed) == normalise(recorded)
            report.calls.append(CallResult(call_id, name, same, recorded, replayed))
        report.exchanges = control.fetch_recording(replay_id)
    finally:
        backend.close(replay_id)
        control.disarm_replay(replay_id)
        control.delete_recording(replay_id)
    return report
