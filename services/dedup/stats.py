"""Dataset statistics in the paper's terms, computed from the JSONL shards of a run (or one file).

Reading is tolerant (:mod:`services.dedup.record_reader`): records without our metadata (plain
OpenAI messages) are counted from their messages, a last line cut off mid-write is skipped with a
warning, and anything else unreadable is a ConfigError naming the file and line, never a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from services.common.errors import ConfigError
from services.dedup.record_reader import RecordSummary, Warn, describe_folder, read_records, read_summaries
from services.dedup.writer import SHARD_GLOB

log = logging.getLogger(__name__)


def shard_files(run_dir: Path) -> list[Path]:
    """The dataset shards of a run folder, in name order (none when the folder does not exist)."""
    return sorted(p for p in run_dir.glob(SHARD_GLOB) if p.is_file())


def iter_records(run_dir: Path) -> list[dict[str, Any]]:
    """Every record of a run's shards, parsed (a torn last line is skipped and logged)."""
    return read_records(shard_files(run_dir), log.warning)


def _mean(values: list[int]) -> float:
    return round(sum(values) / len(values), 2) if values else 0.0


def _share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def dataset_stats(source: Path | Sequence[Path], warn: Warn = log.warning) -> dict[str, Any]:
    """The statistics of a run folder's shards, or of the given files."""
    files = shard_files(source) if isinstance(source, Path) else list(source)
    return compute_stats(read_summaries(files, warn))


def compute_stats(records: list[RecordSummary]) -> dict[str, Any]:
    """Counts average over every record; verdicts, intents, exit codes and drift over ours only."""
    ours = [r.meta for r in records if r.meta is not None]
    tools: Counter[str] = Counter()
    domains: Counter[str] = Counter()
    tasks: Counter[str] = Counter()
    domain_tools: Counter[str] = Counter()
    for r in records:
        tools.update(r.called)
        if r.meta is not None:
            intent_domains = [d.id for d in r.meta.intent.domains]
            domains.update(intent_domains)
            tasks.update(t.name for t in r.meta.intent.tasks)
            domain_tools.update(f"{d} x {t}" for d in intent_domains for t in r.called)
    exit_codes = [t.exit_code for m in ours for t in m.tool_results if t.exit_code is not None]
    our_turns = sum(m.counts.user_turns for m in ours)
    return {
        "trajectories": len(records),
        "records_without_metadata": len(records) - len(ours),
        "user_turns_avg": _mean([r.user_turns for r in records]),
        "messages_avg": _mean([r.messages for r in records]),
        "tool_calls_avg": _mean([r.tool_calls for r in records]),
        "unique_tools_avg": _mean([r.unique_tools for r in records]),
        "nonzero_exit_share": _share(sum(1 for e in exit_codes if e != 0), len(exit_codes)),
        "role_drift_rate": _share(sum(m.counts.role_drift_messages for m in ours), our_turns),
        "role_drift_regenerations": sum(m.counts.role_drift_regenerations for m in ours),
        "verified_share": _share(sum(m.verification_asked for m in ours), len(ours)),
        "verdicts": dict(Counter(m.verdict for m in ours)),
        "complexity": dict(Counter(m.intent.complexity for m in ours)),
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
    foreign = stats.get("records_without_metadata") or 0
    if foreign:
        rows.append(("records without ISE metadata", f"{foreign} (counted from their messages only)"))
    lines = [f"{name:34} {value}" for name, value in rows]
    for title in ("verdicts", "complexity", "domains", "tools", "tasks", "domain_x_tool"):
        mix = stats.get(title) or {}
        top = ", ".join(f"{k} {v}" for k, v in list(mix.items())[:12])
        lines.append(f"{title:34} {top or '-'}" + (f" (+{len(mix) - 12} more)" if len(mix) > 12 else ""))
    return "\n".join(lines)


def stats_for(target: Path, warn: Warn = log.warning) -> tuple[dict[str, Any], Path]:
    """For ``ise stats TARGET``: the statistics of a run folder or one .jsonl file, and where to
    save them. ConfigError (saying what to pass instead) when there is nothing to read."""
    if target.is_dir():
        files = shard_files(target)
        if not files:
            raise ConfigError(describe_folder(target, SHARD_GLOB))
        return dataset_stats(files, warn), target / "stats.json"
    if not target.exists():
        raise ConfigError(
            f"{target}: no such file or folder; pass a run folder (out/<run_id>) holding "
            f"{SHARD_GLOB} shards, or one .jsonl file of trajectories"
        )
    return dataset_stats([target], warn), target.with_name(f"{target.stem}.stats.json")


def save_stats(path: Path, stats: dict[str, Any]) -> Path:
    """Write ``stats`` to ``path`` atomically, keeping what an existing file holds beyond them (the
    run id, progress and intent diversity ``ise run`` adds). An unreadable old file is replaced."""
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = {}
    merged = {**(old if isinstance(old, dict) else {}), **stats}
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(json.dumps(merged, indent=2, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_stats(run_dir: Path, extra: dict[str, Any] | None = None) -> Path:
    """Compute a run folder's statistics (plus ``extra``) and save them as ``run_dir/stats.json``."""
    return save_stats(run_dir / "stats.json", {**dataset_stats(run_dir), **(extra or {})})
