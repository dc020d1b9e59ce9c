"""Read trajectory files for ``ise stats`` and ``ise export``, whatever a user points them at.

Each record is summarised as a :class:`RecordSummary` computed from its messages, so ours, the
reference implementation's (its middle format: ``status``, ``total_steps``, tool-call arguments
as JSON objects, ``success`` on tool messages) and a trainer's plain OpenAI-messages export are
counted alike: user turns, messages without the system message, tool calls, distinct tools,
exit codes of ``exec`` results (ours in metadata; otherwise the ``exit_code=N`` or ``(Command
exited with code N)`` markers in the text, an unmarked result counting as 0) and tool results
marked ``success: false``. The verdict is ours (``metadata.verdict``), a ``verdict`` field, or
the reference's ``status`` (``completed`` means success; it converts successes only).

Files: ``.jsonl`` (a record per line) or ``.json`` (one record, or an array of records). A last
JSONL line without a newline that does not parse was cut off mid-write: skipped with a warning.
Any other unusable line (not UTF-8, not JSON, over ``MAX_RECORD_BYTES``, or of an unknown shape)
is a :class:`DatasetFileError` naming the file and line; every such line of the files is listed.
``ise view`` reads the same lines through :func:`file_lines` (problems returned, not raised) and
comes back for one record by its byte offset (:func:`read_record_at`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.common.errors import ConfigError
from services.common.json_lines import JsonLine, read_json_lines
from services.dedup.cost import UsageMeta

MAX_RECORD_BYTES = 64 << 20
"""One trajectory line at most (the bus carries 16 MiB an event; a record is a little larger)."""
MAX_JSON_FILE_BYTES = 1 << 30
"""A ``.json`` file is parsed whole; bigger datasets belong in JSONL."""
SHARD_GLOB = "trajectories-*.jsonl"
"""How the dataset writer names a run's shards."""
SHAPE_SHORT = "OpenAI-messages trajectories (.jsonl, or .json holding one record or an array)"

SHAPE = (
    'one JSON object per line in the OpenAI messages format, {"messages": [{"role": ...}, ...]}, '
    "optionally with ISE metadata"
)

Warn = Callable[[str], None]
T = TypeVar("T")


def _same(value: Any) -> Any:
    return value


class DatasetFileError(ConfigError):
    """Lines of dataset files that are not trajectory records; the first is named in full."""

    def __init__(self, problems: list[tuple[str, int | None, str]]) -> None:
        self.problems = problems
        path, line, problem = problems[0]
        where = f"{path}:{line}" if line is not None else path
        more = ""
        if len(problems) > 1:
            others = ", ".join(f"{p}:{n}" for p, n, _ in problems[1:6])
            more = f" ({len(problems) - 1} more bad line(s): {others}{', ...' if len(problems) > 6 else ''})"
        super().__init__(f"{where}: {problem}{more}. `ise stats` reads {SHAPE}; fix or remove the bad line(s)")


class _Lax(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Function(_Lax):
    name: str


class _Call(_Lax):
    function: _Function
    id: str = ""


class _Message(_Lax):
    role: str
    content: Any = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[_Call] | None = None
    success: bool | None = None


class _Ref(_Lax):
    id: str = ""
    name: str = ""


class _IntentMeta(_Lax):
    complexity: str = ""
    domains: list[_Ref] = Field(default_factory=list)
    tasks: list[_Ref] = Field(default_factory=list)
    tools_used: list[str] = Field(default_factory=list)
    skills_used: list[str] = Field(default_factory=list)


class _Counts(_Lax):
    role_drift_messages: int = 0
    role_drift_regenerations: int = 0


class _ToolResult(_Lax):
    tool_call_id: str = ""
    name: str = ""
    exit_code: int | None = None
    error: str | None = None


class Metadata(_Lax, UsageMeta):
    """The part of our records' ``metadata`` the statistics read (token usage and models included)."""

    verdict: str
    counts: _Counts = Field(default_factory=_Counts)
    intent: _IntentMeta = Field(default_factory=_IntentMeta)
    tool_results: list[_ToolResult] = Field(default_factory=list)
    verification_asked: bool = False


class _Record(_Lax):
    messages: list[_Message]


@dataclass(frozen=True)
class RecordSummary:
    """What the statistics need of one record, from its messages; ``meta`` is ours only."""

    user_turns: int
    messages: int
    tool_calls: int
    unique_tools: int
    called: list[str]
    verdict: str | None = None
    exit_codes: tuple[int, ...] = ()
    tool_results: int = 0
    tool_failures: int = 0
    meta: Metadata | None = None


_EXIT_MARKERS = (re.compile(r"\bexit_code=(-?\d+)"), re.compile(r"\(Command exited with code (-?\d+)\)"))


def summarize(value: Any) -> RecordSummary:
    """The summary of one parsed record; ValueError (saying what is wrong) for an unknown shape."""
    if not isinstance(value, dict):
        raise ValueError(f"not a trajectory record: expected a JSON object, got {_kind(value)}")
    if not isinstance(value.get("messages"), list):
        keys = ", ".join(list(map(str, value))[:8]) or "none"
        raise ValueError(f'not a trajectory record: no "messages" list (its keys: {keys})')
    record = _validated(_Record, value, "")
    raw_meta = value.get("metadata")
    meta = None
    if isinstance(raw_meta, dict) and "verdict" in raw_meta:
        meta = _validated(Metadata, raw_meta, "metadata.")
    called = [c.function.name for m in record.messages for c in m.tool_calls or []]
    names = {c.id: c.function.name for m in record.messages for c in m.tool_calls or [] if c.id}
    results = [m for m in record.messages if m.role == "tool"]
    ours = {t.tool_call_id: t for t in meta.tool_results} if meta is not None else {}
    exit_codes: list[int] = []
    failures = 0
    for message in results:
        known = ours.get(message.tool_call_id or "")
        name = message.name or names.get(message.tool_call_id or "", "")
        if known is not None and known.exit_code is not None:
            exit_codes.append(known.exit_code)
        elif name == "exec" and known is None:
            exit_codes.append(text_exit_code(message.content))
        if message.success is False or (message.success is None and known is not None and known.error is not None):
            failures += 1
    return RecordSummary(
        user_turns=sum(1 for m in record.messages if m.role == "user"),
        messages=sum(1 for m in record.messages if m.role != "system"),
        tool_calls=len(called),
        unique_tools=len(set(called)),
        called=called,
        verdict=meta.verdict if meta is not None else _foreign_verdict(value),
        exit_codes=tuple(exit_codes),
        tool_results=len(results),
        tool_failures=failures,
        meta=meta,
    )


def text_exit_code(content: Any) -> int:
    """The exit code a tool result's text states (``exit_code=N``, ``(Command exited with code N)``), else 0."""
    text = content if isinstance(content, str) else str(content or "")
    for marker in _EXIT_MARKERS:
        found = marker.search(text)
        if found:
            return int(found.group(1))
    return 0


def _foreign_verdict(value: dict[str, Any]) -> str | None:
    verdict = value.get("verdict")
    if isinstance(verdict, str) and verdict:
        return verdict
    status = value.get("status")
    if isinstance(status, str) and status:
        return "success" if status in ("completed", "success") else status
    return None


def _validated(model: type[_Lax], value: dict[str, Any], prefix: str) -> Any:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = prefix + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"]).lstrip(".")
        raise ValueError(f"not a trajectory record: {where or 'record'}: {first['msg']}") from None


def _kind(value: Any) -> str:
    names = {type(None): "null", list: "a list", str: "a string", bool: "a boolean"}
    return names.get(type(value), type(value).__name__)


def read_records(files: Iterable[Path], warn: Warn, convert: Callable[[Any], T] = _same) -> list[T]:
    """``convert`` of every line's JSON value in ``files`` (a torn last line is skipped with a
    warning); one DatasetFileError listing every bad line, if any (``convert`` raises ValueError)."""
    out: list[T] = []
    problems: list[tuple[str, int | None, str]] = []
    for path in files:
        for line in _lines(path, problems):
            if line.torn:
                warn(f"{path}:{line.number}: the last line is incomplete (no newline; cut off mid-write?): skipped")
                continue
            if line.problem:
                problems.append((str(path), line.number, line.problem))
                continue
            try:
                out.append(convert(line.value))
            except ValueError as exc:
                problems.append((str(path), line.number, str(exc)))
    if problems:
        raise DatasetFileError(problems)
    return out


def read_summaries(files: Iterable[Path], warn: Warn) -> list[RecordSummary]:
    """Every record of ``files`` summarised (see :func:`read_records`)."""
    return read_records(files, warn, summarize)


def file_lines(path: Path) -> Iterator[JsonLine]:
    """Every record line of one file (a ``.json`` file: every record, ``offset`` -1), parsed, with
    its problem if it is unusable, never raised; a file that cannot be read is one problem line 0."""
    problems: list[tuple[str, int | None, str]] = []
    yield from _lines(path, problems)
    for _, _, problem in problems:
        yield JsonLine(0, problem=problem)


def read_record_at(path: Path, offset: int, number: int) -> Any:
    """The record that :func:`file_lines` found at ``offset`` (line ``number``) of ``path``, read
    again; ValueError if it is no longer there (the file changed since)."""
    if offset < 0:
        items = list(_json_document(path))
        line = items[number - 1] if 0 < number <= len(items) else JsonLine(number, problem="no such record")
    else:
        with open(path, "rb") as handle:
            handle.seek(offset)
            line = next(read_json_lines(handle, MAX_RECORD_BYTES), JsonLine(number, problem="no line there"))
    if line.problem:
        raise ValueError(f"{path}:{number}: {line.problem}")
    return line.value


def _lines(path: Path, problems: list[tuple[str, int | None, str]]) -> Iterator[JsonLine]:
    try:
        if path.suffix == ".json":
            yield from _json_document(path)
            return
        with open(path, "rb") as handle:
            yield from read_json_lines(handle, MAX_RECORD_BYTES)
    except OSError as exc:
        problems.append((str(path), None, f"cannot read the file: {exc.strerror or exc}"))


def _json_document(path: Path) -> Iterator[JsonLine]:
    """A ``.json`` file: one record, or an array of records (numbered from 1, as lines are)."""
    size = path.stat().st_size
    if size > MAX_JSON_FILE_BYTES:
        limit = MAX_JSON_FILE_BYTES >> 20
        yield JsonLine(1, problem=f"a {size >> 20} MiB .json file is over the {limit} MiB limit; write it as JSONL")
        return
    try:
        value = json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        yield JsonLine(1, problem=f"not UTF-8 text (byte {exc.start})")
        return
    except json.JSONDecodeError as exc:
        yield JsonLine(exc.lineno, problem=f"not valid JSON: {exc.msg} (column {exc.colno})")
        return
    if isinstance(value, list):
        yield from (JsonLine(n, value=item, offset=-1) for n, item in enumerate(value, 1))
    else:
        yield JsonLine(1, value=value, offset=-1)


def dataset_files(target: Path) -> list[Path]:
    """The trajectory files ``target`` names: the file itself; for a folder, its dataset shards
    (``trajectories-*.jsonl``) if it has any, else every ``.jsonl``/``.json`` under it (not
    statistics or logs). ConfigError saying what to pass when there is nothing to read."""
    if target.is_file():
        return [target]
    if not target.exists():
        raise ConfigError(
            f"{target}: no such file or folder; pass a run folder (out/<run_id>), a folder or a file of {SHAPE_SHORT}"
        )
    if not target.is_dir():
        raise ConfigError(f"{target}: not a regular file or folder; pass a folder or a file of {SHAPE_SHORT}")
    shards = sorted(p for p in target.glob(SHARD_GLOB) if p.is_file())
    if shards:
        return shards
    try:
        found = sorted(
            p for p in target.rglob("*") if p.is_file() and p.suffix in (".jsonl", ".json") and _is_data(p, target)
        )
    except OSError as exc:
        raise ConfigError(f"{target}: cannot list the folder: {exc.strerror or exc}") from None
    if not found:
        raise ConfigError(
            f"{target} holds no .jsonl or .json files; pass a run folder (out/<run_id>), a folder or a file of {SHAPE_SHORT}"
        )
    return found


def _is_data(path: Path, root: Path) -> bool:
    """Not a file ``ise`` writes beside a dataset (statistics, logs)."""
    parts = path.relative_to(root).parts
    return "logs" not in parts[:-1] and path.name != "stats.json" and not path.name.endswith(".stats.json")
