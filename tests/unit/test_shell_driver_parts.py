"""The shell driver's pure parts on the host: file operations and the command history.

The driver runs inside workspaces, but ``files.py`` and ``history.py`` are plain standard-library
code, so their edge cases are checked here on a temporary folder; the container path is in
``tests/integration/test_shell_files.py``.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from services.executor.workspace.shell_driver import files, history


def test_write_creates_parents_and_reads_back_binary(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 3
    target = tmp_path / "a" / "b" / "blob.bin"
    assert files.write(str(target), payload) == {"written": len(payload)}
    reply = files.read(str(target), 10)
    assert base64.b64decode(reply["data"]) == payload[:10] and reply["truncated"] is True
    whole = files.read(str(target), len(payload))
    assert base64.b64decode(whole["data"]) == payload and whole["truncated"] is False
    assert [p.name for p in target.parent.iterdir()] == ["blob.bin"]  # no temporary file left


def test_replacing_keeps_mode_and_writes_through_a_symlink(tmp_path: Path) -> None:
    script = tmp_path / "run.sh"
    script.write_text("v1\n")
    script.chmod(0o750)
    link = tmp_path / "link.sh"
    link.symlink_to(script)
    files.write(str(link), b"v2\n")
    assert link.is_symlink() and script.read_text() == "v2\n"
    assert stat.S_IMODE(script.stat().st_mode) == 0o750


def test_errors_name_the_reason(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("x")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    cases = [
        (lambda: files.read(str(tmp_path / "missing"), 5), "no such file", True),
        (lambda: files.read(str(tmp_path / "dir"), 5), "is a directory", False),
        (lambda: files.read(str(fifo), 5), "not a regular file", False),  # would block forever
        (lambda: files.read(str(tmp_path / "file" / "x"), 5), "a parent is not a directory", False),
        (lambda: files.write(str(tmp_path / "dir"), b"x"), "is a directory", False),
        (lambda: files.write(str(fifo), b"x"), "not a regular file", False),
        (lambda: files.write(str(tmp_path / "file" / "x"), b"x"), "a parent is not a directory", False),
    ]
    for call, reason, missing in cases:
        with pytest.raises(files.FileOpFailed) as info:
            call()
        assert (info.value.reason, info.value.missing) == (reason, missing)
    assert (tmp_path / "file").read_text() == "x"


def test_history_appends_and_trims_to_the_latest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history, "KEEP", 3)
    path = tmp_path / "h.jsonl"
    log = history.History(str(path))
    for n in range(7):
        log.record(f"cmd {n}" + "x" * 300, n, 10 * n, n == 6)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["exit_code"] for r in rows] == [3, 4, 5, 6]  # cut to the last 3 at 2 x 3 lines, then one more
    assert len(rows[0]["cmd"]) == history.CMD_CHARS and rows[-1]["timed_out"] is True
    assert history.History(str(path)).count == 4  # a restarted driver counts the existing lines
