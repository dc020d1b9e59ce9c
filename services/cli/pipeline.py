"""A local pipeline run: start the long-running services as processes, run the intent job, wait
until every accepted intent has a final verdict, stop the services, write statistics.

Used by ``ise run`` and by the end-to-end test, so both exercise the same processes.

Grounding: unless the environment says otherwise, the executor's gRPC Workspaces API gets a free
loopback port and the simulator is pointed at it (``ISE_SIM_WORKSPACES_ADDR``), so the user model
sees the real workspace state.  Only the first executor replica binds that port; further
replicas get port 0 (any port) and the first one answers ``Inspect`` for every episode, since
workspaces are found by name in Docker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from services.common.settings import RedisSettings
from services.common.state import RunProgress, StateStore
from services.dedup.stats import write_stats
from services.intent.settings import IntentSettings
from services.stack.procs import StackError, free_port, log_tail, spawn, stop

log = logging.getLogger(__name__)

LONG_RUNNING = ("dedup", "simulator", "executor")


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    progress: dict[str, int | str]
    stats_path: Path
    seconds: float
    logs: dict[str, Path] = field(default_factory=dict)


def with_workspaces_grounding(env: dict[str, str]) -> dict[str, str]:
    """``env`` plus a fixed executor gRPC port and the simulator's address for it (kept if set)."""
    env = dict(env)
    if env.get("ISE_EXEC_GRPC_ENABLED", "true").lower() in ("0", "false", "no", "off"):
        return env
    host = env.get("ISE_EXEC_GRPC_HOST", "127.0.0.1")
    if "ISE_EXEC_GRPC_PORT" not in env:
        env["ISE_EXEC_GRPC_PORT"] = str(free_port(host))
    port = env["ISE_EXEC_GRPC_PORT"]
    if port != "0" and "ISE_SIM_WORKSPACES_ADDR" not in env:
        env["ISE_SIM_WORKSPACES_ADDR"] = f"{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
        if env.get("ISE_EXEC_GRPC_TOKEN"):
            env.setdefault("ISE_SIM_WORKSPACES_TOKEN", env["ISE_EXEC_GRPC_TOKEN"])
    return env


def run_finished(p: dict[str, int | str]) -> bool:
    """Every proposed intent decided, and every accepted one has its final verdict."""
    get = lambda k: int(p.get(k, 0))
    decided = get("accepted") + get("rejected") >= get("proposed")
    return bool(get("intents_done")) and decided and get("episodes_final") >= get("accepted")


class LocalPipeline:
    """The three consuming services as child processes sharing one environment."""

    def __init__(self, env: dict[str, str], log_dir: Path, replicas: dict[str, int] | None = None) -> None:
        self.env = env
        self.log_dir = log_dir
        self.replicas = {name: 1 for name in LONG_RUNNING} | (replicas or {})
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        for name in LONG_RUNNING:
            for i in range(self.replicas[name]):
                extra = {"ISE_EXEC_GRPC_PORT": "0"} if name == "executor" and i > 0 else None  # one binds the port
                self.start_one(name, f"{name}-{i}", extra)

    def start_one(self, service: str, label: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "services.cli.main", "service", service]
        proc = spawn(argv, log_path=self.log_dir / f"{label}.log", env={**self.env, **(extra_env or {})})
        self.procs[label] = proc
        return proc

    def kill(self, label: str) -> None:
        """SIGKILL one process (a crash, not a clean stop) and forget it."""
        proc = self.procs.pop(label)
        proc.kill()
        proc.wait(timeout=10)

    def check_alive(self) -> None:
        """Raise with its log tail if a service died (a finished job with exit code 0 is fine)."""
        for label, proc in self.procs.items():
            code = proc.poll()
            if code is not None and not (label.endswith("-job") and code == 0):
                path = self.log_dir / f"{label}.log"
                raise StackError(f"service {label} exited with code {proc.returncode}\n{log_tail(path, 30)}")

    def stop(self) -> None:
        for proc in self.procs.values():
            stop(proc.pid, timeout_s=20)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log.warning("process %s did not exit", proc.pid)
        self.procs.clear()


async def wait_for_run(
    store: StateStore,
    run_id: str,
    pipeline: LocalPipeline,
    timeout_s: float,
    poll_s: float = 0.5,
) -> dict[str, int | str]:
    progress = RunProgress(store, run_id)
    deadline = time.monotonic() + timeout_s
    bar = tqdm(desc="episodes", unit="episode", disable=None)
    try:
        while True:
            snap = await progress.snapshot()
            bar.total = int(snap.get("accepted", 0)) or None
            bar.n = int(snap.get("episodes_final", 0))
            bar.refresh()
            if run_finished(snap):
                return snap
            pipeline.check_alive()
            if time.monotonic() > deadline:
                raise StackError(
                    f"run {run_id} not finished after {timeout_s:.0f}s; progress {snap}; logs in {pipeline.log_dir}"
                )
            await asyncio.sleep(poll_s)
    finally:
        bar.close()


async def wait_for_diversity(store: StateStore, run_id: str, accepted: int, timeout_s: float = 15.0) -> dict:
    """The gate's Vendi report of the run once it covers every accepted intent (the gate writes it
    at most once a second, so a fast run can finish first); the latest one, with a warning, if not."""
    deadline = time.monotonic() + timeout_s
    report: dict = {}
    while True:
        raw = await store.redis.get(store.key("run", run_id, "diversity"))
        report = json.loads(raw) if raw else {}
        if int((report.get("overall") or {}).get("n", 0)) >= accepted or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    if int((report.get("overall") or {}).get("n", 0)) < accepted:
        log.warning("diversity report of %s covers %s of %d accepted intents", run_id, report.get("overall"), accepted)
    return report


async def run_pipeline(
    run_id: str, env: dict[str, str], out_dir: Path, intents: IntentSettings, timeout_s: float
) -> RunResult:
    """Run one generation end to end with the services in ``env`` (Kafka, Redis, LLM settings)."""
    started = time.monotonic()
    run_dir = out_dir / run_id
    log_dir = run_dir / "logs"
    env = with_workspaces_grounding({**env, "ISE_DEDUP_DATASET_DIR": str(out_dir)})
    pipeline = LocalPipeline(env, log_dir)
    store = StateStore(RedisSettings(**_redis_overrides(env)))
    pipeline.start()
    try:
        pipeline.start_one(
            "intent",
            "intent-job",
            {
                "ISE_RUN_ID": run_id,
                "ISE_INTENT_COUNT": str(intents.count),
                "ISE_INTENT_SEED": str(intents.seed),
                "ISE_INTENT_CONCURRENCY": str(intents.concurrency),
            },
        )
        snap = await wait_for_run(store, run_id, pipeline, timeout_s)
        diversity = await wait_for_diversity(store, run_id, int(snap.get("accepted", 0)))
    finally:
        pipeline.stop()
        await store.close()
    run_dir.mkdir(parents=True, exist_ok=True)
    stats = write_stats(run_dir, {"run_id": run_id, "progress": snap, "intent_diversity": diversity})
    logs = {p.stem: p for p in sorted(log_dir.glob("*.log"))}
    return RunResult(run_id, run_dir, snap, stats, time.monotonic() - started, logs)


def _redis_overrides(env: dict[str, str]) -> dict[str, str]:
    fields = {"ISE_REDIS_URL": "url", "ISE_REDIS_KEY_PREFIX": "key_prefix"}
    return {name: env[var] for var, name in fields.items() if var in env}
