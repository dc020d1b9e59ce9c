"""Dataset statistics in the paper's terms, computed from the records' messages.

Read by :mod:`services.dedup.record_reader` (ours, the reference's middle format, plain OpenAI
messages; ``.jsonl`` or ``.json``). Per trajectory: user turns, messages without the system
message, tool calls and distinct tools, each as mean, median, p90 and max, plus the user-turn
histogram, the share of ``exec`` results with a non-zero exit code and of tool results marked
failed. Like the paper, the table covers successful trajectories by default (a record whose
verdict is unknown counts as one); ``selection="all"`` covers every verdict. Verdict, intent
and drift figures come from our metadata where records have it; the cost (per trajectory, run
and verdict, from the token usage and a price table: ``services.dedup.cost``) covers every
record whatever the selection.
"""

from __future__ import annotations

import json
import logging
import math
import os
import uuid
from collections import Counter
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from services.dedup.cost import PriceTable, load_prices, record_cost, summarize_costs
from services.dedup.record_reader import SHARD_GLOB, RecordSummary, Warn, dataset_files, read_records, read_summaries

log = logging.getLogger(__name__)

Selection = Literal["success", "all"]
MEASURES = ("user_turns", "messages", "tool_calls", "unique_tools")


def paper_figures() -> dict[str, Any]:
    """The paper's corpus figures (``paper_figures.json``)."""
    return dict(json.loads(resources.files("services.dedup").joinpath("paper_figures.json").read_text()))


def shard_files(run_dir: Path) -> list[Path]:
    """The dataset shards of a run folder, in name order (none when the folder does not exist)."""
    return sorted(p for p in run_dir.glob(SHARD_GLOB) if p.is_file())


def iter_records(run_dir: Path) -> list[dict[str, Any]]:
    """Every record of a run's shards, parsed (a torn last line is skipped and logged)."""
    return read_records(shard_files(run_dir), log.warning)


def distribution(values: Sequence[int]) -> dict[str, float]:
    """Mean, median, p90 (nearest rank) and max of ``values`` (zeros when empty)."""
    if not values:
        return {"mean": 0.0, "median": 0.0, "p90": 0.0, "max": 0.0}
    ordered = sorted(values)
    n = len(ordered)
    middle = n // 2
    median = ordered[middle] if n % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    return {
        "mean": round(sum(ordered) / n, 2),
        "median": median,
        "p90": ordered[max(0, math.ceil(0.9 * n) - 1)],
        "max": ordered[-1],
    }


def _share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def _mean(values: Sequence[int]) -> float:
    return round(sum(values) / len(values), 2) if values else 0.0


def dataset_stats(
    source: Path | Sequence[Path],
    warn: Warn = log.warning,
    selection: Selection = "success",
    prices: PriceTable | None = None,
) -> dict[str, Any]:
    """The statistics of a file or folder (see ``record_reader.dataset_files``) or of given files."""
    files = dataset_files(source) if isinstance(source, Path) else list(source)
    return compute_stats(read_summaries(files, warn), selection, prices)


def compute_stats(
    records: list[RecordSummary], selection: Selection = "success", prices: PriceTable | None = None
) -> dict[str, Any]:
    """The table over the selected records; the verdict mix and the cost (``services.dedup.cost``;
    ``prices`` default: the shipped table and ``ISE_PRICES_FILE``) over all of them."""
    chosen = [r for r in records if selection == "all" or r.verdict in (None, "success")]
    ours = [r.meta for r in chosen if r.meta is not None]
    tools: Counter[str] = Counter()
    domains: Counter[str] = Counter()
    tasks: Counter[str] = Counter()
    domain_tools: Counter[str] = Counter()
    for r in chosen:
        tools.update(r.called)
        if r.meta is not None:
            intent_domains = [d.id for d in r.meta.intent.domains]
            domains.update(intent_domains)
            tasks.update(t.name for t in r.meta.intent.tasks)
            domain_tools.update(f"{d} x {t}" for d in intent_domains for t in r.called)
    exit_codes = [e for r in chosen for e in r.exit_codes]
    our_turns = sum(r.user_turns for r in chosen if r.meta is not None)
    stats: dict[str, Any] = {
        "selection": selection,
        "trajectories": len(chosen),
        "records_read": len(records),
        "records_without_metadata": sum(1 for r in chosen if r.meta is None),
        "verdicts": dict(Counter(r.verdict or "unknown" for r in records).most_common()),
    }
    for measure in MEASURES:
        values = [getattr(r, measure) for r in chosen]
        stats[measure] = distribution(values)
        stats[f"{measure}_avg"] = stats[measure]["mean"]
    stats |= {
        "user_turn_histogram": {str(k): v for k, v in sorted(Counter(r.user_turns for r in chosen).items())},
        "exec_results": len(exit_codes),
        "nonzero_exit_share": _share(sum(1 for e in exit_codes if e != 0), len(exit_codes)),
        "tool_failure_share": _share(sum(r.tool_failures for r in chosen), sum(r.tool_results for r in chosen)),
        "role_drift_rate": _share(sum(m.counts.role_drift_messages for m in ours), our_turns),
        "role_drift_regenerations": sum(m.counts.role_drift_regenerations for m in ours),
        "verified_share": _share(sum(m.verification_asked for m in ours), len(ours)),
        "intent_axes": {
            "domains": _mean([len(m.intent.domains) for m in ours]),
            "tasks": _mean([len(m.intent.tasks) for m in ours]),
            "tools": _mean([len(m.intent.tools_used) + len(m.intent.skills_used) for m in ours]),
        },
        "complexity": dict(Counter(m.intent.complexity for m in ours)),
        "domains": dict(domains.most_common()),
        "tools": dict(tools.most_common()),
        "tasks": dict(tasks.most_common()),
        "domain_x_tool": dict(domain_tools.most_common()),
    }
    table = prices or load_prices()
    stats["cost"] = summarize_costs(((r.verdict, record_cost(r.meta, table)) for r in records), table)
    return stats


def stats_path_for(target: Path) -> Path:
    """Where ``ise stats TARGET`` saves: ``stats.json`` in a folder, ``<name>.stats.json`` beside a file."""
    return target / "stats.json" if target.is_dir() else target.with_name(f"{target.stem}.stats.json")


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
    """Compute a run folder's statistics (successful trajectories, and ``all`` verdicts nested)
    plus ``extra``, and save them as ``run_dir/stats.json``."""
    records = read_summaries(shard_files(run_dir), log.warning)
    prices = load_prices()
    stats = {**compute_stats(records, prices=prices), "all": compute_stats(records, "all", prices)}
    return save_stats(run_dir / "stats.json", {**stats, **(extra or {})})
