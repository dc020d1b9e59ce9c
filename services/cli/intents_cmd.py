"""``ise intents import|export``: move ``intents.jsonl`` files (reference layout) in and out of a run.

ise intents import FILE [--run-id R] [--strict] [--dry-run]
ise intents export --run-id R --out FILE
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from services.cli.argtypes import run_id_arg
from services.common.logs import setup_logging

log = logging.getLogger("ise.intents")

LAYOUT = (
    "The layout is the reference one: one JSON object per line with id, natural_language_intent, "
    "domains, tasks, persona_id, tools_used, skills_used, complexity, metadata.persona and "
    "metadata.domains[].selected_tasks. Only natural_language_intent is required."
)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``intents`` (with ``import`` and ``export``) to the ``ise`` sub-command parsers."""
    intents = subparsers.add_parser(
        "intents",
        help="import or export intents.jsonl files (reference layout)",
        description="Import intents from, or export a run's accepted intents to, an intents.jsonl file. " + LAYOUT,
    )
    actions = intents.add_subparsers(dest="intents_action", required=True, metavar="ACTION")

    imp = actions.add_parser(
        "import",
        help="publish the intents of a file to a run (ise.intents.proposed)",
        description="Validate the whole of FILE first, then publish every good intent as IntentProposed "
        "on ise.intents.proposed, where the dedup gate picks it up as it does generated ones. Bad lines "
        "(bad JSON or UTF-8, missing fields, lines over 1 MiB, repeated ids) are listed with their line "
        "number and field and are not published; with --strict nothing is published when any line is "
        "bad. --dry-run runs the same checks and says what a real import would do. Exit status: 0 when "
        "every line was good, 1 when some were bad or publishing failed, 2 when FILE cannot be read "
        "or holds no intents. " + LAYOUT,
    )
    imp.add_argument("file", type=Path, metavar="FILE", help="the intents.jsonl file to import")
    imp.add_argument(
        "--run-id", type=run_id_arg, default=None, help="run to publish into (default: a new run id, printed)"
    )
    imp.add_argument("--strict", action="store_true", help="publish nothing when any line is bad")
    imp.add_argument("--dry-run", action="store_true", help="only validate the file; publish nothing")

    exp = actions.add_parser(
        "export",
        help="write a run's accepted intents to a file",
        description="Read ise.tasks from its beginning to its current end and write the intents the "
        "dedup gate accepted for RUN_ID (first attempts, one line per intent, sorted by id) to FILE, "
        "atomically. Exit status 1 when the run has none. " + LAYOUT,
    )
    exp.add_argument("--run-id", type=run_id_arg, required=True, help="the run whose accepted intents to export")
    exp.add_argument("--out", type=Path, required=True, metavar="FILE", help="file to write (replaced if it exists)")
    return intents


def run(args: argparse.Namespace) -> int:
    """Run ``ise intents ACTION``; returns the exit status."""
    setup_logging("intents")
    if args.intents_action == "import":
        return _import(args)
    return _export(args)


def _import(args: argparse.Namespace) -> int:
    """Check the whole file first, then publish: the same checks and the same outcome in --dry-run."""
    from services.common.errors import ConfigError
    from services.common.ids import new_run_id
    from services.intent.jsonl_io import MAX_LINE_BYTES, read_intents

    intents, errors = read_intents(args.file)  # an unreadable file raises: `ise` prints it, exit 2
    if not intents and not errors:
        raise ConfigError(
            f"{args.file}: holds no intents (it is empty or has blank lines only); nothing to import. " + LAYOUT
        )
    run_id = args.run_id or new_run_id()
    target = f"run {run_id}" if args.run_id or not args.dry_run else "a new run"
    for error in errors:
        print(f"  {error}", file=sys.stderr)
    listed = f"{len(errors)} bad line(s) (listed above)"
    refused = (args.strict and errors) or not intents
    why = "--strict and the file has bad lines" if intents else "every line is bad"
    if args.dry_run:
        if not errors:
            print(
                f"{args.file}: dry run: all {len(intents)} line(s) are good; a real import would publish "
                f"{len(intents)} intent(s) to {target}"
            )
            return 0
        outcome = (
            f"would publish nothing ({why})"
            if refused
            else f"would publish the {len(intents)} good intent(s) to {target} and skip the bad lines"
        )
        print(f"{args.file}: dry run: {len(intents)} good line(s), {listed}; a real import {outcome}", file=sys.stderr)
        return 1
    if refused:
        hint = (
            "Fix the bad lines, or import without --strict to publish the good ones and skip the bad"
            if intents
            else f"Lines over {MAX_LINE_BYTES >> 20} MiB, bad JSON or missing fields are refused. " + LAYOUT
        )
        print(f"{args.file}: nothing published ({why}): {len(intents)} good line(s), {listed}. {hint}", file=sys.stderr)
        return 1
    published = asyncio.run(_publish(intents, run_id))
    head = f"{args.file}: {published} intent(s) published to run {run_id}"
    print(head + (f"; {listed} skipped" if errors else ""), file=sys.stderr if errors else sys.stdout)
    return 1 if errors else 0


async def _publish(intents: list[Any], run_id: str) -> int:
    from aiokafka.errors import KafkaError

    from services.common.bus import EventBus, ensure_topics
    from services.common.errors import TransientError
    from services.common.settings import KafkaSettings, RedisSettings
    from services.common.state import StateStore
    from services.intent.transfer import publish_intents

    kafka = KafkaSettings()
    bus = EventBus(kafka, "intent")
    try:
        await ensure_topics(kafka)
        await bus.broker.start()
    except (KafkaError, OSError) as exc:
        await bus.broker.stop()
        raise TransientError(
            f"cannot reach Kafka at {kafka.bootstrap} ({exc}); nothing was published. "
            "Start the embedded stack with `ise stack up`, or point ISE_KAFKA_BOOTSTRAP at your broker"
        ) from exc
    store = StateStore(RedisSettings())
    try:
        await store.ping()
        counted: StateStore | None = store
    except Exception as exc:  # progress counters are a convenience; the events are the record
        log.warning("Redis not reachable (%s): publishing without run progress counters", exc)
        counted = None
    try:
        return await publish_intents(intents, bus, run_id, counted)
    finally:
        await bus.broker.stop()
        await store.close()


def _export(args: argparse.Namespace) -> int:
    from services.common.settings import KafkaSettings
    from services.intent.transfer import export_run

    kafka = KafkaSettings()
    count = asyncio.run(export_run(kafka, args.run_id, args.out))
    if not count:
        print(
            f"no accepted intents of run {args.run_id} on {kafka.topics.tasks}; wrote an empty {args.out}",
            file=sys.stderr,
        )
        return 1
    print(f"wrote {count} intent(s) of run {args.run_id} to {args.out}")
    return 0
