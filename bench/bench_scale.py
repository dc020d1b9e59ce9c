"""Trajectories per hour against executor replicas, with an LLM that answers after a fixed delay.

For each level N (default 1, 2, 4, 8) the real pipeline runs (``run_services``: dedup, simulator,
N executor replicas as processes, then the intent job) on topics of its own, with the scripted
LLM answering every call after ``--delay`` seconds, ``ISE_EXEC_CONCURRENCY`` per replica and a
simulator of the matching total concurrency (N x per replica). Reported: trajectories per hour
from the intent job's start to the last verdict, its ratio to ideal linear scaling (N x the
1-replica rate), the milestones of the run (first intent accepted, first and last verdict), and
per process CPU seconds and peak RSS (``/proc``), plus the machine's busy share and its busy CPU
seconds per trajectory, with the ceiling they imply (all CPUs x 3600 / CPU seconds per trajectory:
the rate at which a CPU-bound machine can go no faster, whatever the replicas).

Baseline, same process, same LLM server and delay, same real Docker workspaces (a warm pool, as
the executor has): the tasks the pipeline accepted, as single-process asyncio episodes at the
same concurrency (N x per replica episodes at once): the simulator's ``TurnLogic`` and
``UserModel``, the executor's ``TurnLogic`` and ``run_turn``, the same Inspect of the workspace
after each agent turn, with no Kafka, Redis or process hop. Its machine-wide CPU seconds per
trajectory are measured the same way (the loop and dockerd; no gate, so no embedding model).

    .venv/bin/python bench/bench_scale.py                  # 1, 2, 4, 8 replicas; >= ~60 s each
    .venv/bin/python bench/bench_scale.py --quick          # smoke: 1 and 2 replicas, ~15 s each
    .venv/bin/python bench/bench_scale.py --levels 1 --delay 0 --intents 40 --no-baseline

Uses the embedded stack (started if needed); the topics it makes are deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from proc_usage import Usage, machine_busy, pid_from_file

from services.cli.pipeline import run_services, wait_for_run
from services.cli.supervisor import LocalPipeline
from services.common.bus import ensure_topics
from services.common.contracts.events import TaskReady, UserTurn
from services.common.errors import ConfigError
from services.common.ids import Stamp, new_run_id
from services.common.llm.client import LLMClient
from services.common.llm.scripted_server import ScriptedLLMServer
from services.common.replay import read_to_end
from services.common.settings import KafkaSettings, LLMSettings
from services.common.state import RunProgress, StateStore
from services.executor.agent_loop import LoopConfig, run_turn
from services.executor.episode import ExecEpisode
from services.executor.runtime_prompt import AgentWorld
from services.executor.settings import ExecutorSettings
from services.executor.tools import Toolbox, tool_schemas
from services.executor.turns import TurnLogic as ExecLogic
from services.executor.workspace.docker_backend import DockerWorkspaceBackend
from services.executor.workspace.inspect import inspect_workspace, mark_episode_start
from services.executor.workspace.pool import WarmPool
from services.simulator.episode import SimEpisode
from services.simulator.settings import SimulatorSettings
from services.simulator.turns import TurnLogic as SimLogic
from services.simulator.user_model import UserModel, agent_view
from services.stack import stack
from services.stack.docker_daemon import state_dir
from services.stack.procs import ServerRecord

SCENARIO = "default"
EPISODE_CALLS = 10
"""LLM calls per episode of the default scenario (intent, 3 user decisions, 2 per agent turn): sizes runs."""
MILESTONES = ("accepted", "episodes_started", "episodes_final")


@dataclass
class Level:
    replicas: int
    concurrency: int
    intents: int
    trajectories: int = 0
    run_s: float = 0.0  # intent job start -> last verdict
    total_s: float = 0.0  # services start -> everything stopped
    startup_s: float = 0.0
    milestones: dict[str, float] = field(default_factory=dict)
    usage: dict[str, Usage] = field(default_factory=dict)
    busy_share: float = 0.0
    episode_s: list[float] = field(default_factory=list)
    baseline_s: float = 0.0
    baseline_done: int = 0
    busy_cpu_s: float = 0.0  # the whole machine's busy CPU seconds over the level (services start -> stop)
    baseline_cpu_s: float = 0.0  # the same over the baseline's run

    @property
    def rate(self) -> float:
        return self.trajectories / self.run_s * 3600 if self.run_s else 0.0

    @property
    def steady_rate(self) -> float:
        """Between the first and the last verdict: the rate once the services are up and fed."""
        span = self.run_s - self.milestones.get("episodes_final", self.run_s)
        return (self.trajectories - 1) / span * 3600 if span > 0 else 0.0

    @property
    def baseline_rate(self) -> float:
        return self.baseline_done / self.baseline_s * 3600 if self.baseline_s else 0.0

    @property
    def cpu_per_trajectory(self) -> float:
        return self.busy_cpu_s / self.trajectories if self.trajectories else math.nan

    @property
    def baseline_cpu_per_trajectory(self) -> float:
        return self.baseline_cpu_s / self.baseline_done if self.baseline_done else math.nan


def ceiling(cpu_per_trajectory: float) -> float:
    """Trajectories per hour if every CPU of the machine did nothing else (CPU-bound ceiling)."""
    return (os.cpu_count() or 1) * 3600 / cpu_per_trajectory if cpu_per_trajectory > 0 else math.nan


def llm_env(base_url: str) -> dict[str, str]:
    roles = ("intent", "user", "agent")
    env = {f"ISE_LLM_{r.upper()}_BASE_URL": base_url for r in roles}
    env |= {f"ISE_LLM_{r.upper()}_MODEL": f"{SCENARIO}:{r}" for r in roles}
    return env | {f"ISE_LLM_{r.upper()}_API_KEY": "scripted" for r in roles}


def stack_pids() -> dict[str, int]:
    """The shared stack's servers (their CPU includes whatever else uses the stack meanwhile)."""
    found = {name: getattr(ServerRecord.load(state_dir(), name), "pid", None) for name in ("kafka", "redis")}
    found["dockerd"] = pid_from_file(Path("/var/run/docker.pid"))
    return {name: pid for name, pid in found.items() if pid}


class Sampler:
    """Polls the run's progress counters (first time each milestone moved) and the processes' usage."""

    def __init__(self, store: StateStore, run_id: str, pipeline: LocalPipeline, started: float) -> None:
        self.progress = RunProgress(store, run_id)
        self.pipeline = pipeline
        self.started = started
        self.milestones: dict[str, float] = {}
        self.usage: dict[str, Usage] = {}

    def sample_usage(self) -> None:
        for label, proc in list(self.pipeline.procs.items()):
            if (usage := Usage.of(proc.pid)) is not None:  # a peak seen before it exited is kept
                peak = max(usage.peak_rss_mb, getattr(self.usage.get(label), "peak_rss_mb", 0.0))
                self.usage[label] = Usage(usage.cpu_s, peak)

    async def run(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # a Redis hiccup only costs a sample
                snap = await self.progress.snapshot()
                for name in MILESTONES:
                    if int(snap.get(name, 0)) and name not in self.milestones:
                        self.milestones[name] = time.monotonic() - self.started
            self.sample_usage()
            await asyncio.sleep(0.25)


async def system_level(
    level: Level, endpoints: stack.Endpoints, llm_url: str, args: argparse.Namespace
) -> list[TaskReady]:
    """Run the pipeline at ``level``; fill in its numbers; return the tasks it accepted."""
    prefix = f"scale{uuid.uuid4().hex[:6]}"
    kafka = KafkaSettings(bootstrap=endpoints.kafka_bootstrap, topic_prefix=f"{prefix}.", partitions=args.partitions)
    await ensure_topics(kafka)
    env = {
        **endpoints.env(),
        **llm_env(llm_url),
        "ISE_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "ISE_KAFKA_PARTITIONS": str(args.partitions),
        "ISE_EXEC_CONCURRENCY": str(args.per_replica),
        "ISE_SIM_CONCURRENCY": str(level.concurrency),
    }
    run_id = new_run_id()
    stack_before = {name: Usage.of(pid) for name, pid in stack_pids().items()}
    busy0, total0 = machine_busy()
    called = time.monotonic()

    async def work(pipeline: LocalPipeline, store: StateStore) -> dict:
        started = time.monotonic()
        level.startup_s = started - called
        pipeline.start_one("intent", "intent-job", {"ISE_RUN_ID": run_id, "ISE_INTENT_COUNT": str(level.intents)})
        sampler = Sampler(store, run_id, pipeline, started)
        polling = asyncio.create_task(sampler.run())
        try:
            snap = await wait_for_run(store, run_id, pipeline, args.timeout, poll_s=0.25)
        finally:
            polling.cancel()
        level.run_s = time.monotonic() - started
        sampler.sample_usage()
        level.milestones, level.usage = sampler.milestones, sampler.usage
        return {"progress": snap}

    with tempfile.TemporaryDirectory(prefix="bench-scale-") as scratch:
        out = Path(args.out or scratch)  # --out keeps the runs' datasets and service logs
        result = await run_services(run_id, env, out, work, executors=level.replicas)
        level.total_s = time.monotonic() - called
        busy1, total1 = machine_busy()
        level.busy_share = (busy1 - busy0) / (total1 - total0) if total1 > total0 else 0.0
        level.busy_cpu_s = busy1 - busy0
        records = [json.loads(line) for f in result.run_dir.glob("trajectories-*.jsonl") for line in f.open()]
    level.trajectories = len(records)
    level.episode_s = [r["metadata"]["timings"]["duration_ms"] / 1000 for r in records]
    for name, before in stack_before.items():
        after = Usage.of(stack_pids().get(name, 0))
        if before and after:
            level.usage[f"[stack] {name}"] = Usage(after.cpu_s - before.cpu_s, after.peak_rss_mb)
    tasks = {}
    async for record in read_to_end(kafka, kafka.topics.tasks):
        task = TaskReady.model_validate_json(record.value)
        if task.run_id == run_id and task.attempt == 0:
            tasks[task.episode_id] = task
    await delete_topics(kafka)
    return list(tasks.values())


async def delete_topics(kafka: KafkaSettings) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(kafka.topics.all())
    finally:
        await admin.close()


class InProcess:
    """The baseline: the services' own turn logic, one asyncio loop, no Kafka, Redis or process hop."""

    def __init__(self, endpoints: stack.Endpoints, llm_url: str) -> None:
        self.settings = ExecutorSettings(image=endpoints.workspace_image, container_prefix=f"ise-scale{os.getpid()}")
        s = self.settings
        self.backend = DockerWorkspaceBackend(
            s.image, s.limits(), name_prefix=s.container_prefix, shell=s.shell, agent_user=s.agent_user
        )
        self.pool = WarmPool(self.backend, s.pool_size)
        self.world = AgentWorld.load(tool_schemas(s.tools), s.skills_dir, "off")
        stamp = Stamp("bench-scale")
        self.stamp = stamp
        self.sim = SimLogic(SimulatorSettings(), stamp, KafkaSettings().topics)
        self.exe = ExecLogic(stamp, self.world.tools, tuple(self.world.skill_entries()))
        llm = LLMSettings(base_url=llm_url, api_key="scripted", max_retries=0)
        self.agent = LLMClient(llm.model_copy(update={"model": f"{SCENARIO}:agent"}), "agent")
        self.user = UserModel(LLMClient(llm.model_copy(update={"model": f"{SCENARIO}:user"}), "user"))

    def open_workspace(self, episode_id: str, run_id: str) -> str:
        self.backend.create(episode_id, run_id)
        self.world.install(self.backend, episode_id)
        prompt = self.world.prompt(self.backend, episode_id)
        mark_episode_start(self.backend, episode_id)
        return prompt

    async def decide(self, state: SimEpisode) -> None:
        decided = await self.user.decide(state.intent, [(x.query, x.view) for x in state.exchanges])
        self.sim.take_decision(state, decided, self.user.llm.model, datetime.now(UTC))

    async def episode(self, task: TaskReady) -> str:
        episode_id = f"{task.episode_id}-base"
        state = SimEpisode(episode_id=episode_id, run_id=task.run_id, attempt=0, seed=task.seed, intent=task.intent)
        if self.sim.open(state):
            await self.decide(state)
        executor = ExecEpisode(episode_id=episode_id, run_id=task.run_id)
        prompt = await asyncio.to_thread(self.open_workspace, episode_id, task.run_id)
        self.exe.with_system_prompt(executor, prompt)
        try:
            while state.verdict is None:
                query = state.exchanges[-1].query
                head = self.stamp.envelope("user", task.run_id, episode_id, state.turn)
                event = UserTurn(**head, episode_id=episode_id, turn=state.turn, kind="message", content=query)
                started = time.monotonic()
                toolbox = Toolbox(self.backend, episode_id, tools=self.settings.tools)
                output = await run_turn(self.agent, toolbox, executor.messages, query, LoopConfig())
                turn = self.exe.answered(executor, event, output, int((time.monotonic() - started) * 1000))
                await asyncio.to_thread(inspect_workspace, self.backend, episode_id)  # what Inspect costs
                view = agent_view(turn.reply, turn.digest, turn.error)
                if self.sim.take_agent_turn(state, turn, view, datetime.now(UTC)):
                    await self.decide(state)
        finally:
            await asyncio.to_thread(self.backend.close, episode_id)
        return state.verdict.value if state.verdict else "none"

    async def run(self, tasks: list[TaskReady], concurrency: int) -> float:
        gate = asyncio.Semaphore(concurrency)

        async def one(task: TaskReady) -> str:
            async with gate:
                return await self.episode(task)

        started = time.monotonic()
        await asyncio.gather(*(one(t) for t in tasks))
        return time.monotonic() - started


def report(levels: list[Level], args: argparse.Namespace) -> None:
    load = os.getloadavg()
    print(
        f"\nscripted LLM delay {args.delay:g} s per call; {args.per_replica} episodes at once per executor replica; "
        f"{args.partitions} partitions; {os.cpu_count()} CPUs, load average now {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}"
    )
    one = levels[0].rate / levels[0].replicas if levels else 0.0
    print(
        f"{'N':>2} {'conc':>4} {'traj':>4} {'run s':>6} {'traj/h':>7} {'vs linear':>9} "
        f"{'steady/h':>8} {'base traj/h':>11} {'sys/base':>8} {'ep p50 s':>8} {'busy':>5} {'startup s':>9}"
    )
    for lv in levels:
        linear = lv.rate / (one * lv.replicas) if one else 0.0
        ratio = lv.rate / lv.baseline_rate if lv.baseline_rate else math.nan
        p50 = sorted(lv.episode_s)[len(lv.episode_s) // 2] if lv.episode_s else math.nan
        print(
            f"{lv.replicas:>2} {lv.concurrency:>4} {lv.trajectories:>4} {lv.run_s:>6.1f} {lv.rate:>7.0f} "
            f"{linear:>8.0%} {lv.steady_rate:>8.0f} {lv.baseline_rate:>11.0f} {ratio:>8.2f} {p50:>8.1f} {lv.busy_share:>5.0%} "
            f"{lv.startup_s:>9.1f}"
        )
    print(f"\n{'N':>2} {'CPU s/traj':>10} {'CPU ceiling/h':>13} {'base CPU s/traj':>15} {'base ceiling/h':>14}")
    for lv in levels:
        mine, base = lv.cpu_per_trajectory, lv.baseline_cpu_per_trajectory
        print(f"{lv.replicas:>2} {mine:>10.1f} {ceiling(mine):>13.0f} {base:>15.1f} {ceiling(base):>14.0f}")
    for lv in levels:
        marks = ", ".join(f"first {k} {v:.1f} s" for k, v in lv.milestones.items())
        print(f"\nN={lv.replicas}: {marks}, last verdict {lv.run_s:.1f} s (from the intent job's start)")
        for label, usage in sorted(lv.usage.items()):
            print(f"  {label:22} CPU {usage.cpu_s:7.1f} s  peak RSS {usage.peak_rss_mb:7.0f} MB")


async def main(args: argparse.Namespace) -> None:
    endpoints = stack.up()
    levels = []
    with ScriptedLLMServer(delay_s=args.delay) as llm:
        baseline = InProcess(endpoints, llm.base_url)
        await asyncio.to_thread(baseline.pool.start)
        try:
            for replicas in args.levels:
                concurrency = replicas * args.per_replica
                per_episode = max(EPISODE_CALLS * args.delay, 1.0)
                intents = args.intents or math.ceil(concurrency * args.seconds / per_episode)
                level = Level(replicas, concurrency, intents)
                tasks = await system_level(level, endpoints, llm.base_url, args)
                if not args.no_baseline:
                    busy0, _ = machine_busy()
                    level.baseline_s = await baseline.run(tasks, concurrency)
                    level.baseline_cpu_s = machine_busy()[0] - busy0
                    level.baseline_done = len(tasks)
                levels.append(level)
                report(levels[-1:], args)
        finally:
            await asyncio.to_thread(baseline.pool.stop)
    print("\n=== all levels ===")
    report(levels, args)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,2,4,8", help="executor replica counts, comma-separated")
    parser.add_argument("--delay", type=float, default=1.0, help="seconds the scripted LLM waits per call")
    parser.add_argument("--per-replica", type=int, default=4, help="ISE_EXEC_CONCURRENCY of each replica")
    parser.add_argument("--partitions", type=int, default=12, help="partitions per topic (the product default: 12)")
    parser.add_argument("--seconds", type=float, default=60.0, help="size each level to run about this long")
    parser.add_argument("--intents", type=int, default=0, help="intents per level (default: sized by --seconds)")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up on a level after this many seconds")
    parser.add_argument("--out", default="", help="keep each run's dataset and service logs here")
    parser.add_argument("--no-baseline", action="store_true", help="skip the single-process baseline")
    parser.add_argument("--quick", action="store_true", help="smoke run: levels 1,2 and about 15 s each")
    args = parser.parse_args(argv)
    if args.quick:
        args.levels, args.seconds = "1,2", 15.0
    try:
        args.levels = [int(n) for n in args.levels.split(",")]
    except ValueError:
        parser.error(f"--levels takes whole numbers separated by commas, e.g. 1,2,4,8; not {args.levels!r}")
    if min(args.levels) < 1 or args.delay < 0 or args.per_replica < 1 or args.partitions < 1:
        parser.error("--levels, --per-replica and --partitions must be 1 or more, --delay 0 or more")
    return args


if __name__ == "__main__":
    try:
        asyncio.run(main(parse_args()))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
