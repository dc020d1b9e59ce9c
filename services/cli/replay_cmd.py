"""``ise replay``: regenerate data from the log of record (Kafka), with a progress bar.

ise replay --list                                   # the runs on the log
ise replay --rebuild run-abc [--out DIR] [--dry-run]  # out/run-abc from ise.trajectories.finished
ise replay --rescore run-abc                        # statistics and Vendi of run-abc from the log
ise replay --regenerate run-abc --complexity simple --dry-run   # Stages 2-3 again, into a new run

Owns the command line only: the options, what is printed first (what will be done and how many
records), and the exit statuses. The work is in ``replay_dataset`` (rebuild, rescore),
``replay_regen`` (regenerate) and ``replay_log`` (reading the topics).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from services.cli.argtypes import positive_float, run_id_arg

log = logging.getLogger("ise.replay")

VERDICTS = ("success", "failed", "max_turns", "blocked", "infrastructure_error")  # = contracts.messages.Verdict
COMPLEXITIES = ("simple", "medium", "complex")  # = contracts.intent.Complexity
REGEN_ONLY = ("domain", "complexity", "verdict", "intent", "new_run_id")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``replay`` to the ``ise`` sub-command parsers."""
    cmd = subparsers.add_parser(
        "replay",
        help="rebuild, rescore or regenerate a run from the log of record (Kafka)",
        description="Read a run back from the Kafka topics (from their beginning to their end when the command "
        "starts; topic names honour ISE_KAFKA_TOPIC_PREFIX, the broker ISE_KAFKA_BOOTSTRAP) and say what will "
        "be done and for how many records before doing it. Replay never re-executes what it only needs to "
        "re-read: --rebuild and --rescore read only; --regenerate runs Stages 2-3 again. Exit status 2 for an "
        "unknown run id (the runs on the log are named) or bad options, 1 when Kafka cannot be reached.",
    )
    mode = cmd.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--rebuild",
        type=run_id_arg,
        metavar="RUN_ID",
        help="rewrite OUT/RUN_ID's dataset from ise.trajectories.finished exactly as the dedup sink writes it "
        "(same records byte for byte, same web recordings, the same records left out: retried, zero-turn and "
        "infrastructure-error episodes), each episode once: records already there are kept, so a second "
        "rebuild writes nothing; then OUT/RUN_ID/stats.json. Shard names carry this host's name, as the sink's",
    )
    mode.add_argument(
        "--rescore",
        type=run_id_arg,
        metavar="RUN_ID",
        help="recompute RUN_ID's statistics (the figures of its stats.json, from the records the sink writes) and "
        "the Vendi Score of its accepted intents (ise.tasks, first attempts, one per intent; embedding model "
        "ISE_DEDUP_MODEL), print them and save them as OUT/RUN_ID/rescore.json; the dataset files are not read",
    )
    mode.add_argument(
        "--regenerate",
        type=run_id_arg,
        metavar="RUN_ID",
        help="run Stages 2-3 (simulator, executor, sink) again for RUN_ID's accepted tasks (ise.tasks), under "
        "the current settings and models, into a new run; the intent job and the gate are skipped",
    )
    mode.add_argument("--list", action="store_true", help="list the run ids on ise.tasks and how many tasks each has")
    cmd.add_argument("--out", type=Path, default=None, help="dataset root (default: ISE_DEDUP_DATASET_DIR, ./out)")
    cmd.add_argument("--dry-run", action="store_true", help="print what would be done and the counts; write nothing")
    regen = cmd.add_argument_group("--regenerate options (filters: repeat an option for alternatives)")
    regen.add_argument(
        "--new-run-id",
        type=run_id_arg,
        default=None,
        help="the new run's id (default: RUN_ID-regen-<hash of RUN_ID and the filters>, the same for the same "
        "command); episode ids derive from RUN_ID, the new run id and the intent id, so regenerating the same "
        "pair again writes nothing new",
    )
    regen.add_argument("--domain", action="append", default=[], metavar="D", help="only intents spanning domain D")
    regen.add_argument("--complexity", action="append", default=[], choices=COMPLEXITIES, help="only this complexity")
    regen.add_argument(
        "--verdict",
        action="append",
        default=[],
        choices=VERDICTS,
        help="only intents whose final verdict in RUN_ID (ise.trajectories.finished) was this",
    )
    regen.add_argument("--intent", action="append", default=[], metavar="ID", help="only this intent id")
    regen.add_argument(
        "--llm",
        default="auto",
        choices=("auto", "openai", "scripted", "local"),
        help="LLM endpoints, as for `ise run` (auto: yours if OPENAI_BASE_URL or ISE_LLM_<ROLE>_BASE_URL is set)",
    )
    regen.add_argument("--scenario", default="default", help="script scenario for --llm scripted")
    regen.add_argument("--timeout", type=positive_float, default=1800, help="seconds before the run is abandoned")
    return cmd


def run(args: argparse.Namespace) -> int:
    """Run ``ise replay``; returns the exit status (bad input raises ConfigError: status 2)."""
    from services.common.errors import ConfigError
    from services.common.logs import setup_logging
    from services.common.settings import KafkaSettings
    from services.dedup.settings import DedupSettings

    setup_logging("replay")
    if not args.regenerate:
        given = [f"--{name.replace('_', '-')}" for name in REGEN_ONLY if getattr(args, name)]
        if given:
            raise ConfigError(f"{', '.join(given)} only apply to --regenerate")
    kafka, dedup = KafkaSettings(), DedupSettings()
    out: Path = args.out if args.out is not None else Path(dedup.dataset_dir)
    if args.list:
        return _list(kafka)
    if args.rebuild:
        return _rebuild(kafka, dedup, args.rebuild, out, args.dry_run)
    if args.rescore:
        return _rescore(kafka, dedup, args.rescore, out, args.dry_run)
    return _regenerate(args, kafka, out)


def _list(kafka: Any) -> int:
    from services.cli.replay_log import runs_on

    seen = asyncio.run(runs_on(kafka, kafka.topics.tasks))
    if not seen:
        print(f"no runs on {kafka.topics.tasks}")
        return 0
    for run_id, count in sorted(seen.items()):
        print(f"{run_id}\t{count} task event(s)")
    return 0


def _rebuild(kafka: Any, dedup: Any, run_id: str, out: Path, dry_run: bool) -> int:
    from services.cli.replay_dataset import rebuild

    report = asyncio.run(rebuild(kafka, dedup, run_id, out, dry_run))
    print("\n".join(report.lines(dry_run)))
    return 0


def _rescore(kafka: Any, dedup: Any, run_id: str, out: Path, dry_run: bool) -> int:
    from services.cli.replay_dataset import rescore

    report = asyncio.run(rescore(kafka, dedup, run_id, out, dry_run))
    head = (
        f"run {run_id}: {report.trajectories} finished trajectories ({report.records} dataset records), "
        f"{report.intents} accepted intent(s) on the log"
    )
    if dry_run:
        print(f"{head}\n  would compute the statistics and the Vendi Score; nothing written")
        return 0
    stats, diversity = report.result["stats"], report.result["intent_diversity"]
    overall = diversity.get("overall") or {}
    vendi = f"{overall['q1']:.3f} (q=1, cosine, {report.result['embedding_model']})" if overall.get("n") else "-"
    print(
        "\n".join(
            [
                head,
                f"  trajectories {stats['all']['trajectories']} ({stats['trajectories']} successful)",
                (
                    f"  per episode  {stats['user_turns_avg']} user turns, {stats['messages_avg']} messages, "
                    f"{stats['tool_calls_avg']} tool calls (successful)"
                ),
                f"  verdicts     {json.dumps(stats['verdicts'])}",
                f"  Vendi        {vendi} over {overall.get('n', 0)} accepted intents",
                f"  saved as     {report.path}",
            ]
        )
    )
    return 0


def _regenerate(args: argparse.Namespace, kafka: Any, out: Path) -> int:
    from services.cli.replay_regen import Filters, plan_regeneration

    filters = Filters(tuple(args.domain), tuple(args.complexity), tuple(args.verdict), tuple(args.intent))
    plan = asyncio.run(plan_regeneration(kafka, args.regenerate, args.new_run_id, filters, out.resolve()))
    print("\n".join(plan.lines()))
    if args.dry_run:
        print(f"  dry run: would publish {len(plan.tasks)} task(s) for run {plan.new_run}; nothing done")
        return 0
    if not plan.tasks:
        print("  nothing to regenerate: no accepted task passes the filters")
        return 1
    if plan.done:
        print(f"  nothing to do: every record of run {plan.new_run} is already written")
        return 0
    return _run_services(args, plan)


def _run_services(args: argparse.Namespace, plan: Any) -> int:
    from services.cli.llm_setup import llm_plan
    from services.cli.replay_regen import run_regeneration
    from services.common.settings import KafkaSettings, RedisSettings
    from services.common.settings_check import check_environment
    from services.stack import stack

    check_environment()  # a misspelt ISE_* setting stops it before anything starts
    endpoints = stack.up()
    with llm_plan(args.llm, scenario=args.scenario, log_dir=plan.run_dir / "logs") as llm:
        log.info("LLM: %s - %s", llm.mode, llm.quality)
        kafka = KafkaSettings(bootstrap=endpoints.kafka_bootstrap)
        redis = RedisSettings(url=endpoints.redis_url)
        env = {**endpoints.env(), **llm.env}
        result = asyncio.run(run_regeneration(plan, env, kafka, redis, args.timeout))
    p = result.progress
    verdicts = ", ".join(f"{k.split('.', 1)[1]} {v}" for k, v in sorted(p.items()) if k.startswith("verdict."))
    print(
        f"run {result.run_id} regenerated from {plan.source} in {result.seconds:.0f}s with {llm.mode} LLMs "
        f"({llm.quality}): {p.get('episodes_final', 0)} episode(s) finished ({verdicts or 'none'}); "
        f"dataset {result.run_dir}, statistics {result.stats_path}"
    )
    return 0
