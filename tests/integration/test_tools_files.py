"""The ``edit``, ``ls`` and ``search`` tools through the Toolbox, against real Docker workspaces.

``ls`` and ``search`` are extras, offered only with ``tools="reference+extras"``; a tool error's
content is the reference's ``{"status": "error", "tool", "error"}`` object.

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
        yield Toolbox(backend, "files", tools="reference+extras")
    finally:
        for info in backend.list_workspaces():
            backend.close(info.episode_id)
        assert backend.list_workspaces() == []


def call(box: Toolbox, name: str, **arguments: Any) -> ToolOutcome:
    return box.run(f"call-{uuid.uuid4().hex[:6]}", name, json.dumps(arguments))


def failed(out: ToolOutcome, tool: str) -> str:
    """The error message of a failed call, checking the reference's error shape on the way."""
    assert not out.meta.ok and out.wrote is None, out.content
    body = json.loads(out.content)
    assert body == {"status": "error", "tool": tool, "error": out.meta.error}, out.content
    return body["error"]


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
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in tool_schemas("reference+extras")}
    assert all(t in tool_schemas("reference+extras") for t in tool_schemas())
    assert set(schemas) == {"exec", "process", "read", "write", "edit", "web_search", "web_fetch"} | {
        "memory_search",
        "memory_get",
        "ls",
        "search",
    }
    assert {t["function"]["name"] for t in tool_schemas()} == set(schemas) - {"ls", "search"}
    assert all(schemas[name]["additionalProperties"] is False for name in ("ls", "search"))
    assert schemas["edit"]["required"] == ["path", "oldText", "newText"]
    assert schemas["search"]["required"] == ["pattern"]
    assert "required" not in schemas["ls"]
    for name, model in (("edit", EditArgs), ("ls", LsArgs), ("search", SearchArgs)):
        assert model.model_config.get("extra") == "forbid"  # unknown parameters are refused
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
        oldText="return open(path).read()",
        newText="with open(path) as f:\n        return f.read()",
    )
    assert out.meta.ok and out.meta.error is None and out.meta.name == "edit"
    assert out.content == "Successfully replaced text in pkg/io.py."
    assert out.wrote == "pkg/io.py"
    diff = out.meta.diff or ""
    assert "--- a/pkg/io.py" in diff and "+++ b/pkg/io.py" in diff
    assert "-    return open(path).read()" in diff
    assert "+    with open(path) as f:" in diff and "+        return f.read()" in diff
    assert content(toolbox, "pkg/io.py") == SOURCE.replace(
        "return open(path).read()", "with open(path) as f:\n        return f.read()"
    )
    assert sh(toolbox, "stat -c %a pkg/io.py").strip() == "755"  # the mode survives the edit


def test_edit_diff_marks_a_last_line_without_newline(toolbox: Toolbox) -> None:
    put(toolbox, "nonl.txt", "one\ntwo")
    out = call(toolbox, "edit", path="nonl.txt", oldText="two", newText="three")
    assert out.meta.ok
    assert "-two\n\\ No newline at end of file\n+three\n\\ No newline at end of file" in (out.meta.diff or "")
    assert content(toolbox, "nonl.txt") == "one\nthree"


def test_edit_refuses_zero_or_ambiguous_matches_and_leaves_the_file(toolbox: Toolbox) -> None:
    put(toolbox, "amb.py", SOURCE)
    missing = call(toolbox, "edit", path="amb.py", oldText="def nope(", newText="x")
    assert "occurs 0 times" in failed(missing, "edit") and missing.meta.diff is None

    twice = call(toolbox, "edit", path="amb.py", oldText="open(path", newText="open(p")
    error = failed(twice, "edit")
    assert "occurs 2 times" in error and "expected exactly 1" in error and "add surrounding lines" in error
    assert content(toolbox, "amb.py") == SOURCE

    # no way around "exactly once" any more: the old expected_replacements is an unknown parameter
    many = call(toolbox, "edit", path="amb.py", oldText="open(path", newText="open(p", expected_replacements=2)
    assert "expected_replacements" in failed(many, "edit")
    assert content(toolbox, "amb.py") == SOURCE

    # with surrounding text the same place is unique, and only it changes
    unique = call(toolbox, "edit", path="amb.py", oldText="open(path, 'w')", newText="open(str(path), 'w')")
    assert unique.meta.ok and unique.wrote == "amb.py", unique.content
    assert content(toolbox, "amb.py") == SOURCE.replace("open(path, 'w')", "open(str(path), 'w')")


def test_edit_errors_for_missing_binary_and_bad_arguments(toolbox: Toolbox) -> None:
    gone = call(toolbox, "edit", path="no/such.py", oldText="a", newText="b")
    assert "no such file" in failed(gone, "edit")
    toolbox.backend.write_file(toolbox.episode_id, "blob.bin", b"\xff\xfe\x00abc")
    binary = call(toolbox, "edit", path="blob.bin", oldText="abc", newText="x")
    assert "binary" in failed(binary, "edit")
    toolbox.backend.write_file(toolbox.episode_id, "latin.txt", "caf\xe9 ok".encode("latin-1"))
    latin = call(toolbox, "edit", path="latin.txt", oldText="ok", newText="x")
    assert "not valid UTF-8" in failed(latin, "edit")
    empty = call(toolbox, "edit", path="amb.py", oldText="", newText="x")
    assert "oldText" in failed(empty, "edit")
    same = call(toolbox, "edit", path="latin.txt", oldText="a", newText="a")
    assert "identical" in failed(same, "edit")


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
    assert "no such file or directory" in failed(missing, "ls")
    too_deep = call(toolbox, "ls", path=".", depth=4)
    assert "depth" in failed(too_deep, "ls")
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
    assert "invalid regular expression" in failed(bad, "search")
    capped = call(toolbox, "search", pattern="alpha", path="s2", max_results=10)
    assert capped.meta.ok and capped.meta.truncated
    lines = capped.content.splitlines()
    assert lines[:10] == [f"s2/a.txt:{n}: alpha" for n in range(1, 11)] and "results cut at 10" in lines[10]
    put(toolbox, "s2/min.js", "var a=1;" * 1000 + "\n")
    long = call(toolbox, "search", pattern="var a", path="s2/min.js")
    assert long.content.startswith("s2/min.js:1: var a=1;") and long.content.endswith(" [...]")
    assert len(long.content) < 400
    missing = call(toolbox, "search", pattern="x", path="nowhere")
    assert "no such file or directory" in failed(missing, "search")
    slash = call(toolbox, "search", pattern="x", glob="src/*.py")
    assert "file names only" in failed(slash, "search")
    dash = call(toolbox, "search", pattern="-rf", path="s2")
    assert dash.meta.ok and dash.content.startswith("no matches")


def test_unknown_or_wrong_arguments_are_tool_errors(toolbox: Toolbox) -> None:
    for name, arguments in [
        ("edit", {"path": "a", "oldText": "x", "newText": "y", "force": True}),
        ("edit", {"path": "a", "old_string": "x", "new_string": "y"}),  # the old names are unknown now
        ("ls", {"path": ".", "recursive": True}),
        ("search", {"pattern": "x", "regex": True}),
        ("search", {"pattern": "x", "max_results": 0}),
        ("search", {}),
    ]:
        out = call(toolbox, name, **arguments)
        assert failed(out, name).startswith(f"invalid arguments for {name}"), out.content


def test_ls_and_search_are_extras(toolbox: Toolbox) -> None:
    plain = Toolbox(toolbox.backend, toolbox.episode_id)  # the default: the reference toolset only
    for name, arguments in (("ls", {}), ("search", {"pattern": "x"})):
        error = failed(call(plain, name, **arguments), name)
        assert error.startswith(f"unknown tool {name!r}") and "exec" in error, error


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
