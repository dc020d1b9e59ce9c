"""``ise replay --rebuild`` and ``--rescore``: a run's dataset and its figures, from the log alone.

Owns: which finished trajectories become dataset lines (the sink's rules, :func:`sink_choice`),
rewriting a run's dataset from ``ise.trajectories.finished`` through the same ``training_record``,
sidecars and exactly-once ``DatasetWriter`` the sink uses (so the record lines come back byte for
byte and a second rebuild writes nothing), and recomputing a run's statistics and the Vendi
Score of its accepted intents (``ise.tasks``) without reading ``out/`` at all.

Shard names: the writer names shards after the host (``trajectories-<host>-<n>.jsonl``), as
the sink does, so on the machine that made the run the names come back too (on another host,
under its name). The order of the lines inside a shard may differ: the log does not record the
order in which the sink consumed its partitions, so a rebuild writes in publish order (record
timestamps). Each line is byte for byte the sink's; compare shards as sets of lines.
"""

from __future__ import annotations

import socket
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.cli.replay_log import first_tasks, require_run, scan
from services.common.contracts.events import TaskReady, TrajectoryFinished
from services.common.settings import KafkaSettings
from services.common.steering import CELL_GROUP, cell_label
from services.dedup.embedder import Embedder, build_embedder
from services.dedup.record import training_record
from services.dedup.record_reader import summarize
from services.dedup.settings import DedupSettings
from services.dedup.sink import WRITE, sink_choice, write_finished
from services.dedup.stats import compute_stats, save_stats, write_stats
from services.dedup.vendi import VendiByCell
from services.dedup.writer import DatasetWriter, episode_ids_in

SKIPPED = ("retrying", "no_turns", "infrastructure_error")


def sink_records(finished: list[TrajectoryFinished]) -> tuple[list[TrajectoryFinished], Counter[str]]:
    """The events the sink writes, one per episode (the first, as the writer keeps), and how many
    were left out by reason (``duplicate``: a second event of an episode, a redelivery)."""
    chosen: dict[str, TrajectoryFinished] = {}
    left_out: Counter[str] = Counter()
    for event in finished:
        why = sink_choice(event)
        if why != WRITE:
            left_out[why] += 1
        elif event.episode_id in chosen:
            left_out["duplicate"] += 1
        else:
            chosen[event.episode_id] = event
    return list(chosen.values()), left_out


@dataclass
class RebuildReport:
    run_id: str
    run_dir: Path
    events: int
    to_write: int
    written: int = 0
    present: int = 0
    sidecars: int = 0
    left_out: Counter[str] = field(default_factory=Counter)
    stats_path: Path | None = None

    def lines(self, dry_run: bool) -> list[str]:
        skipped = ", ".join(f"{n} {why}" for why, n in sorted(self.left_out.items())) or "none"
        head = f"run {self.run_id}: {self.events} finished trajectories on the log, {self.to_write} are dataset records"
        if dry_run:
            act = (
                f"would write {self.to_write - self.present} record(s) to {self.run_dir} ({self.present} already there)"
            )
        else:
            act = f"wrote {self.written} record(s) and {self.sidecars} web recording(s) to {self.run_dir}"
            act += f" ({self.present} already there)"
        tail = [f"  statistics {self.stats_path}"] if self.stats_path else []
        return [head, f"  {act}", f"  not records (as the sink): {skipped}", *tail]


async def rebuild(kafka: KafkaSettings, dedup: DedupSettings, run_id: str, out: Path, dry_run: bool) -> RebuildReport:
    """Rewrite ``out/<run_id>`` from ``ise.trajectories.finished`` exactly as the sink would, then
    its ``stats.json``; with ``dry_run`` only count. Records already in the folder are kept."""
    finished = await scan(kafka, kafka.topics.trajectories_finished, TrajectoryFinished, run_id)
    require_run(finished)
    writer = DatasetWriter(out, socket.gethostname(), dedup.shard_lines)
    run_dir = writer.run_dir(run_id)
    chosen, left_out = sink_records(finished.events)
    report = RebuildReport(run_id, run_dir, len(finished.events), len(chosen), left_out=left_out)
    present = episode_ids_in(run_dir)
    report.present = sum(1 for e in chosen if e.episode_id in present)
    if dry_run:
        return report
    for event in chosen:
        if write_finished(writer, event):
            report.written += 1
            report.sidecars += 1 if event.web else 0
    run_dir.mkdir(parents=True, exist_ok=True)
    report.stats_path = write_stats(run_dir, {"run_id": run_id})
    return report


def run_statistics(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures ``stats.json`` holds for these records (successful ones, ``all`` nested)."""
    summaries = [summarize(r) for r in records]
    return {**compute_stats(summaries), "all": compute_stats(summaries, "all")}


def intent_diversity(tasks: list[TaskReady], embedder: Embedder) -> dict[str, Any]:
    """Exact Vendi (q=1, 2, inf) of the accepted intents, overall and per domain, complexity and
    domain x complexity cell: the report the gate keeps for a run (``stats.json``'s ``intent_diversity``)."""
    if not tasks:
        return {"overall": {"n": 0}}
    vectors = embedder.encode([t.intent.text for t in tasks])
    cells = VendiByCell(embedder.dim)
    labels = []
    for task in tasks:
        domains = [d.id for d in task.intent.domains]
        complexity = task.intent.complexity
        labels.append(
            {"domain": domains, "complexity": complexity, CELL_GROUP: [cell_label(d, complexity) for d in domains]}
        )
    return cells.add(vectors, labels).report()


@dataclass
class RescoreReport:
    run_id: str
    trajectories: int
    records: int
    intents: int
    result: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


async def rescore(
    kafka: KafkaSettings,
    dedup: DedupSettings,
    run_id: str,
    out: Path,
    dry_run: bool,
    embedder: Embedder | None = None,
) -> RescoreReport:
    """The run's statistics (from the records the sink would write) and its intents' Vendi Score
    (``ise.tasks``: first attempts, one per intent), saved as ``out/<run_id>/rescore.json``."""
    finished = await scan(kafka, kafka.topics.trajectories_finished, TrajectoryFinished, run_id)
    tasks = await scan(kafka, kafka.topics.tasks, TaskReady, run_id)
    require_run(tasks, finished)
    chosen, _ = sink_records(finished.events)
    accepted = first_tasks(tasks.events)
    report = RescoreReport(run_id, len(finished.events), len(chosen), len(accepted))
    if dry_run:
        return report
    model = embedder or build_embedder(dedup)
    try:
        diversity = intent_diversity(accepted, model)
    finally:
        if embedder is None:
            model.close()
    report.result = {
        "run_id": run_id,
        "from": [kafka.topics.trajectories_finished, kafka.topics.tasks],
        "stats": run_statistics([training_record(e) for e in chosen]),
        "intent_diversity": diversity,
        "embedding_model": model.name,
    }
    run_dir = DatasetWriter(out, "rescore").run_dir(run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    report.path = save_stats(run_dir / "rescore.json", report.result)
    return report
