"""Every reference tool end to end in a real Docker workspace, called with the reference agent's
parameter names (exec, process, read, write, edit, memory_search, memory_get, web_*).

The background-job test runs over two Toolbox instances for the same episode, as two turns (or
two executor replicas) would: the job lives in the workspace, not in the Toolbox. Web access
through the egress proxy is tested in test_egress_proxy.py; here only "no proxy: web is off".
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from services.executor.tools import Toolbox, ToolOutcome
from services.executor.workspace.base import WorkspaceLimits
from services.executor.workspace.docker_backend import DockerWorkspaceBackend
from tests.integration.test_docker_workspace import workspace_image

pytestmark = pytest.mark.integration

EPISODE = "agent-tools"
STILL_RUNNING = re.compile(r"Command still running \(session ([\w.-]+), pid (\d+)\)\. Use process \(")


@pytest.fixture(scope="module")
def backend() -> Iterator[DockerWorkspaceBackend]:
    limits = WorkspaceLimits(memory_mb=256, pids=128, cpus=1.0, output_cap_bytes=64 * 1024)
    workspaces = DockerWorkspaceBackend(workspace_image(), limits, name_prefix=f"ise-at-{uuid.uuid4().hex[:8]}")
    workspaces.create(EPISODE, "run-agent-tools")
    try:
        yield workspaces
    finally:
        for info in workspaces.list_workspaces():
            workspaces.close(info.episode_id)
        assert workspaces.list_workspaces() == []


@pytest.fixture
def box(backend: DockerWorkspaceBackend) -> Toolbox:
    return Toolbox(backend, EPISODE)  # the default toolset: the reference's


def call(box: Toolbox, name: str, **arguments: Any) -> ToolOutcome:
    return box.run(f"call-{uuid.uuid4().hex[:6]}", name, json.dumps(arguments))


def failed(out: ToolOutcome, tool: str) -> str:
    """The message of a tool error, after checking the reference's error shape."""
    assert not out.meta.ok and out.wrote is None, out.content
    assert json.loads(out.content) == {"status": "error", "tool": tool, "error": out.meta.error}, out.content
    return out.meta.error or ""


def sh(box: Toolbox, command: str) -> str:
    """A command of the test itself (not recorded as the agent's)."""
    result = box.backend.exec(box.episode_id, command, workdir=None, timeout_s=30, record=False)
    return result.stdout


def session_of(out: ToolOutcome) -> str:
    found = STILL_RUNNING.search(out.content)
    assert found and out.meta.ok and out.meta.exit_code is None, out.content
    return found.group(1)


def absent(box: Toolbox, *paths: str) -> bool:
    return sh(box, "ls " + " ".join(paths) + " 2>/dev/null; true").strip() == ""


# ------------------------------------------------------------------------------------ exec


def test_exec_answers_with_the_output_and_the_exit_code(box: Toolbox) -> None:
    out = call(box, "exec", command="echo out; echo err >&2; exit 3")
    assert out.content == "out\nerr\n\n(Command exited with code 3)"
    assert (out.meta.ok, out.meta.exit_code, out.meta.timed_out) == (False, 3, False)
    quiet = call(box, "exec", command="true")
    assert quiet.content == "(no output)" and quiet.meta.ok and quiet.meta.exit_code == 0
    sh(box, "mkdir -p /workspace/wd/inner")
    assert call(box, "exec", command="pwd", workdir="wd/inner").content == "/workspace/wd/inner"
    assert call(box, "exec", command="pwd", workdir="/tmp").content == "/tmp"
    assert call(box, "exec", command="pwd").content == "/workspace"  # workdir is for that command only


def test_exec_env_applies_to_one_command_and_does_not_leak(box: Toolbox) -> None:
    value = 'it\'s a "value" with $dollar'
    out = call(box, "exec", command='printf "%s|" "$GREETING"; cd /tmp; export LEAKED=1', env={"GREETING": value})
    assert out.meta.ok and out.content == f"{value}|", out.content
    after = call(box, "exec", command='echo "[${GREETING-unset}][${LEAKED-unset}]"; pwd')
    assert after.content == "[unset][unset]\n/workspace"  # a subshell: neither env nor its cd stayed
    bad = call(box, "exec", command="touch env-bad", env={"NOT-A-NAME": "x"})
    assert "env" in failed(bad, "exec") and "NOT-A-NAME" in (bad.meta.error or "")
    assert absent(box, "env-bad")


def test_exec_timeout_kills_the_command(box: Toolbox) -> None:
    out = call(box, "exec", command="echo started; sleep 32.5; echo never", timeout=1)
    assert out.content == "started\n\n(Command timed out after 1 seconds and was killed)"
    assert out.meta.timed_out and not out.meta.ok and out.meta.duration_ms < 15_000
    assert sh(box, "pgrep -f 'sleep 32.5' || echo none").strip() == "none"
    assert call(box, "exec", command="echo alive").content == "alive"


def test_exec_pty_gives_a_terminal(box: Toolbox) -> None:
    tty = call(box, "exec", command="tty; test -t 0 && test -t 1 && echo is-a-tty", pty=True)
    assert tty.meta.ok and "/dev/pts/" in tty.content and "is-a-tty" in tty.content, tty.content
    plain = call(box, "exec", command="tty")
    assert plain.content.startswith("not a tty") and plain.meta.exit_code == 1


def test_exec_refuses_elevated_host_and_node_and_accepts_security_and_ask(box: Toolbox) -> None:
    for extra, word in (({"elevated": True}, "elevated"), ({"host": "gateway"}, "host"), ({"node": "n1"}, "node")):
        error = failed(call(box, "exec", command="touch refused-run", **extra), "exec")
        assert error.startswith(word) and "not available" in error, error
    assert absent(box, "refused-run")  # refused before anything ran
    sandbox = call(box, "exec", command="id -u", host="sandbox", elevated=False)
    assert sandbox.content == "1000"
    for security, ask in (("deny", "off"), ("allowlist", "on-miss"), ("full", "always")):
        out = call(box, "exec", command="echo ran", security=security, ask=ask)
        assert out.meta.ok and out.content == "ran", out.content
    assert "security" in failed(call(box, "exec", command="true", security="bogus"), "exec")


# ------------------------------------------------------------------------ read, write, edit


def test_write_then_read_a_window_of_lines(box: Toolbox) -> None:
    text = "".join(f"line {n} é\n" for n in range(1, 11))
    wrote = call(box, "write", path="docs/deep/lines.txt", content=text)
    assert wrote.meta.ok and wrote.wrote == "docs/deep/lines.txt"
    assert wrote.content == f"Successfully wrote {len(text.encode())} bytes to docs/deep/lines.txt"
    assert call(box, "read", path="docs/deep/lines.txt").content == text
    assert call(box, "read", path="/workspace/docs/deep/lines.txt", offset=1, limit=1).content == "line 1 é\n"
    assert call(box, "read", path="docs/deep/lines.txt", offset=3, limit=2).content == "line 3 é\nline 4 é\n"
    assert call(box, "read", path="docs/deep/lines.txt", offset=9).content == "line 9 é\nline 10 é\n"
    assert "past the end" in failed(call(box, "read", path="docs/deep/lines.txt", offset=11), "read")
    assert "offset" in failed(call(box, "read", path="docs/deep/lines.txt", offset=0), "read")  # 1-based
    assert "no such file" in failed(call(box, "read", path="docs/missing.txt"), "read")


def test_edit_answers_like_the_reference_and_puts_the_diff_in_meta(box: Toolbox) -> None:
    call(box, "write", path="cfg.ini", content="[server]\nport = 8080\nhost = localhost\n")
    out = call(box, "edit", path="cfg.ini", oldText="port = 8080", newText="port = 9090")
    assert out.meta.ok and out.content == "Successfully replaced text in cfg.ini." and out.wrote == "cfg.ini"
    assert out.meta.diff is not None and "-port = 8080\n+port = 9090\n" in out.meta.diff
    assert out.meta.diff.startswith("--- a/cfg.ini\n+++ b/cfg.ini\n")
    assert call(box, "read", path="cfg.ini").content == "[server]\nport = 9090\nhost = localhost\n"
    again = call(box, "edit", path="cfg.ini", oldText="port = 8080", newText="port = 1")
    assert "occurs 0 times" in failed(again, "edit") and again.meta.diff is None


# --------------------------------------------------------------------------------- process


def test_a_background_job_is_finished_in_the_next_turn(backend: DockerWorkspaceBackend) -> None:
    first = Toolbox(backend, EPISODE)
    assert call(first, "exec", command="mkdir -p proj && cd proj && export TOKEN=abc").meta.ok
    job = "pwd; echo token=$TOKEN; read line; echo got:$line; exit 5"
    started = call(first, "exec", command=job, background=True)
    name = session_of(started)
    call(first, "exec", command="cd /workspace; unset TOKEN")
    del first

    second = Toolbox(backend, EPISODE)  # the next turn: a fresh Toolbox, same workspace
    listed = call(second, "process", action="list").content
    assert re.search(rf"^{re.escape(name)}  running  pid \d+  \d+s  pwd; echo token", listed, re.M), listed
    polled = call(second, "process", action="poll", sessionId=name, timeout=2000)
    assert polled.content.endswith(f"\n\nProcess still running (session {name}).")
    seen = started.content + polled.content  # the start's answer shows what was printed by then, poll the rest
    assert "/workspace/proj" in seen and "token=abc" in seen, seen  # it ran with the agent's shell state
    sent = call(second, "process", action="submit", sessionId=name, data="hello there")
    assert sent.content == f"Session {name}: wrote 12 bytes."
    done = call(second, "process", action="poll", sessionId=name, timeout=10_000)
    assert done.content == "got:hello there\n\nProcess exited with code 5.", done.content
    assert call(second, "process", action="poll", sessionId=name).content == (
        "(no new output)\n\nProcess exited with code 5."
    )
    log = call(second, "process", action="log", sessionId=name)
    assert log.content == "/workspace/proj\ntoken=abc\ngot:hello there"
    assert call(second, "process", action="log", sessionId=name, offset=-1, limit=1).content == "got:hello there"
    assert "has exited" in failed(call(second, "process", action="write", sessionId=name, data="x"), "process")
    assert call(second, "process", action="remove", sessionId=name).content == f"Removed session {name}."
    assert failed(call(second, "process", action="poll", sessionId=name), "process") == (
        f"No active session found for {name}"
    )


def test_yield_ms_gives_a_plain_result_when_the_command_finishes_in_time(box: Toolbox) -> None:
    quick = call(box, "exec", command="sleep 0.3; echo quick; exit 3", yieldMs=10_000)
    assert quick.content == "quick\n\n(Command exited with code 3)"
    assert (quick.meta.ok, quick.meta.exit_code) == (False, 3)
    assert "echo quick" not in call(box, "process", action="list").content  # no session left behind
    slow = call(box, "exec", command="echo slow; sleep 31.25", yieldMs=500)
    name = session_of(slow)
    assert slow.content.startswith("slow\n\nCommand still running (session ")
    assert call(box, "process", action="kill", sessionId=name).content == f"Killed session {name}."
    assert sh(box, "pgrep -f 'sleep 31.25' || echo none").strip() == "none"
    assert call(box, "process", action="poll", sessionId=name).content.endswith("Process exited with code 143.")
    assert call(box, "process", action="kill", sessionId=name).content == f"Session {name} had already exited."
    assert call(box, "process", action="clear", sessionId=name).content == f"Removed session {name}."


def test_remove_kills_a_running_job_and_clear_refuses_it(box: Toolbox) -> None:
    name = session_of(call(box, "exec", command="sleep 31.5", background=True))
    assert "still running" in failed(call(box, "process", action="clear", sessionId=name), "process")
    removed = call(box, "process", action="remove", sessionId=name)
    assert removed.content == f"Removed session {name}. It was still running and was killed."
    assert sh(box, "pgrep -f 'sleep 31.5' || echo none").strip() == "none"
    assert "No active session found" in failed(call(box, "process", action="log", sessionId=name), "process")


def test_a_background_timeout_ends_the_job(box: Toolbox) -> None:
    started = call(box, "exec", command="echo begun; sleep 31.75", background=True, timeout=1)
    name = session_of(started)
    done = call(box, "process", action="poll", sessionId=name, timeout=10_000)
    assert done.content.endswith("\n\nProcess exited with code 124."), done.content
    assert "begun" in started.content + done.content
    call(box, "process", action="remove", sessionId=name)


@pytest.mark.parametrize(
    "job, printed, code",
    [
        ("trap 'echo interrupted; exit 7' INT; echo ready; while :; do sleep 0.1; done", "interrupted", 7),
        ("echo ready; sleep 33.5; echo never", "ready", 130),  # no handler: SIGINT ends it (128 + 2)
    ],
    ids=["trapped", "default"],
)
def test_send_keys_ctrl_c_interrupts_the_job(box: Toolbox, job: str, printed: str, code: int) -> None:
    """C-c must reach the job as SIGINT, as a terminal's would; the job's exit status is kept."""
    started = call(box, "exec", command=job, yieldMs=300)
    name = session_of(started)
    sent = call(box, "process", action="send-keys", sessionId=name, keys=["C-c"])
    assert sent.content == f"Session {name}: sent SIGINT."
    done = call(box, "process", action="poll", sessionId=name, timeout=5_000)
    call(box, "process", action="remove", sessionId=name)
    assert done.content.endswith(f"\n\nProcess exited with code {code}."), done.content
    assert printed in started.content + done.content and "never" not in done.content


def test_eof_closes_stdin_so_cat_ends(box: Toolbox) -> None:
    name = session_of(call(box, "exec", command="cat", background=True))
    assert call(box, "process", action="write", sessionId=name, data="abc\n").content.endswith("wrote 4 bytes.")
    echoed = call(box, "process", action="poll", sessionId=name, timeout=500)
    assert echoed.content == f"abc\n\nProcess still running (session {name})."
    closed = call(box, "process", action="send-keys", sessionId=name, keys=["C-d"])
    assert closed.content == f"Session {name}: closed stdin."
    done = call(box, "process", action="poll", sessionId=name, timeout=5_000)
    assert done.content == "(no new output)\n\nProcess exited with code 0."
    counted = session_of(call(box, "exec", command="wc -c", background=True))
    wrote = call(box, "process", action="write", sessionId=counted, data="hello", eof=True)
    assert wrote.content == f"Session {counted}: wrote 5 bytes, closed stdin."
    assert call(box, "process", action="poll", sessionId=counted, timeout=5_000).content == (
        "5\n\nProcess exited with code 0."
    )
    for session in (name, counted):
        call(box, "process", action="remove", sessionId=session)


def test_process_errors(box: Toolbox) -> None:
    for action in ("poll", "log", "write", "submit", "send-keys", "kill", "clear", "remove"):
        out = call(box, "process", action=action, sessionId="no-such-session", data="x", keys=["Enter"])
        assert failed(out, "process") == "No active session found for no-such-session", (action, out.content)
    assert "sessionId" in failed(call(box, "process", action="poll"), "process")
    assert "unknown action 'restart'" in failed(call(box, "process", action="restart", sessionId="x"), "process")
    name = session_of(call(box, "exec", command="cat", background=True))
    assert "unknown key" in failed(call(box, "process", action="send-keys", sessionId=name, keys=["F99"]), "process")
    assert "hex" in failed(call(box, "process", action="send-keys", sessionId=name, hex=["zz"]), "process")
    call(box, "process", action="remove", sessionId=name)


# ---------------------------------------------------------------------------------- memory


def test_memory_search_ranks_limits_and_filters(box: Toolbox) -> None:
    sh(box, "rm -rf /workspace/MEMORY.md /workspace/memory")
    empty = json.loads(call(box, "memory_search", query="billing").content)
    assert empty == {"results": [], "provider": "bm25", "citations": "auto", "mode": "keyword"}
    call(box, "write", path="MEMORY.md", content="# Notes\n- deploys go to the staging cluster\n- lunch at noon\n")
    call(box, "write", path="memory/2024-05-01.md", content="Decided: PostgreSQL 16 for the billing service.\n")
    call(box, "write", path="memory/misc.md", content="misc\n\nThe billing address of the office changed.\n")
    out = call(box, "memory_search", query="billing service PostgreSQL")
    assert out.meta.ok
    body = json.loads(out.content)
    assert set(body) == {"results", "provider", "citations", "mode"}
    results = body["results"]
    assert [r["path"] for r in results] == ["memory/2024-05-01.md", "memory/misc.md"]  # MEMORY.md: no term
    assert results[0]["score"] == 1.0 and 0 < results[1]["score"] < 1.0
    assert (results[0]["startLine"], results[0]["endLine"]) == (1, 1) and "PostgreSQL 16" in results[0]["snippet"]
    assert (results[1]["startLine"], results[1]["endLine"]) == (1, 3)
    top = json.loads(call(box, "memory_search", query="billing service PostgreSQL", maxResults=1).content)
    assert [r["path"] for r in top["results"]] == ["memory/2024-05-01.md"]
    cut = (results[1]["score"] + 1.0) / 2
    strict = json.loads(call(box, "memory_search", query="billing service PostgreSQL", minScore=cut).content)
    assert [r["path"] for r in strict["results"]] == ["memory/2024-05-01.md"]
    staging = json.loads(call(box, "memory_search", query="staging").content)["results"]
    assert [r["path"] for r in staging] == ["MEMORY.md"]
    assert json.loads(call(box, "memory_search", query="kubernetes").content)["results"] == []


def test_memory_get_reads_a_window_of_a_note_and_nothing_else(box: Toolbox) -> None:
    call(box, "write", path="memory/week.md", content="mon\ntue\nwed\nthu\nfri\n")
    window = call(box, "memory_get", path="memory/week.md", **{"from": 2, "lines": 2})
    assert window.meta.ok and json.loads(window.content) == {"path": "memory/week.md", "text": "tue\nwed"}
    whole = json.loads(call(box, "memory_get", path="/workspace/memory/week.md").content)
    assert whole == {"path": "memory/week.md", "text": "mon\ntue\nwed\nthu\nfri"}
    call(box, "write", path="notes.md", content="not a memory note\n")
    for path in ("notes.md", "/etc/passwd", "../etc/passwd", "memory/../notes.md", "memory/week.txt"):
        error = failed(call(box, "memory_get", path=path), "memory_get")
        assert "reads only MEMORY.md or memory/*.md" in error, (path, error)
    assert "no such file" in failed(call(box, "memory_get", path="memory/nope.md"), "memory_get")


# ------------------------------------------------------------------------- bad input, web


@pytest.mark.parametrize(
    "name, raw, names",
    [
        ("exec", '{"command": 5}', "command"),
        ("exec", '{"command": "touch bad-input", "timeout": "soon"}', "timeout"),
        ("exec", '{"command": "touch bad-input", "env": ["A=1"]}', "env"),
        ("exec", '{"command": "touch bad-input", "background": "maybe"}', "background"),
        ("exec", '{"command": "touch bad-input", "timeout_s": 5}', "timeout_s"),  # the old name
        ("exec", '{"cmd": "touch bad-input"}', "command"),
        ("read", '{"path": "cfg.ini", "start": 2}', "start"),
        ("read", '{"path": "cfg.ini", "limit": "two"}', "limit"),
        ("write", '{"path": "bad-input"}', "content"),
        ("edit", '{"path": "cfg.ini", "old_string": "a", "new_string": "b"}', "old_string"),
        ("process", '{"action": "send-keys", "sessionId": "x", "keys": "C-c"}', "keys"),
        ("memory_search", '{"query": "x", "maxResults": "many"}', "maxResults"),
        ("memory_get", '{"path": "MEMORY.md", "from": "top"}', "from"),
        ("web_fetch", '{"url": "http://example.com", "extractMode": "html"}', "extractMode"),
    ],
)
def test_bad_arguments_are_tool_errors_naming_the_parameter(box: Toolbox, name: str, raw: str, names: str) -> None:
    error = failed(box.run("bad", name, raw), name)
    assert error.startswith(f"invalid arguments for {name}: ") and f"{names}: " in error, error
    assert absent(box, "bad-input")


def test_unknown_tools_and_malformed_json_are_tool_errors(box: Toolbox) -> None:
    for name in ("shell", "ls", "search"):  # ls and search are extras, not in the default toolset
        error = failed(box.run("u", name, "{}"), name)
        assert error.startswith(f"unknown tool {name!r}; available tools: exec, process, read, write, edit"), error
    broken = failed(box.run("j", "exec", '{"command": "touch bad-json"'), "exec")
    assert broken.startswith("arguments are not valid JSON")
    assert failed(box.run("j", "exec", '["touch bad-json"]'), "exec") == "arguments must be a JSON object"
    assert absent(box, "bad-json")


def test_web_tools_without_a_proxy_say_web_access_is_off(box: Toolbox) -> None:
    for name, arguments in (("web_search", {"query": "weather"}), ("web_fetch", {"url": "https://example.com/"})):
        error = failed(call(box, name, **arguments), name)
        assert error.startswith("web access is off"), error
