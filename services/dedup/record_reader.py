"""Read trajectory JSONL files for ``ise stats``, whatever a user points it at.

Each line is summarised as a :class:`RecordSummary`. Our records carry ``metadata`` with
``counts``, ``verdict``, ``intent`` and ``tool_results``; a *foreign* record in the plain OpenAI
messages format (``{"messages": [...]}``, any or no other metadata) is counted from its messages
(user turns, messages, tool calls and the tools they name). A last line without a newline that
does not parse was cut off mid-write: it is skipped with a warning. Any other unusable line
(not UTF-8, not JSON, over ``MAX_RECORD_BYTES``, or of an unknown shape) is a
:class:`DatasetFileError` naming the file and line; every such line of the files is listed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.common.errors import ConfigError
from services.common.json_lines import JsonLine, read_json_lines

MAX_RECORD_BYTES = 64 << 20
"""One trajectory line at most (the bus carries 16 MiB an event; a record is a little larger)."""

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


class _Message(_Lax):
    role: str
    tool_calls: list[_Call] | None = None


class _Counts(_Lax):
    user_turns: int
    messages: int
    tool_calls: int
    unique_tools: int = 0
    role_drift_messages: int = 0
    role_drift_regenerations: int = 0


class _Ref(_Lax):
    id: str = ""
    name: str = ""


class _IntentMeta(_Lax):
    complexity: str
    domains: list[_Ref] = Field(default_factory=list)
    tasks: list[_Ref] = Field(default_factory=list)


class _ToolResult(_Lax):
    exit_code: int | None = None


class Metadata(_Lax):
    """The part of our records' ``metadata`` the statistics read."""

    verdict: str
    counts: _Counts
    intent: _IntentMeta
    tool_results: list[_ToolResult] = Field(default_factory=list)
    verification_asked: bool = False


class _Record(_Lax):
    messages: list[_Message]


@dataclass(frozen=True)
class RecordSummary:
    """What the statistics need of one record; ``meta`` is None for a foreign record."""

    user_turns: int
    messages: int
    tool_calls: int
    unique_tools: int
    called: list[str]
    meta: Metadata | None = None


def summarize(value: Any) -> RecordSummary:
    """The summary of one parsed line; ValueError (saying what is wrong) for an unknown shape."""
    if not isinstance(value, dict):
        raise ValueError(f"not a trajectory record: expected a JSON object, got {_kind(value)}")
    if not isinstance(value.get("messages"), list):
        keys = ", ".join(list(map(str, value))[:8]) or "none"
        raise ValueError(f'not a trajectory record: no "messages" list (its keys: {keys})')
    record = _validated(_Record, value, "")
    called = [c.function.name for m in record.messages for c in m.tool_calls or []]
    raw_meta = value.get("metadata")
    if isinstance(raw_meta, dict) and ("counts" in raw_meta or "verdict" in raw_meta):
        meta = _validated(Metadata, raw_meta, "metadata.")
        c = meta.counts
        return RecordSummary(c.user_turns, c.messages, c.tool_calls, c.unique_tools, called, meta)
    users = sum(1 for m in record.messages if m.role == "user")
    return RecordSummary(users, len(record.messages), len(called), len(set(called)), called)


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


def _lines(path: Path, problems: list[tuple[str, int | None, str]]) -> Iterator[JsonLine]:
    try:
        with open(path, "rb") as handle:
            yield from read_json_lines(handle, MAX_RECORD_BYTES)
    except OSError as exc:
        problems.append((str(path), None, f"cannot read the file: {exc.strerror or exc}"))


def describe_folder(folder: Path, pattern: str) -> str:
    """Why ``folder`` has nothing matching ``pattern``, and what to pass instead."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        return f"{folder}: cannot list the folder: {exc.strerror or exc}"
    jsonl = [e for e in entries if e.is_file() and e.suffix == ".jsonl"]
    runs = [e for e in entries if e.is_dir() and any(e.glob(pattern))]
    head = f"{folder} holds no {pattern} shards"
    if runs:
        names = ", ".join(os.fspath(r) for r in runs[:5]) + (", ..." if len(runs) > 5 else "")
        return f"{head}; it holds run folders: pass one of them ({names})"
    if jsonl:
        names = ", ".join(os.fspath(j) for j in jsonl[:5]) + (", ..." if len(jsonl) > 5 else "")
        return f"{head}; it holds other .jsonl files: to read one, pass its path ({names})"
    what = "is empty" if not entries else f"holds {len(entries)} other entr{'y' if len(entries) == 1 else 'ies'}"
    return f"{head} (it {what}); pass a run folder (out/<run_id>) or one .jsonl file of trajectories"
