"""``memory_search`` and ``memory_get``: the agent's notes in ``MEMORY.md`` and ``memory/*.md``.

As in the reference runtime, memory is plain Markdown inside the agent's workspace, written with
the ordinary file tools. ``memory_search`` splits every note into overlapping windows of lines
and ranks them with BM25 (keyword relevance, scores scaled to 0-1 by the best hit), answering the
reference's JSON shape ``{"results": [{path, startLine, endLine, score, snippet}], "provider",
"citations", "mode"}``; no notes yet is an empty result, not an error. ``memory_get`` returns
lines of one note as ``{"path", "text"}``; any other path is a tool error.
"""

from __future__ import annotations

import json
import math
import posixpath
import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from services.common.contracts.messages import ToolResultMeta
from services.executor.errors import FileOpError, ToolArgumentError
from services.executor.tool_common import Args, ToolLimits, ToolOutcome, elapsed_ms
from services.executor.workspace.base import WorkspaceBackend

WINDOW_LINES = 8
STEP_LINES = 4
SNIPPET_CHARS = 700
_K1, _B = 1.2, 0.75
_TOKEN = re.compile(r"[\w][\w.-]*", re.UNICODE)
# Reads the notes at once, unrecorded, as the agent user would: {"MEMORY.md": text, "memory/x.md": text},
# within a budget that keeps the JSON under the exec output cap (the rest of a long note is not searched).
_COLLECT = (
    "python3 -c 'import glob, json, os\n"
    'os.chdir("/workspace")\n'
    'names = [n for n in ["MEMORY.md", *sorted(glob.glob("memory/**/*.md", recursive=True))] if os.path.isfile(n)]\n'
    "out, left = {}, 24000\n"
    "for n in names:\n"
    '    text = open(n, encoding="utf-8", errors="replace").read(left)\n'
    "    out[n], left = text, left - len(text)\n"
    "    if left <= 0: break\n"
    "print(json.dumps(out))'"
)


class MemorySearchArgs(Args):
    query: str = Field(min_length=1)
    maxResults: float = Field(5, ge=1, le=50)
    minScore: float = Field(0.0, ge=0, le=1)


class MemoryGetArgs(Args):
    path: str = Field(min_length=1)
    from_: float = Field(1, ge=1, alias="from")
    lines: float | None = Field(None, ge=1)


@dataclass(frozen=True)
class Chunk:
    path: str
    start: int  # 1-based
    end: int
    text: str


def tokens(text: str) -> list[str]:
    return [t.lower() for t in _TOKEN.findall(text)]


def chunks(notes: dict[str, str]) -> list[Chunk]:
    out = []
    for path, text in notes.items():
        lines = text.splitlines()
        for start in range(0, max(1, len(lines)), STEP_LINES):
            window = lines[start : start + WINDOW_LINES]
            if any(line.strip() for line in window):
                out.append(Chunk(path, start + 1, start + len(window), "\n".join(window)))
            if start + WINDOW_LINES >= len(lines):
                break
    return out


def bm25(query: str, docs: list[Chunk]) -> list[float]:
    """Okapi BM25 of each chunk for the query (0 for no shared term)."""
    terms = set(tokens(query))
    bags = [Counter(tokens(d.text)) for d in docs]
    if not terms or not bags:
        return [0.0] * len(docs)
    avg = sum(sum(b.values()) for b in bags) / len(bags) or 1.0
    df = {t: sum(1 for b in bags if t in b) for t in terms}
    scores = []
    for bag in bags:
        length = sum(bag.values())
        score = 0.0
        for t in terms:
            if bag[t]:
                idf = math.log(1 + (len(bags) - df[t] + 0.5) / (df[t] + 0.5))
                score += idf * bag[t] * (_K1 + 1) / (bag[t] + _K1 * (1 - _B + _B * length / avg))
        scores.append(score)
    return scores


def memory_path(path: str) -> str:
    """``MEMORY.md`` or ``memory/...md``, normalised; anything else is a tool error."""
    rel = posixpath.normpath(path.removeprefix("/workspace/").lstrip("/"))
    if rel == "MEMORY.md" or (rel.startswith("memory/") and rel.endswith(".md") and ".." not in rel.split("/")):
        return rel
    raise ToolArgumentError(f"memory_get reads only MEMORY.md or memory/*.md, not {path!r}")


class MemoryTools:
    """``memory_search`` and ``memory_get`` for one episode's workspace (blocking calls)."""

    def __init__(self, backend: WorkspaceBackend, episode_id: str, limits: ToolLimits) -> None:
        self.backend = backend
        self.episode_id = episode_id
        self.limits = limits

    def search(self, call_id: str, arguments: dict[str, Any]) -> ToolOutcome:
        args = MemorySearchArgs.model_validate(arguments)
        started = time.monotonic()
        docs = chunks(self._notes())
        scores = bm25(args.query, docs)
        best = max(scores, default=0.0) or 1.0
        ranked = sorted(zip(scores, docs, strict=True), key=lambda pair: (-pair[0], pair[1].path, pair[1].start))
        results = [
            {
                "path": doc.path,
                "startLine": doc.start,
                "endLine": doc.end,
                "score": round(score / best, 4),
                "snippet": doc.text[:SNIPPET_CHARS],
            }
            for score, doc in ranked
            if score > 0 and score / best >= args.minScore
        ][: int(args.maxResults)]
        body = {"results": results, "provider": "bm25", "citations": "auto", "mode": "keyword"}
        return self._outcome(call_id, "memory_search", json.dumps(body, ensure_ascii=False), started)

    def get(self, call_id: str, arguments: dict[str, Any]) -> ToolOutcome:
        args = MemoryGetArgs.model_validate(arguments)
        started = time.monotonic()
        rel = memory_path(args.path)
        data, _ = self.backend.read_file(self.episode_id, f"/workspace/{rel}", max_bytes=self.limits.max_read_bytes)
        lines = data.decode(errors="replace").splitlines()
        first = int(args.from_) - 1
        end = None if args.lines is None else first + int(args.lines)
        text = "\n".join(lines[first:end])[: self.limits.max_result_chars]
        return self._outcome(
            call_id, "memory_get", json.dumps({"path": rel, "text": text}, ensure_ascii=False), started
        )

    def _notes(self) -> dict[str, str]:
        result = self.backend.exec(self.episode_id, _COLLECT, workdir=None, timeout_s=30.0, record=False)
        if result.exit_code != 0:
            raise FileOpError("/workspace/memory", f"could not read the notes: {result.stderr.strip()[-300:]}")
        notes = json.loads(result.stdout or "{}")
        return {str(k): str(v) for k, v in notes.items()}

    @staticmethod
    def _outcome(call_id: str, name: str, content: str, started: float) -> ToolOutcome:
        meta = ToolResultMeta(tool_call_id=call_id, name=name, ok=True, duration_ms=elapsed_ms(started))
        return ToolOutcome(content=content, meta=meta)
