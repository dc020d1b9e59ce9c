"""The agent's file tools: ``read``, ``write``, ``edit`` (reference set) and ``ls``, ``search`` (extras).

* ``read`` returns a window of lines (``offset`` 1-based, ``limit``); ``write`` creates or
  overwrites a file and answers ``Successfully wrote N bytes to PATH`` as the reference does.
* ``edit`` replaces an exact piece of text in a UTF-8 file. ``oldText`` must occur exactly once,
  otherwise nothing changes and the error says how often it occurs; the answer is the
  reference's ``Successfully replaced text in PATH.`` (the diff goes to the call's metadata).
* ``ls`` lists a directory (or one file) with ``find``: type, size in bytes, path; sorted, capped.
* ``search`` runs ``grep -rEn`` (``-F`` with ``literal``) over the workspace: ``path:line: text``
  lines, capped. No match is a normal result; a bad regular expression is a tool error.

``ls`` and ``search`` run through ``backend.exec`` inside ``env -i ... bash --noprofile --norc``,
so the agent's persistent shell state (``cd``, exported variables and functions, aliases,
``set -e``) can neither change nor break them, and they leave that state untouched. Every
argument is shell-quoted; relative paths start at ``/workspace``. Invalid arguments raise
``ToolArgumentError`` and file problems ``FileOpError``: the Toolbox turns both into tool errors.
"""

from __future__ import annotations

import difflib
import posixpath
import shlex
from dataclasses import dataclass

from pydantic import Field

from services.executor.errors import FileOpError, ToolArgumentError
from services.executor.tool_common import Args
from services.executor.workspace.base import ExecResult, WorkspaceBackend

WORKSPACE_DIR = "/workspace"
LS_MAX_ENTRIES = 500
SEARCH_LINE_CHARS = 300  # each matching line is cut to this many characters
_LINE_BYTES = 1000  # in-container cut per output line, before the exec output cap
_EXIT_MISSING = 20
_EXIT_BAD_PATTERN = 21
_ISOLATED = (
    "command -p env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "
    "LC_ALL=C.UTF-8 HOME=/root bash --noprofile --norc -c "
)
_KINDS = {"f": "file", "d": "dir", "l": "link"}


class ReadArgs(Args):
    path: str = Field(min_length=1)
    offset: int = Field(1, ge=1, description="1-based first line")
    limit: int | None = Field(None, ge=1)


class WriteArgs(Args):
    path: str = Field(min_length=1)
    content: str


class EditArgs(Args):
    path: str = Field(min_length=1)
    oldText: str = Field(min_length=1)
    newText: str


class LsArgs(Args):
    path: str = Field(".", min_length=1)
    depth: int = Field(1, ge=1, le=3)


class SearchArgs(Args):
    pattern: str = Field(min_length=1)
    path: str = Field(".", min_length=1)
    glob: str | None = Field(None, min_length=1)
    ignore_case: bool = False
    literal: bool = False
    max_results: int = Field(100, ge=1, le=500)


@dataclass
class FileToolResult:
    """What one file tool produced; ``error`` set means a tool error (the call did not succeed)."""

    content: str
    truncated: bool = False
    timed_out: bool = False
    wrote: str | None = None
    error: str | None = None
    diff: str | None = None


def resolve(path: str) -> str:
    """An absolute, normalised container path; relative paths start at /workspace."""
    if "\x00" in path:
        raise ToolArgumentError(f"invalid path {path!r}")
    return "/" + posixpath.normpath(posixpath.join(WORKSPACE_DIR, path)).lstrip("/")


def _shown(target: str) -> str:
    """How a resolved path is shown to the agent: relative to /workspace when inside it."""
    if target == WORKSPACE_DIR:
        return "."
    if target.startswith(WORKSPACE_DIR + "/"):
        return target[len(WORKSPACE_DIR) + 1 :]
    return target


class FileTools:
    """``edit``, ``ls`` and ``search`` for one episode's workspace (blocking calls)."""

    def __init__(
        self, backend: WorkspaceBackend, episode_id: str, *, timeout_s: float, max_edit_bytes: int, max_chars: int
    ) -> None:
        self.backend = backend
        self.episode_id = episode_id
        self.timeout_s = timeout_s
        self.max_edit_bytes = max_edit_bytes
        self.max_chars = max_chars

    # -- read / write -----------------------------------------------------------------------
    def read(self, args: ReadArgs, max_bytes: int) -> FileToolResult:
        data, cut = self.backend.read_file(self.episode_id, resolve(args.path), max_bytes=max_bytes)
        lines = data.decode(errors="replace").splitlines(keepends=True)
        first = args.offset - 1
        if lines and first >= len(lines):
            raise ToolArgumentError(f"offset {args.offset} is past the end of {args.path} ({len(lines)} lines)")
        end = None if args.limit is None else first + args.limit
        text, clipped = clip("".join(lines[first:end]), self.max_chars)
        if cut:
            text += f"\n[file larger than {max_bytes} bytes: read the rest with offset/limit or exec]"
        return FileToolResult(text, cut or clipped)

    def write(self, args: WriteArgs) -> FileToolResult:
        written = self.backend.write_file(self.episode_id, resolve(args.path), args.content.encode())
        return FileToolResult(f"Successfully wrote {written} bytes to {args.path}", wrote=args.path)

    # -- edit -------------------------------------------------------------------------------
    def edit(self, args: EditArgs) -> FileToolResult:
        if args.oldText == args.newText:
            raise ToolArgumentError("oldText and newText are identical; nothing to change")
        target = resolve(args.path)
        data, cut = self.backend.read_file(self.episode_id, target, max_bytes=self.max_edit_bytes)
        if cut:
            raise FileOpError(target, f"file is larger than {self.max_edit_bytes} bytes; edit it with exec instead")
        if b"\x00" in data:
            raise FileOpError(target, "looks like a binary file (contains NUL bytes); edit only works on text")
        try:
            before = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FileOpError(target, f"is not valid UTF-8 text (byte {exc.start}); edit only works on text") from exc
        found = before.count(args.oldText)
        if found != 1:
            hint = (
                "it must match the current text exactly, whitespace and indentation included; read the file"
                if found == 0
                else "add surrounding lines to oldText so that it is unique"
            )
            raise ToolArgumentError(
                f"oldText occurs {found} time{'s' * (found != 1)} in {args.path}, expected exactly 1; "
                f"nothing was changed; {hint}"
            )
        after = before.replace(args.oldText, args.newText)
        self.backend.write_file(self.episode_id, target, after.encode("utf-8"))
        diff, _ = clip(unified_diff(before, after, _shown(target)), self.max_chars)
        return FileToolResult(f"Successfully replaced text in {args.path}.", wrote=args.path, diff=diff)

    # -- ls ---------------------------------------------------------------------------------
    def ls(self, args: LsArgs) -> FileToolResult:
        target = resolve(args.path)
        q = shlex.quote(target)
        fmt = shlex.quote(r"%P\t%y\t%s\t%l\0")
        script = (
            f"if [ ! -e {q} ] && [ ! -L {q} ]; then echo 'no such file or directory' >&2; exit {_EXIT_MISSING}; fi\n"
            f"if [ -d {q} ]; then set -- -mindepth 1 -maxdepth {args.depth}; else set -- -maxdepth 0; fi\n"
            f'find -H {q} "$@" -printf {fmt} | sort -z | head -z -n {LS_MAX_ENTRIES + 1}\n'
            "exit ${PIPESTATUS[0]}"
        )
        result = self._run(script)
        if result.exit_code == _EXIT_MISSING:
            raise FileOpError(target, "no such file or directory", missing=True)
        if result.timed_out:
            return _timed_out("ls", self.timeout_s)
        records = [r for r in result.stdout.split("\0") if r]
        if result.truncated and records:
            records.pop()  # the exec output cap may have cut the last record
        truncated = result.truncated or len(records) > LS_MAX_ENTRIES
        rows = [_ls_row(r, target) for r in records[:LS_MAX_ENTRIES]]
        where = _shown(target)
        if not rows and result.exit_code == 0:
            return FileToolResult(f"{where}: empty directory")
        head = f"{where}: {len(rows)} entr{'y' if len(rows) == 1 else 'ies'}, depth {args.depth}"
        lines = [head + (" (sorted by path)" if len(rows) > 1 else ""), *rows]
        if truncated:
            lines.append(f"[listing cut at {len(rows)} entries; list a subfolder or use a smaller depth]")
        if result.exit_code != 0:
            lines.append(f"[find reported problems: {result.stderr.strip()[-500:]}]")
        return FileToolResult("\n".join(lines), truncated)

    # -- search -----------------------------------------------------------------------------
    def search(self, args: SearchArgs) -> FileToolResult:
        if args.glob and "/" in args.glob:
            raise ToolArgumentError(
                f"glob {args.glob!r} contains '/': it matches file names only (e.g. '*.py'); "
                "put the folder in path instead"
            )
        target = resolve(args.path)
        flags = ["-r", "-n", "-H", "-I", "-Z", "-D", "skip", "--exclude-dir=.git", "-F" if args.literal else "-E"]
        if args.ignore_case:
            flags.append("-i")
        if args.glob:
            flags.append(f"--include={args.glob}")
        pattern = ["-e", args.pattern]
        shown = _shown(target)
        operand = [] if shown == "." else ["--", shown]  # no operand: names print without "./"
        grep = shlex.join(["grep", *flags, *pattern, *operand])
        check = shlex.join(["grep", "-F" if args.literal else "-E", *pattern])
        q = shlex.quote(target)
        script = (
            f"{check} </dev/null >/dev/null; [ $? -eq 2 ] && exit {_EXIT_BAD_PATTERN}\n"
            f"if [ ! -e {q} ]; then echo 'no such file or directory' >&2; exit {_EXIT_MISSING}; fi\n"
            f"cd {shlex.quote(WORKSPACE_DIR)} || exit 1\n"
            f"{grep} | head -n {args.max_results + 1} | cut -b 1-{_LINE_BYTES}\n"
            "exit ${PIPESTATUS[0]}"
        )
        result = self._run(script)
        if result.exit_code == _EXIT_BAD_PATTERN:
            raise ToolArgumentError(f"invalid regular expression {args.pattern!r}: {_grep_message(result.stderr)}")
        if result.exit_code == _EXIT_MISSING:
            raise FileOpError(target, "no such file or directory", missing=True)
        if result.timed_out:
            return _timed_out("search", self.timeout_s)
        lines = [line for line in result.stdout.split("\n") if line]
        if result.truncated and lines:
            lines.pop()
        matches = sorted((_match(line) for line in lines), key=lambda m: (m[0], m[1]))
        truncated = result.truncated or len(matches) > args.max_results
        matches = matches[: args.max_results]
        if not matches:
            if result.exit_code in (0, 1, 141):
                return FileToolResult(f"no matches for {args.pattern!r} in {shown}")
            message = _grep_message(result.stderr) or f"grep exited with {result.exit_code}"
            return FileToolResult(f"error: search failed: {message}", error=f"search failed: {message}")
        out = [f"{path}:{number}: {text}" for path, number, text in matches]
        if truncated:
            out.append(
                f"[results cut at {len(matches)} matches; narrow the pattern, path or glob, or raise max_results]"
            )
        if result.exit_code == 2:
            out.append(f"[some files could not be searched: {_grep_message(result.stderr)}]")
        return FileToolResult("\n".join(out), truncated)

    def _run(self, script: str) -> ExecResult:
        return self.backend.exec(
            self.episode_id, _ISOLATED + shlex.quote(script), workdir=None, timeout_s=self.timeout_s
        )


def unified_diff(before: str, after: str, shown: str) -> str:
    """A ``diff -u`` style diff, with git's marker for a last line that has no newline."""
    lines = difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True), f"a/{shown}", f"b/{shown}"
    )
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)


def _ls_row(record: str, target: str) -> str:
    parts = record.split("\t")
    if len(parts) != 4:  # a tab inside a name: the path is everything before the last three fields
        parts = ["\t".join(parts[:-3]), *parts[-3:]]
    name, kind_code, size, link = parts
    name = name or posixpath.basename(target)  # ls of a single file
    kind = _KINDS.get(kind_code, "other")
    if kind == "dir":
        return f"dir  {'-':>10}  {name}/"
    if kind == "link":
        return f"link {'-':>10}  {name} -> {link}"
    return f"{kind:<4} {size:>10}  {name}"


def _match(line: str) -> tuple[str, int, str]:
    path, _, rest = line.partition("\0")
    number, _, text = rest.partition(":")
    if len(text) > SEARCH_LINE_CHARS:
        text = text[:SEARCH_LINE_CHARS] + " [...]"
    return path, int(number) if number.isdigit() else 0, text


def _grep_message(stderr: str) -> str:
    return " ".join(stderr.split())[-500:]


def _timed_out(tool: str, timeout_s: float) -> FileToolResult:
    message = f"{tool} timed out after {timeout_s:g}s; narrow the path (or the glob)"
    return FileToolResult(f"error: {message}", timed_out=True, error=message)


def clip(text: str, limit: int) -> tuple[str, bool]:
    """``text`` cut to ``limit`` characters (with a note saying how much was cut) and whether it was cut."""
    if len(text) <= limit:
        return text, False
    return text[:limit] + f"\n[... {len(text) - limit} more characters cut]", True


NOTE_PREFIX = "[ise] "
"""Lines the workspace itself adds to a command's stderr (process limit reached, killed, ...)."""


def clip_keeping_notes(text: str, limit: int) -> tuple[str, bool]:
    """``clip`` for stderr: the workspace's own ``[ise]`` notes (appended last) survive the cut,
    so a record always says why a command ended (e.g. a fork bomb's 8 KB of fork errors)."""
    lines = text.splitlines(keepends=True)
    notes = "".join(line for line in lines if line.startswith(NOTE_PREFIX))
    if not notes or len(text) <= limit:
        return clip(text, limit)
    body, cut = clip("".join(line for line in lines if not line.startswith(NOTE_PREFIX)), max(0, limit - len(notes)))
    return body.rstrip("\n") + "\n" + notes, cut
