"""The ``edit``, ``ls`` and ``search`` tools through the Toolbox, against real Docker workspaces.

Each test module run creates workspaces under its own container-name prefix, for both the
persistent shell and the one-``docker exec``-per-command mode, and removes them at the end.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from services.executor.tools import Toolbox, ToolOutcome, tool_schemas
from services.executor.tools_files import EditArgs, LsArgs, SearchArgs
from services.executor.workspace.base import WorkspaceLimits
from services.executor.workspace.docker_backend import DockerWorkspaceBackend
from tests.integration.test_docker_workspace import workspace_image

pytestmark = pytest.mark.integration

SOURCE = "def load(path):\n    return open(path).read()\n\n\ndef save(path, text):\n    open(path, 'w').write(text)\n"


@pytest.fixture(scope="module", params=["persistent", "exec"])
def toolbox(request: pytest.FixtureRequest) -> Iterator[Toolbox]:
    limits = WorkspaceLimits(memory_mb=256, pids=128, cpus=1.0, output_cap_bytes=64 * 1024)
    backend = DockerWorkspaceBackend(
        workspace_image(), limits, name_prefix=f"ise-tf-{uuid.uuid4().hex[:8]}", shell=request.param
    )
    backend.create("files", "run-files")
    try:
        yield Toolbox(backend, "files")
    finally:
        for info in backend.list_workspaces():
            backend.close(info.episode_id)
        assert backend.list_workspaces() == []


def call(box: Toolbox, name: str, **arguments: Any) -> ToolOutcome:
    return box.run(f"call-{uuid.uuid4().hex[:6]}", name, json.dumps(arguments))


def sh(box: Toolbox, command: str) -> str:
    result = box.backend.exec(box.episode_id, command, workdir="/workspace", timeout_s=30)
    assert result.exit_code == 0, result.stderr
    return result.stdout


def put(box: Toolbox, path: str, text: str) -> None:
    box.backend.write_file(box.episode_id, path, text.encode())


def content(box: Toolbox, path: str) -> str:
    data, _ = box.backend.read_file(box.episode_id, path, max_bytes=1 << 20)
    return data.decode()


def test_schemas_cover_every_tool_and_forbid_extras() -> None:
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in tool_schemas()}
    assert set(schemas) == {"exec", "read", "write", "edit", "ls", "search"}
    assert all(p["additionalProperties"] is False for p in schemas.values())
    assert schemas["edit"]["required"] == ["path", "old_string", "new_string"]
    assert schemas["search"]["required"] == ["pattern"]
    assert "required" not in schemas["ls"]
    for name, model in (("edit", EditArgs), ("ls", LsArgs), ("search", SearchArgs)):
        assert set(schemas[name]["properties"]) == set(model.model_fields)
        required = {field for field, info in model.model_fields.items() if info.is_required()}
        assert set(schemas[name].get("required", [])) == required


def test_edit_replaces_exactly_once_and_returns_a_diff(toolbox: Toolbox) -> None:
    put(toolbox, "pkg/io.py", SOURCE)
    sh(toolbox, "chmod 755 pkg/io.py")
    out = call(
        toolbox,
        "edit",
        path="pkg/io.py",
        old_string="return open(path).read()",
        new_string="with open(path) as f:\n        return f.read()",
    )
    assert out.meta.ok and out.meta.error is None and out.meta.name == "edit"
    assert out.wrote == "pkg/io.py"
    assert "--- a/pkg/io.py" in out.content and "+++ b/pkg/io.py" in out.content
    assert "-    return open(path).read()" in out.content
    assert "+    with open(path) as f:" in out.content and "+        return f.read()" in out.content
    assert content(toolbox, "pkg/io.py") == SOURCE.replace(
        "return open(path).read()", "with open(path) as f:\n        return f.read()"
    )
    assert sh(toolbox, "stat -c %a pkg/io.py").strip() == "755"  # the mode survives the edit


def test_edit_diff_marks_a_last_line_without_newline(toolbox: Toolbox) -> None:
    put(toolbox, "nonl.txt", "one\ntwo")
    out = call(toolbox, "edit", path="nonl.txt", old_string="two", new_string="three")
    assert out.meta.ok
    assert "-two\n\\ No newline at end of file\n+three\n\\ No newline at end of file" in out.content
    assert content(toolbox, "nonl.txt") == "one\nthree"


def test_edit_refuses_zero_or_ambiguous_matches_and_leaves_the_file(toolbox: Toolbox) -> None:
    put(toolbox, "amb.py", SOURCE)
    missing = call(toolbox, "edit", path="amb.py", old_string="def nope(", new_string="x")
    assert not missing.meta.ok and "occurs 0 times" in (missing.meta.error or "")
    assert missing.content.startswith("error: ") and missing.wrote is None

    twice = call(toolbox, "edit", path="amb.py", old_string="open(path", new_string="open(p")
    assert not twice.meta.ok and "occurs 2 times" in twice.content and "add surrounding lines" in twice.content
    assert content(toolbox, "amb.py") == SOURCE

    both = call(
        toolbox, "edit", path="amb.py", old_string="open(path", new_string="open(str(path)", expected_replacements=2
    )
    assert both.meta.ok and "2 replacements" in both.content and both.wrote == "amb.py"
    assert content(toolbox, "amb.py") == SOURCE.replace("open(path", "open(str(path)")

    wrong_count = call(toolbox, "edit", path="amb.py", old_string="def ", new_string="def  ", expected_replacements=3)
    assert not wrong_count.meta.ok and "occurs 2 times" in wrong_count.content and "expected 3" in wrong_count.content


def test_edit_errors_for_missing_binary_and_bad_arguments(toolbox: Toolbox) -> None:
    gone = call(toolbox, "edit", path="no/such.py", old_string="a", new_string="b")
    assert not gone.meta.ok and "no such file" in gone.content
    toolbox.backend.write_file(toolbox.episode_id, "blob.bin", b"\xff\xfe\x00abc")
    binary = call(toolbox, "edit", path="blob.bin", old_string="abc", new_string="x")
    assert not binary.meta.ok and "binary" in binary.content
    toolbox.backend.write_file(toolbox.episode_id, "latin.txt", "caf\xe9 ok".encode("latin-1"))
    latin = call(toolbox, "edit", path="latin.txt", old_string="ok", new_string="x")
    assert not latin.meta.ok and "not valid UTF-8" in latin.content
    empty = call(toolbox, "edit", path="amb.py", old_string="", new_string="x")
    assert not empty.meta.ok and "old_string" in empty.content
    same = call(toolbox, "edit", path="latin.txt", old_string="a", new_string="a")
    assert not same.meta.ok and "identical" in same.content


def test_ls_lists_types_and_sizes_sorted_with_depth(toolbox: Toolbox) -> None:
    sh(
        toolbox,
        "mkdir -p tree/sub/deeper/deepest && printf 12345 > tree/b.txt && printf x > tree/sub/a.txt"
        " && printf yy > tree/sub/deeper/c.txt && touch tree/sub/deeper/deepest/d && ln -s b.txt tree/link",
    )
    flat = call(toolbox, "ls", path="tree")
    assert flat.meta.ok, flat.content
    rows = flat.content.splitlines()
    assert rows[0].startswith("tree: 3 entries, depth 1")
    assert rows[1].split() == ["file", "5", "b.txt"]
    assert rows[2].split() == ["link", "-", "link", "->", "b.txt"]
    assert rows[3].split() == ["dir", "-", "sub/"]

    deep = call(toolbox, "ls", path="tree", depth=2)
    names = [row.split()[-1] for row in deep.content.splitlines()[1:] if not row.startswith("link")]
    assert names == ["b.txt", "sub/", "sub/a.txt", "sub/deeper/"]
    three = call(toolbox, "ls", path="tree", depth=3)
    assert "sub/deeper/c.txt" in three.content and "deepest/d" not in three.content
    assert "file          2  sub/deeper/c.txt" in three.content

    single = call(toolbox, "ls", path="tree/b.txt")
    assert single.meta.ok and single.content.splitlines()[1].split() == ["file", "5", "b.txt"]
    root = call(toolbox, "ls")
    assert root.meta.ok and root.content.startswith(".:") and "tree/" in root.content


def test_ls_errors(toolbox: Toolbox) -> None:
    missing = call(toolbox, "ls", path="nowhere")
    assert not missing.meta.ok and "no such file or directory" in missing.content
    too_deep = call(toolbox, "ls", path=".", depth=4)
    assert not too_deep.meta.ok and "depth" in too_deep.content
    sh(toolbox, "mkdir -p empty_dir")
    assert call(toolbox, "ls", path="empty_dir").content == "empty_dir: empty directory"


def test_ls_caps_the_listing(toolbox: Toolbox) -> None:
    sh(toolbox, "mkdir -p many && cd many && for i in $(seq 1 520); do : > f$i; done")
    out = call(toolbox, "ls", path="many")
    assert out.meta.ok and out.meta.truncated
    assert "listing cut at 500 entries" in out.content


def test_search_finds_matches_with_line_numbers_glob_and_case(toolbox: Toolbox) -> None:
    put(toolbox, "src/app.py", "import os\n\ndef Main():\n    return os.getcwd()\n")
    put(toolbox, "src/notes.md", "the main idea\nnothing else\n")
    put(toolbox, "src/deep/util.py", "def main_helper(): pass\n")
    out = call(toolbox, "search", pattern="def (Main|main_)", path="src")
    assert out.meta.ok, out.content
    assert out.content.splitlines() == ["src/app.py:3: def Main():", "src/deep/util.py:1: def main_helper(): pass"]

    py = call(toolbox, "search", pattern="main", path="src", glob="*.py")
    assert py.content.splitlines() == ["src/deep/util.py:1: def main_helper(): pass"]
    anycase = call(toolbox, "search", pattern="main", path="src", ignore_case=True)
    assert [line.split(":")[0] for line in anycase.content.splitlines()] == [
        "src/app.py",
        "src/deep/util.py",
        "src/notes.md",
    ]
    literal = call(toolbox, "search", pattern="os.getcwd()", literal=True, path="src")
    assert literal.content == "src/app.py:4:     return os.getcwd()"
    file_only = call(toolbox, "search", pattern="idea", path="src/notes.md")
    assert file_only.content == "src/notes.md:1: the main idea"


def test_search_no_match_bad_regex_and_caps(toolbox: Toolbox) -> None:
    put(toolbox, "s2/a.txt", "alpha\n" * 30)
    none = call(toolbox, "search", pattern="zzz_not_there", path="s2")
    assert none.meta.ok and none.meta.error is None and none.content.startswith("no matches")
    bad = call(toolbox, "search", pattern="foo(", path="s2")
    assert not bad.meta.ok and "invalid regular expression" in bad.content
    capped = call(toolbox, "search", pattern="alpha", path="s2", max_results=10)
    assert capped.meta.ok and capped.meta.truncated
    lines = capped.content.splitlines()
    assert lines[:10] == [f"s2/a.txt:{n}: alpha" for n in range(1, 11)] and "results cut at 10" in lines[10]
    put(toolbox, "s2/min.js", "var a=1;" * 1000 + "\n")
    long = call(toolbox, "search", pattern="var a", path="s2/min.js")
    assert long.content.startswith("s2/min.js:1: var a=1;") and long.content.endswith(" [...]")
    assert len(long.content) < 400
    missing = call(toolbox, "search", pattern="x", path="nowhere")
    assert not missing.meta.ok and "no such file or directory" in missing.content
    slash = call(toolbox, "search", pattern="x", glob="src/*.py")
    assert not slash.meta.ok and "file names only" in slash.content
    dash = call(toolbox, "search", pattern="-rf", path="s2")
    assert dash.meta.ok and dash.content.startswith("no matches")


def test_unknown_or_wrong_arguments_are_tool_errors(toolbox: Toolbox) -> None:
    for name, arguments in [
        ("edit", {"path": "a", "old_string": "x", "new_string": "y", "force": True}),
        ("ls", {"path": ".", "recursive": True}),
        ("search", {"pattern": "x", "regex": True}),
        ("search", {"pattern": "x", "max_results": 0}),
        ("search", {}),
    ]:
        out = call(toolbox, name, **arguments)
        assert not out.meta.ok and out.content.startswith(f"error: invalid arguments for {name}"), out.content


def test_the_agents_shell_state_cannot_break_the_tools(toolbox: Toolbox) -> None:
    put(toolbox, "state/x.txt", "needle\n")
    sh(
        toolbox,
        "cd /tmp; alias grep='echo hijacked'; grep() { echo hijacked; }; export -f grep; "
        "find() { echo hijacked; }; export GREP_COLORS='mt=01;31' PATH=/nonexistent:$PATH",
    )
    out = call(toolbox, "search", pattern="needle", path="state")
    assert out.content == "state/x.txt:1: needle"
    assert call(toolbox, "ls", path="state").content.splitlines()[1].split() == ["file", "7", "x.txt"]
    sh(toolbox, "unalias grep 2>/dev/null; unset -f grep find; cd /workspace")
