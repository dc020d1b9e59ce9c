"""``ise replay --regenerate``: Stages 2-3 again for a run's accepted tasks, into a new run.

Owns: choosing the tasks (the source run's ``TaskReady`` events on ``ise.tasks``, first attempts,
one per intent id, filtered by domain, complexity, intent id and the source run's final verdict
on ``ise.trajectories.finished``); the new run id (``<source>-regen-<hash of the source and the
filters>`` unless given) and the episode ids (a hash of the source run, the new run and the
intent id), so the same replay makes the same ids; and running them. The long-running services
(dedup, simulator, executor) start scoped to the new run as ``ise run`` starts them
(``ISE_KAFKA_RUN_SCOPE``: their own consumer groups, from the run's start), under the current
settings and models; Stage 1 and the gate are skipped: the tasks are published on ``ise.tasks``
directly, and the run's progress counters (``proposed``, ``accepted``, ``intents_done``) are set
as the intent job and the gate would set them, so ``wait_for_run`` knows when it is done.

Exactly once: when every chosen task already has its record in ``out/<new run>``, nothing is
started. Otherwise the same tasks (same event and episode ids) are published again; the
simulator treats a task it already started as a redelivery, and the writer keeps one record per
episode, so nothing is written twice.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from services.cli.pipeline import LocalPipeline, RunResult, run_services, wait_for_run
from services.cli.replay_log import final_verdicts, first_tasks, require_run, scan
from services.common.bus import EventBus, ensure_topics
from services.common.contracts.events import TaskReady, TrajectoryFinished
from services.common.errors import ConfigError
from services.common.ids import Stamp, digest
from services.common.settings import KafkaSettings, RedisSettings, settings_env
from services.common.state import RunProgress, StateStore
from services.dedup.writer import DatasetWriter, episode_ids_in

SOURCE_CHARS = 100
"""Of the source run id in a derived run id (a safe id has at most 128 characters)."""


@dataclass(frozen=True)
class Filters:
    """Which accepted tasks to regenerate; an empty axis keeps every task, values on one axis are alternatives."""

    domains: tuple[str, ...] = ()
    complexities: tuple[str, ...] = ()
    verdicts: tuple[str, ...] = ()
    intents: tuple[str, ...] = ()

    def keep(self, task: TaskReady, verdicts: dict[str, str]) -> bool:
        intent = task.intent
        return (
            (not self.domains or bool({d.id for d in intent.domains} & set(self.domains)))
            and (not self.complexities or intent.complexity in self.complexities)
            and (not self.verdicts or verdicts.get(intent.intent_id, "none") in self.verdicts)
            and (not self.intents or intent.intent_id in self.intents)
        )

    def label(self) -> str:
        """A short hash of the filters (order and repeats do not matter)."""
        axes = (self.domains, self.complexities, self.verdicts, self.intents)
        return digest(*(sorted(set(axis)) for axis in axes), length=8)

    def describe(self) -> str:
        named = [
            f"{name} {'|'.join(values)}"
            for name, values in (
                ("domain", self.domains),
                ("complexity", self.complexities),
                ("verdict", self.verdicts),
                ("intent", self.intents),
            )
            if values
        ]
        return ", ".join(named) or "none"


def derived_run_id(source: str, filters: Filters) -> str:
    """The default new run id: the same source and filters always give the same one."""
    return f"{source[:SOURCE_CHARS]}-regen-{digest('regen', source, filters.label(), length=10)}"


def regen_episode_id(source: str, new_run: str, intent_id: str) -> str:
    """The first episode of ``intent_id`` in the regenerated run (retries get the simulator's ids)."""
    return "ep-" + digest("regen", source, new_run, intent_id)


@dataclass
class RegenPlan:
    source: str
    new_run: str
    filters: Filters
    accepted: int
    tasks: list[TaskReady]
    written: int
    run_dir: Path

    @property
    def done(self) -> bool:
        return self.written >= len(self.tasks)

    def lines(self) -> list[str]:
        return [
            f"regenerate run {self.source} into run {self.new_run}",
            f"  tasks      {len(self.tasks)} of the {self.accepted} accepted task(s) (filters: {self.filters.describe()})",
            "  stages     simulator and executor under the current settings and models; the gate is skipped",
            f"  dataset    {self.run_dir} ({self.written} of these already written)",
        ]


async def plan_regeneration(
    kafka: KafkaSettings, source: str, new_run: str | None, filters: Filters, out: Path
) -> RegenPlan:
    """Read the source run's accepted tasks (and its verdicts, when filtered by them) and build
    the new run's tasks; nothing is published."""
    new_run = new_run or derived_run_id(source, filters)
    if new_run == source:
        raise ConfigError(f"--new-run-id {new_run!r} is the source run itself; regenerate into another run id")
    tasks = await scan(kafka, kafka.topics.tasks, TaskReady, source)
    require_run(tasks)
    verdicts: dict[str, str] = {}
    if filters.verdicts:
        finished = await scan(kafka, kafka.topics.trajectories_finished, TrajectoryFinished, source)
        verdicts = final_verdicts(finished.events)
    accepted = first_tasks(tasks.events)
    unknown = sorted(set(filters.intents) - {t.intent.intent_id for t in accepted})
    if unknown:
        raise ConfigError(
            f"intent id(s) {', '.join(unknown)} are not accepted tasks of run {source} "
            f"(it has {len(accepted)}; `ise intents export --run-id {source} --out FILE` lists them)"
        )
    spanned = {d.id for t in accepted for d in t.intent.domains}
    absent = sorted(set(filters.domains) - spanned)
    if absent:
        raise ConfigError(
            f"domain(s) {', '.join(absent)} are in none of run {source}'s {len(accepted)} accepted task(s); "
            f"its domains: {', '.join(sorted(spanned)) or 'none'}"
        )
    stamp = Stamp(f"replay@{socket.gethostname()}:{os.getpid()}")
    chosen = []
    for task in accepted:
        if filters.keep(task, verdicts):
            ep = regen_episode_id(source, new_run, task.intent.intent_id)
            envelope = stamp.envelope("task", new_run, ep)
            chosen.append(TaskReady(**envelope, episode_id=ep, attempt=0, intent=task.intent, seed=task.seed))
    run_dir = DatasetWriter(out, "regen").run_dir(new_run)
    present = episode_ids_in(run_dir)
    written = sum(1 for t in chosen if t.episode_id in present)
    return RegenPlan(source, new_run, filters, len(accepted), chosen, written, run_dir)


async def publish_tasks(kafka: KafkaSettings, store: StateStore, plan: RegenPlan) -> None:
    """Publish the plan's tasks on ``ise.tasks`` (key: episode id) and count them as proposed and
    accepted in the new run's progress, then mark its intents done (as the intent job does)."""
    await ensure_topics(kafka)
    bus = EventBus(kafka, "replay")
    progress = RunProgress(store, plan.new_run)
    await bus.broker.start()
    try:
        for task in tqdm(plan.tasks, desc="tasks", unit="task", disable=None):
            await progress.count_once("proposed", task.intent.intent_id)
            await progress.count_once("accepted", task.intent.intent_id)
            await bus.publish(task, kafka.topics.tasks, task.episode_id)
    finally:
        await bus.broker.stop()
    await progress.set("intents_done", 1)


async def run_regeneration(
    plan: RegenPlan,
    env: dict[str, str],
    kafka: KafkaSettings,
    redis: RedisSettings,
    timeout_s: float,
) -> RunResult:
    """Start dedup, simulator and executor scoped to the new run with ``env`` (LLM and stack
    settings; Redis as ``redis`` says), publish the tasks, wait until each has its final verdict,
    stop, write stats (``pipeline.run_services``, the path ``ise run`` takes too)."""

    async def publish_and_wait(pipeline: LocalPipeline, store: StateStore) -> dict[str, object]:
        await publish_tasks(kafka, store, plan)
        snap = await wait_for_run(store, plan.new_run, pipeline, timeout_s)
        return {"progress": snap, "regenerated_from": plan.source}

    env = {**env, **settings_env(redis)}
    return await run_services(plan.new_run, env, plan.run_dir.parent, publish_and_wait)
