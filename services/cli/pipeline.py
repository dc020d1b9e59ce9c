"""A local pipeline run: start the long-running services as processes, run the intent job, wait
until every accepted intent has a final verdict, stop the services, write statistics.

Used by ``ise run`` and by the end-to-end test, so both exercise the same processes.

Isolation: the services a run starts are scoped to it (``ISE_KAFKA_RUN_SCOPE``): they consume
only that run's events, in consumer groups of their own that start at the run's start, so two
runs at once on one stack, or a run after an aborted one, each write exactly their own records.
The executor's gRPC port gets a fresh random token per run (the simulator gets the same one),
so no other local process can reach the run's workspaces.

Grounding: unless the environment says otherwise, the executor's gRPC Workspaces API gets a free
loopback port and the simulator is pointed at it (``ISE_SIM_WORKSPACES_ADDR``), so the user model
sees the real workspace state.  Only the first executor replica binds that port; further
replicas get a free port each (so external agents can reach any of them), and the simulator asks
each in turn for ``Inspect`` (a replica on another Docker host answers NOT_FOUND and passes on).
With ``docker_hosts`` the executor replicas use those Docker daemons, round robin; the run's
leftover workspaces are removed from each of them at the end.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from services.cli.supervisor import LONG_RUNNING, LocalPipeline
from services.common.retry import is_outage
from services.common.settings import KafkaSettings, RedisSettings, settings_env
from services.common.state import RunProgress, StateStore
from services.dedup.stats import write_stats
from services.intent.settings import IntentSettings
from services.stack.procs import StackError, free_port

log = logging.getLogger(__name__)

__all__ = ["LONG_RUNNING", "LocalPipeline", "RunResult", "run_pipeline", "wait_for_run", "with_workspaces_grounding"]


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
    env.setdefault("ISE_EXEC_GRPC_TOKEN", secrets.token_urlsafe(24))
    if port != "0" and "ISE_SIM_WORKSPACES_ADDR" not in env:
        env["ISE_SIM_WORKSPACES_ADDR"] = f"{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
        if env.get("ISE_EXEC_GRPC_TOKEN"):
            env.setdefault("ISE_SIM_WORKSPACES_TOKEN", env["ISE_EXEC_GRPC_TOKEN"])
    return env


def scoped_to(env: dict[str, str], run_id: str) -> dict[str, str]:
    """``env`` for services that serve only ``run_id``, with consumer groups starting now."""
    scope = KafkaSettings.model_construct(run_scope=run_id, run_started_ms=int(time.time() * 1000))
    return {**env, **settings_env(scope)}


def run_finished(p: dict[str, int | str]) -> bool:
    """Every proposed intent decided, and every accepted one has its final verdict."""

    def get(key: str) -> int:
        return int(p.get(key, 0))

    decided = get("accepted") + get("rejected") >= get("proposed")
    return bool(get("intents_done")) and decided and get("episodes_final") >= get("accepted")


async def wait_for_run(
    store: StateStore,
    run_id: str,
    pipeline: LocalPipeline,
    timeout_s: float,
    poll_s: float = 0.5,
) -> dict[str, int | str]:
    progress = RunProgress(store, run_id)
    deadline = time.monotonic() + timeout_s
    bar = tqdm(desc="finished", unit="episode", disable=None)
    snap: dict[str, int | str] = {}
    try:
        while True:
            try:
                snap = await progress.snapshot()
            except Exception as exc:  # Redis restarting: the services wait it out, and so do we
                if not is_outage(exc):
                    raise
                log.warning("progress unavailable (%s: %s); retrying", type(exc).__name__, exc)
                pipeline.check_alive()
                if time.monotonic() > deadline:
                    raise StackError(f"run {run_id}: Redis unreachable at the deadline ({exc})") from exc
                await asyncio.sleep(max(poll_s, 1.0))
                continue
            show_stages(bar, snap)
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


def show_stages(bar: tqdm, snap: dict[str, int | str]) -> None:
    """The run's stages on one line: finished of accepted (with rate and ETA), then proposed,
    accepted and in flight (attempts started, minus those retried or ended) from the progress counters."""

    def get(key: str) -> int:
        return int(snap.get(key, 0))

    in_flight = max(0, get("episodes_started") - get("infra_retries") - get("episodes_final"))
    bar.total = get("accepted") or None
    bar.set_postfix_str(
        f"proposed {get('proposed')} → accepted {get('accepted')} → in flight {in_flight}", refresh=False
    )
    bar.update(get("episodes_final") - bar.n)


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
    run_id: str,
    env: dict[str, str],
    out_dir: Path,
    intents: IntentSettings,
    timeout_s: float,
    executors: int = 1,
    on_listening: Callable[[list[str]], None] | None = None,
    docker_hosts: list[str] | None = None,
) -> RunResult:
    """Run one generation end to end with the services in ``env`` (Kafka, Redis, LLM settings),
    ``executors`` executor replicas (on ``docker_hosts``, round robin, if given); ``on_listening``
    gets their gRPC addresses once they start."""

    async def intent_job(pipeline: LocalPipeline, store: StateStore) -> dict[str, Any]:
        pipeline.start_one("intent", "intent-job", {"ISE_RUN_ID": run_id, **settings_env(intents)})
        snap = await wait_for_run(store, run_id, pipeline, timeout_s)
        diversity = await wait_for_diversity(store, run_id, int(snap.get("accepted", 0)))
        return {"progress": snap, "intent_diversity": diversity}

    return await run_services(run_id, env, out_dir, intent_job, executors, on_listening, docker_hosts)


async def run_services(
    run_id: str,
    env: dict[str, str],
    out_dir: Path,
    work: Callable[[LocalPipeline, StateStore], Awaitable[dict[str, Any]]],
    executors: int = 1,
    on_listening: Callable[[list[str]], None] | None = None,
    docker_hosts: list[str] | None = None,
) -> RunResult:
    """Start dedup, simulator and ``executors`` executors scoped to ``run_id``, run ``work`` (start
    the run's work and wait for it: the intent job for ``ise run``, published tasks for ``ise replay
    --regenerate``; it returns the run's extra stats, ``progress`` included), stop everything,
    remove the run's workspaces and write ``stats.json``."""
    started = time.monotonic()
    run_dir = out_dir / run_id
    log_dir = run_dir / "logs"
    env = scoped_to(with_workspaces_grounding({**env, "ISE_DEDUP_DATASET_DIR": str(out_dir)}), run_id)
    pipeline = LocalPipeline(env, log_dir, replicas={"executor": executors}, docker_hosts=docker_hosts)
    store = StateStore(RedisSettings(**_redis_overrides(env)))
    _cancel_on_sigterm()
    pipeline.start()
    addresses = pipeline.grpc_addresses()
    if env.get("ISE_EXEC_AGENT") == "external":
        log.info("%s", external_agent_hint(env, addresses))
    if on_listening is not None:
        on_listening(addresses)
    try:
        extra = await work(pipeline, store)
    finally:
        pipeline.stop()
        await store.close()
        for host in pipeline.executor_docker_hosts():
            await asyncio.to_thread(remove_run_workspaces, env, run_id, host)
    run_dir.mkdir(parents=True, exist_ok=True)
    stats = write_stats(run_dir, {"run_id": run_id, **extra})
    logs = {p.stem: p for p in sorted(log_dir.glob("*.log"))}
    return RunResult(run_id, run_dir, extra.get("progress", {}), stats, time.monotonic() - started, logs)


def external_agent_hint(env: dict[str, str], addresses: list[str]) -> str:
    """How to connect agents to this run: the Episodes addresses, the token, and a ready command
    for the example agent on the run's own agent LLM endpoint (scripted or local model included)."""
    try:
        callers = json.loads(env.get("ISE_EXEC_GRPC_CALLER_TOKENS") or "{}")
    except ValueError:
        callers = {}
    token = next(iter(callers.values())) if len(callers) == 1 else "<a token of ISE_EXEC_GRPC_CALLER_TOKENS>"
    if not callers and env.get("ISE_EXEC_GRPC_TOKENS_FILE"):
        token = f"<a token of {env['ISE_EXEC_GRPC_TOKENS_FILE']}>"
    llm = ""
    if env.get("ISE_LLM_AGENT_BASE_URL"):
        llm = f" --llm-base-url {env['ISE_LLM_AGENT_BASE_URL']} --llm-model {env.get('ISE_LLM_AGENT_MODEL', '')}"
    commands = [
        f"  python -m services.clients.example_agent --target {address} --token {token}{llm}" for address in addresses
    ]
    head = (
        f"episodes wait for external agents on ise.v1.Episodes at {' or '.join(addresses)}; "
        "any replica serves any agent. E.g. one example agent per address:"
    )
    return "\n".join([head, *commands])


def remove_run_workspaces(env: dict[str, str], run_id: str, docker_host: str | None = None) -> int:
    """Remove the workspaces the run's executors left on ``docker_host`` (default: the environment's
    daemon; episodes cut short by a stop or an error): the run's services are gone, nobody else
    will resume them. Returns how many were removed."""
    from services.executor.settings import ExecutorSettings
    from services.executor.workspace.docker_backend import DockerWorkspaceBackend
    from services.stack.docker_daemon import client_for

    defaults = ExecutorSettings.model_construct()
    prefix = env.get("ISE_EXEC_CONTAINER_PREFIX") or defaults.container_prefix
    try:
        client = client_for(docker_host)
    except Exception as exc:  # Docker gone: the reaper of a later executor removes them
        log.warning("could not reach %s to remove run %s's workspaces: %s", docker_host or "Docker", run_id, exc)
        return 0
    backend = DockerWorkspaceBackend(defaults.image, defaults.limits(), name_prefix=prefix, client=client)
    try:
        left = backend.list_workspaces(run_id)  # this backend only lists and removes
        for info in left:
            backend.close(info.episode_id)
    except Exception as exc:
        log.warning("could not remove run %s's workspaces on %s: %s", run_id, docker_host or "Docker", exc)
        return 0
    finally:
        client.close()
    if left:
        log.info("removed %d workspace(s) of run %s left by its stop", len(left), run_id)
    return len(left)


def _cancel_on_sigterm() -> None:
    """SIGTERM cancels the run like Ctrl-C does, so the ``finally`` stops every child."""
    task = asyncio.current_task()
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)


def _redis_overrides(env: dict[str, str]) -> dict[str, Any]:
    fields = {"ISE_REDIS_URL": "url", "ISE_REDIS_KEY_PREFIX": "key_prefix"}
    return {name: env[var] for var, name in fields.items() if var in env}
