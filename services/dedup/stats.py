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
    tasks: Counter[str] = Counter()
    domain_tools: Counter[str] = Counter()
    for r in records:
        called = [c["function"]["name"] for m in r["messages"] for c in m.get("tool_calls") or []]
        tools.update(called)
        intent_domains = [d["id"] for d in r["metadata"]["intent"]["domains"]]
        domains.update(intent_domains)
        tasks.update(t["name"] for t in r["metadata"]["intent"]["tasks"])
        domain_tools.update(f"{d} x {t}" for d in intent_domains for t in called)
    user_turns = sum(c["user_turns"] for c in counts)
    exit_codes = [t["exit_code"] for r in records for t in r["metadata"]["tool_results"] if t.get("exit_code") is not None]
    return {
        "trajectories": len(records),
        "user_turns_avg": _mean([c["user_turns"] for c in counts]),
        "messages_avg": _mean([c["messages"] for c in counts]),
        "tool_calls_avg": _mean([c["tool_calls"] for c in counts]),
        "unique_tools_avg": _mean([c["unique_tools"] for c in counts]),
        "nonzero_exit_share": round(sum(1 for e in exit_codes if e != 0) / len(exit_codes), 4) if exit_codes else 0.0,
        "role_drift_rate": round(sum(c.get("role_drift_messages", 0) for c in counts) / user_turns, 4) if user_turns else 0.0,
        "role_drift_regenerations": sum(c.get("role_drift_regenerations", 0) for c in counts),
        "verified_share": round(sum(bool(r["metadata"].get("verification_asked")) for r in records) / len(records), 4)
        if records else 0.0,
        "verdicts": dict(Counter(r["metadata"]["verdict"] for r in records)),
        "complexity": dict(Counter(r["metadata"]["intent"]["complexity"] for r in records)),
        "domains": dict(domains.most_common()),
        "tools": dict(tools.most_common()),
        "tasks": dict(tasks.most_common()),
        "domain_x_tool": dict(domain_tools.most_common()),
    }


def format_table(stats: dict[str, Any]) -> str:
    """The paper's corpus table, plus the mixes, as plain text."""
    rows = [
        ("trajectories", stats["trajectories"]),
        ("user turns / trajectory", stats["user_turns_avg"]),
        ("messages / trajectory", stats["messages_avg"]),
        ("tool calls / trajectory", stats["tool_calls_avg"]),
        ("unique tools / trajectory", stats["unique_tools_avg"]),
        ("non-zero exit share", stats["nonzero_exit_share"]),
        ("role-drift rate (user messages)", stats["role_drift_rate"]),
        ("verified before finishing", stats["verified_share"]),
    ]
    lines = [f"{name:34} {value}" for name, value in rows]
    for title in ("verdicts", "complexity", "domains", "tools", "tasks", "domain_x_tool"):
        mix = stats.get(title) or {}
        top = ", ".join(f"{k} {v}" for k, v in list(mix.items())[:12])
        lines.append(f"{title:34} {top or '-'}" + (f" (+{len(mix) - 12} more)" if len(mix) > 12 else ""))
    return "\n".join(lines)


def write_stats(run_dir: Path, extra: dict[str, Any] | None = None) -> Path:
    stats = {**dataset_stats(run_dir), **(extra or {})}
    path = run_dir / "stats.json"
    path.write_text(json.dumps(stats, indent=2, sort_keys=True))
    return path
