"""Reading JSONL files line by line with a size limit per line: a huge line is skipped in bounded
chunks (never read whole), a bad line becomes a ``problem`` naming what is wrong, a last line
without a newline is marked (a torn write); each line carries its byte offset, so a reader can come
back for it. Shared by ``ise intents import``, ``ise stats`` and ``ise view``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO


@dataclass(frozen=True)
class JsonLine:
    """One non-blank line of a JSONL file: its JSON ``value``, or the ``problem`` that makes it unusable."""

    number: int
    value: Any = None
    problem: str = ""
    terminated: bool = True
    """False for a last line without a newline (a file cut off mid-write ends so)."""
    too_long: bool = False
    offset: int = 0
    """Where the line starts in the file, in bytes."""

    @property
    def torn(self) -> bool:
        """An unusable last line without a newline: most likely cut off mid-write."""
        return bool(self.problem) and not self.terminated and not self.too_long


def read_json_lines(handle: BinaryIO, max_bytes: int) -> Iterator[JsonLine]:
    """The non-blank lines of a binary ``handle``, parsed. A line longer than ``max_bytes`` is a
    problem and is skipped in chunks, never held in memory whole; a UTF-8 BOM on line 1 is dropped."""
    number = 0
    offset = handle.tell() if handle.seekable() else 0
    while True:
        start = offset
        raw = handle.readline(max_bytes + 1)
        if not raw:
            return
        number += 1
        offset += len(raw)
        terminated = raw.endswith(b"\n")
        if len(raw) > max_bytes and not terminated:
            size, terminated = _skip_rest(handle, len(raw))
            offset = start + size + terminated
            yield JsonLine(
                number,
                problem=f"line is {_size(size)}, over the {_size(max_bytes)} limit for one "
                "record; shorten it or remove it",
                terminated=terminated,
                too_long=True,
                offset=start,
            )
            continue
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        if not raw.strip():
            continue
        yield _parse(number, raw, terminated, start)


def _skip_rest(handle: BinaryIO, size: int) -> tuple[int, bool]:
    """Read past the rest of an over-long line; its total size and whether a newline ended it."""
    while True:
        chunk = handle.readline(1 << 20)
        size += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return size - (1 if chunk else 0), bool(chunk)


def _parse(number: int, raw: bytes, terminated: bool, offset: int) -> JsonLine:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        problem = f"not UTF-8 text (byte {exc.start} of the line is not)"
        return JsonLine(number, problem=problem, terminated=terminated, offset=offset)
    try:
        return JsonLine(number, json.loads(text), terminated=terminated, offset=offset)
    except json.JSONDecodeError as exc:
        problem = f"not valid JSON: {exc.msg} at column {exc.colno}"
    except (ValueError, RecursionError) as exc:  # e.g. nesting too deep, integer too long
        problem = f"not usable JSON: {exc}"
    return JsonLine(number, problem=problem, terminated=terminated, offset=offset)


def _size(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n} bytes"
