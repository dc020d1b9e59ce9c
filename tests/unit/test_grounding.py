"""The workspace digest the user model sees: paths and sizes only, and how the listing is parsed."""

from __future__ import annotations

import pytest

from services.common.contracts.messages import OutcomeDigest
from services.common.rpc.ise.v1 import workspaces_pb2 as pb
from services.executor.workspace.inspect import InspectError, inspect_script, parse_listing
from services.executor.workspace.shell_driver.history import PATH as HISTORY_PATH
from services.simulator.grounding import digest_text, human_size
from services.simulator.user_model import agent_view


def _response(
    files: list[tuple[str, int]],
    *,
    truncated: bool = False,
    since_start: bool = True,
    codes: tuple[tuple[int, bool], ...] = (),
) -> pb.InspectResponse:
    return pb.InspectResponse(
        files=[pb.ChangedFile(path=p, size=s, changed_unix_ms=1) for p, s in files],
        truncated=truncated,
        since_start=since_start,
        commands=[pb.CommandOutcome(command="x", exit_code=c, timed_out=t) for c, t in codes],
    )


def test_human_size() -> None:
    assert [human_size(n) for n in (0, 47, 1023, 1536, 3 * 1024 * 1024)] == [
        "0 B",
        "47 B",
        "1023 B",
        "1.5 KiB",
        "3.0 MiB",
    ]


def test_digest_lists_paths_sizes_and_exit_codes_only() -> None:
    view = digest_text(_response([("notes/plan.md", 47), ("out/report.csv", 2048)]))
    assert view.files == "files created or changed since the start: notes/plan.md (47 B), out/report.csv (2.0 KiB)"
    assert view.exit_codes is None  # no command history: the turn's own codes are used
    assert digest_text(_response([])).files == "files created or changed since the start: none"
    assert digest_text(_response([("a", 1)], truncated=True)).files.endswith("a (1 B), and more")
    assert digest_text(_response([("a", 1)], since_start=False)).files == "files in the workspace: a (1 B)"
    coded = digest_text(_response([], codes=((0, False), (124, True), (2, False))))
    assert coded.exit_codes == "0, 124 (timed out), 2" and "x" not in coded.files  # never the commands


def test_agent_view_prefers_the_real_workspace_over_the_turn_digest() -> None:
    digest = OutcomeDigest(files_written=["claimed.txt"], exit_codes=[0, 3], tool_errors=1, tool_calls=3)
    real = digest_text(_response([("notes/plan.md", 47)]))
    view = agent_view("Done.", digest, None, real)
    assert view == (
        "Done.\n\n[workspace] files created or changed since the start: notes/plan.md (47 B); "
        "command exit codes: 0, 3; tool errors: 1"
    )
    history = digest_text(_response([("notes/plan.md", 47)], codes=((1, False), (0, False))))
    assert agent_view("Done.", digest, None, history).endswith("; latest command exit codes: 1, 0; tool errors: 1")
    assert "claimed.txt" in agent_view("Done.", digest)  # no inspector: the turn's own digest


def test_parse_listing_newest_first_with_cap_and_cut_output() -> None:
    out = "marker 1700000000.250\nhistory 0\n1700000001.5\t5\tnotes/plan.md\x001700000001.25\t8\tout/a\tb.csv\x00"
    state = parse_listing(out, max_files=10, cut=False)
    assert state.since_start and state.started_unix_ms == 1700000000250 and not state.truncated
    assert [(f.path, f.size, f.changed_unix_ms) for f in state.files] == [
        ("notes/plan.md", 5, 1700000001500),
        ("out/a\tb.csv", 8, 1700000001250),
    ]
    capped = parse_listing(out, max_files=1, cut=False)
    assert [f.path for f in capped.files] == ["notes/plan.md"] and capped.truncated
    cut = parse_listing(out + "1700000001.0\t9\tpartial/pa", max_files=10, cut=True)
    assert len(cut.files) == 2 and cut.truncated  # the record the output cap cut is dropped
    bare = parse_listing("nomarker 0\nhistory 0\n", max_files=10, cut=False)
    assert not bare.since_start and bare.files == [] and bare.started_unix_ms == 0 and bare.commands == []
    with pytest.raises(InspectError):
        parse_listing("marker 1.0\n1700000001.5\t5\tx\0", max_files=10, cut=False)  # no history line


def test_parse_listing_reads_the_command_history_after_the_marker() -> None:
    before = '{"t":1699999999000,"cmd":"old","exit_code":0,"duration_ms":1,"timed_out":false}'
    ran = '{"t":1700000002000,"cmd":"make test","exit_code":2,"duration_ms":812,"timed_out":false}'
    slow = '{"t":1700000003000,"cmd":"sleep 99","exit_code":124,"duration_ms":5003,"timed_out":true}'
    out = f"marker 1700000000.0\nhistory 4\n{before}\n{ran}\nnot json\n{slow}\n1700000001.5\t5\tnotes/plan.md\x00"
    state = parse_listing(out, max_files=10, cut=False)
    assert [(c.command, c.exit_code, c.timed_out) for c in state.commands] == [
        ("make test", 2, False),
        ("sleep 99", 124, True),
    ]
    assert state.commands[0].duration_ms == 812 and state.commands[1].finished_unix_ms == 1700000003000
    assert [f.path for f in state.files] == ["notes/plan.md"]


def test_inspect_script_asks_for_one_more_than_the_cap() -> None:
    script = inspect_script(7, 3)
    assert "head -z -n 8" in script and "-cnewer" in script and "-prune" in script
    assert f"tail -n 3 {HISTORY_PATH}" in script
