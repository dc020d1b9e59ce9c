"""``ise run``: the main job end to end on the embedded stack, with a one-screen summary."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
from pathlib import Path

from services.cli.llm_setup import llm_plan
from services.cli.pipeline import RunResult, run_pipeline
from services.common.errors import ConfigError
from services.common.ids import new_run_id
from services.common.logs import setup_logging
from services.common.settings_check import check_environment
from services.dedup.cost import describe, load_prices
from services.intent.settings import IntentSettings
from services.stack import stack
from services.stack.docker_daemon import answers
from services.stack.workspace_image import copy_workspace_image

log = logging.getLogger("ise.run")


def run_command(args: argparse.Namespace) -> int:
    setup_logging("run")
    check_environment()  # a misspelt ISE_* setting stops the run before anything starts
    load_prices()  # so does a bad price file (ISE_PRICES_FILE), rather than the summary at the end
    run_id = args.run_id or new_run_id()
    out = args.out.resolve()
    docker_hosts = answering_docker_hosts(args.docker_host or [])  # bad input fails before anything starts
    log.info("run %s: bringing up the embedded stack (first time: installs jars, builds the image)", run_id)
    endpoints = stack.up()
    for host in dict.fromkeys(docker_hosts):
        copy_workspace_image(host, endpoints.workspace_image)
    with llm_plan(args.llm, scenario=args.scenario, log_dir=out / run_id / "logs") as plan:
        log.info("LLM: %s - %s", plan.mode, plan.quality)
        env = {**endpoints.env(), **plan.env}
        if args.max_turns:
            env["ISE_SIM_MAX_TURNS"] = str(args.max_turns)
        if args.agent == "external":
            env.update(external_agent_env())
        intents = IntentSettings(count=args.intents, seed=args.seed)
        try:
            result = asyncio.run(
                run_pipeline(
                    run_id, env, out, intents, args.timeout, executors=args.executors, docker_hosts=docker_hosts
                )
            )
        except asyncio.CancelledError:
            log.warning("run %s stopped by SIGTERM; every service it started was stopped", run_id)
            return 143
    print(summary(result, plan.mode, plan.quality, env))
    return 0


def answering_docker_hosts(hosts: list[str]) -> list[str]:
    """``--docker-host`` values, each checked to answer (a ConfigError names the one that does not)."""
    for host in dict.fromkeys(hosts):
        if not answers(host=host):
            raise ConfigError(
                f"--docker-host {host}: no Docker daemon answers there; start it (`ise stack docker-up NAME` "
                "starts an extra local one and prints its DOCKER_HOST) or leave the option out"
            )
    return hosts


def external_agent_env() -> dict[str, str]:
    """Episodes go to external agents over gRPC; unless the user configured callers, one caller
    ``agent`` gets a fresh token, printed with the address once the executor listens."""
    env = {"ISE_EXEC_AGENT": "external"}
    if not (os.environ.get("ISE_EXEC_GRPC_CALLER_TOKENS") or os.environ.get("ISE_EXEC_GRPC_TOKENS_FILE")):
        env["ISE_EXEC_GRPC_CALLER_TOKENS"] = json.dumps({"agent": secrets.token_urlsafe(24)})
    return env


def _vendi_line(report: dict) -> str:
    overall = report.get("overall") or {}
    if not overall:
        return "no accepted intents"
    return f"Vendi {overall['q1']:.2f} (q=1, cosine) over {overall['n']} accepted intents"


def _axes_line(stats: dict) -> str:
    axes = stats.get("intent_axes") or {}
    ours = " x ".join(str(axes.get(k, 0)) for k in ("domains", "tasks", "tools"))
    return f"{ours} domains x tasks x tool/skill references per written trajectory (paper 2.35 x 4.40 x 3.18)"


def _task_pool_line() -> str:
    """Which tasks the run could sample: those needing what the workspace lacks were left out."""
    from services.intent.catalog import load_catalog
    from services.intent.settings import IntentSettings

    needs = frozenset(IntentSettings().exclude_needs)
    left_out = load_catalog(excluded_needs=needs).excluded_tasks()
    if not left_out:
        return "every task of the catalog could be sampled"
    return (
        f"{left_out} tasks needing {', '.join(sorted(needs))} were not sampled (the agent's web is a local "
        "documentation mirror, and the workspace has none of the others); ISE_INTENT_EXCLUDE_NEEDS changes that"
    )


def _per_episode(stats: dict, everything: dict) -> str:
    """The paper's averages over successful trajectories, or over all when none succeeded."""
    chosen, over = (stats, "successful") if stats["trajectories"] else (everything, "every verdict; none succeeded")
    return (
        f"{chosen['user_turns_avg']} user turns, {chosen['messages_avg']} messages (no system), "
        f"{chosen['tool_calls_avg']} tool calls (over {over})"
    )


def _world_line(run_dir: Path, env: dict[str, str]) -> str:
    """What the agent was offered (the executor's settings in the run's ``env``, else their
    defaults) and how much of the web it used (the recordings beside the shards)."""
    from services.executor.settings import ExecutorSettings

    fields = ExecutorSettings.model_fields

    def setting(name: str) -> str:
        return env.get(f"ISE_EXEC_{name.upper()}", str(fields[name].default))

    exchanges = sum(len(p.read_bytes().splitlines()) for p in sorted((run_dir / "web").glob("*.jsonl")))
    web = f"web through the egress proxy: {exchanges} exchanges recorded" if setting("web_proxy") else "no web"
    behind = setting("workspace_egress").lower() in ("1", "true", "yes")
    where = "workspaces behind the proxy" if behind else "workspaces offline"
    return f"tools {setting('tools')}, skills {setting('skills_dir') or 'starter set'}; {web} ({where})"


def _cost_lines(stats: dict) -> list[str]:
    """The run's cost (every written trajectory; ``stats.json``'s ``cost``), first line labelled."""
    cost = stats.get("cost")
    if not cost:
        return []
    text = [*describe(cost), cost["counted"]]
    return [f"  {'cost' if n == 0 else '':12} {line}" for n, line in enumerate(text)]


def summary(result: RunResult, mode: str, quality: str, env: dict[str, str]) -> str:
    p = result.progress
    stats = json.loads(result.stats_path.read_text())
    everything = stats.get("all") or stats
    verdicts = (
        ", ".join(f"{k.split('.', 1)[1]} {v}" for k, v in sorted(p.items()) if k.startswith("verdict.")) or "none"
    )
    shards = sorted(result.run_dir.glob("trajectories-*.jsonl"))
    lines = [
        "",
        f"ISE-Trace run {result.run_id} finished in {result.seconds:.0f}s",
        f"  LLM          {mode}: {quality}",
        (
            f"  intents      {p.get('proposed', 0)} proposed, {p.get('accepted', 0)} accepted, "
            f"{p.get('rejected', 0)} rejected as duplicates, {p.get('render_failed', 0)} failed to render"
        ),
        f"  diversity    {_vendi_line(stats.get('intent_diversity') or {})}",
        f"  intent axes  {_axes_line(everything)}",
        f"  task pool    {_task_pool_line()}",
        (
            f"  episodes     {p.get('episodes_final', 0)} finished ({verdicts}); "
            f"{p.get('infra_retries', 0)} infrastructure retries"
        ),
        (
            f"  dataset      {everything['trajectories']} trajectories ({stats['trajectories']} successful) "
            f"in {len(shards)} shard(s) under {result.run_dir}"
        ),
        f"  per episode  {_per_episode(stats, everything)}",
        *_cost_lines(stats),
        f"  agent world  {_world_line(result.run_dir, env)}",
        f"  statistics   {result.stats_path}",
        f"  browse       ise view {result.run_dir}",
        f"  logs         {result.run_dir / 'logs'}",
    ]
    return "\n".join(lines)
