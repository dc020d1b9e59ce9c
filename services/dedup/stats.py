"""Dataset statistics in the paper's terms, computed from the JSONL shards of a run."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from services.dedup.writer import SHARD_GLOB


def iter_records(run_dir: Path) -> list[dict[str, Any]]:
    records = []
    for shard in sorted(run_dir.glob(SHARD_GLOB)):
        with shard.open(encoding="utf-8") as fh:
            records.extend(json.loads(line) for line in fh if line.strip())
    return records


def _mean(values: list[int]) -> float:
    return round(sum(values) / len(values), 2) if values else 0.0


def dataset_stats(run_dir: Path) -> dict[str, Any]:
    records = iter_records(run_dir)
    counts = [r["metadata"]["counts"] for r in records]
    tools: Counter[str] = Counter()
    domains: Counter[str] = Counter()
    for r in records:
        for m in r["messages"]:
            tools.update(c["function"]["name"] for c in m.get("tool_calls") or [])
        domains.update(d["id"] for d in r["metadata"]["intent"]["domains"])
    exit_codes = [t["exit_code"] for r in records for t in r["metadata"]["tool_results"] if t.get("exit_code") is not None]
    return {
        "trajectories": len(records),
        "user_turns_avg": _mean([c["user_turns"] for c in counts]),
        "messages_avg": _mean([c["messages"] for c in counts]),
        "tool_calls_avg": _mean([c["tool_calls"] for c in counts]),
        "unique_tools_avg": _mean([c["unique_tools"] for c in counts]),
        "nonzero_exit_share": round(sum(1 for e in exit_codes if e != 0) / len(exit_codes), 4) if exit_codes else 0.0,
        "verdicts": dict(Counter(r["metadata"]["verdict"] for r in records)),
        "complexity": dict(Counter(r["metadata"]["intent"]["complexity"] for r in records)),
        "domains": dict(domains.most_common()),
        "tools": dict(tools.most_common()),
    }


def write_stats(run_dir: Path, extra: dict[str, Any] | None = None) -> Path:
    stats = {**dataset_stats(run_dir), **(extra or {})}
    path = run_dir / "stats.json"
    path.write_text(json.dumps(stats, indent=2, sort_keys=True))
    return path
