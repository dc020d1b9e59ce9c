"""Import and export of intents.jsonl against a real Kafka and Redis (per-test topic prefix)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from services.common.contracts.events import IntentProposed, TaskReady
from services.common.contracts.intent import Intent
from services.common.ids import episode_id, event_id
from services.common.replay import read_to_end
from services.common.state import RunProgress
from services.intent.catalog import load_catalog
from services.intent.jsonl_io import intent_to_reference, read_intents
from services.intent.sampler import sample_tuple
from services.intent.transfer import export_run, import_file


def make_intents(count: int, offset: int = 0) -> list[Intent]:
    catalog = load_catalog()
    out = []
    for i in range(offset, offset + count):
        tup = sample_tuple(catalog, 500 + i)
        out.append(
            Intent(
                intent_id=f"intent_{i:04x}",
                text=f"I need request number {i} handled, with 3 files and a summary.",
                persona=tup.persona,
                domains=list(tup.domains),
                tasks=list(tup.tasks),
                complexity=tup.complexity,
                seed=tup.seed,
                render_model="scripted",  # type: ignore[arg-type]
            )
        )
    return out


async def proposed_on_topic(kafka_settings) -> list[tuple[str, IntentProposed]]:
    records = [r async for r in read_to_end(kafka_settings, kafka_settings.topics.intents_proposed)]
    return [(r.key.decode(), IntentProposed.model_validate_json(r.value)) for r in records]


async def test_import_publishes_good_lines_and_reports_the_bad(
    tmp_path: Path, bus_factory, kafka_settings, store
) -> None:
    good = make_intents(3)
    lines = [
        json.dumps(intent_to_reference(good[0])),
        json.dumps(intent_to_reference(good[1])),
        '{"id": "intent_bad", "complexity": "medium"}',
        json.dumps(intent_to_reference(good[2])),
    ]
    path = tmp_path / "intents.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    bus = await bus_factory("intent")

    report = await import_file(path, bus, "run-imp", store=store)

    assert report.published == 3 and report.bad == 1
    assert report.errors[0].line == 3 and report.errors[0].field == "natural_language_intent"
    assert "intents.jsonl:3" in report.summary()
    events = await proposed_on_topic(kafka_settings)
    assert sorted(key for key, _ in events) == [i.intent_id for i in good]
    for key, event in events:
        assert event.intent.intent_id == key and event.run_id == "run-imp"
        assert event.event_id == bus.envelope("proposed", "run-imp", key)["event_id"]
        assert event.intent.source == "imported"
    by_id = {e.intent.intent_id: e.intent for _, e in events}
    assert [by_id[i.intent_id] for i in good] == [i.model_copy(update={"source": "imported"}) for i in good]
    progress = RunProgress(store, "run-imp")
    assert (await progress.snapshot())["proposed"] == 3
    assert (await progress.snapshot())["intents_done"] == 1

    again = await import_file(path, bus, "run-imp", store=store)  # a re-import counts nothing twice
    assert again.published == 3 and (await progress.snapshot())["proposed"] == 3
    assert {e.event_id for _, e in await proposed_on_topic(kafka_settings)} == {e.event_id for _, e in events}


def task_ready(run_id: str, intent: Intent, attempt: int = 0) -> TaskReady:
    return TaskReady(
        event_id=event_id("task", run_id, intent.intent_id, attempt),
        run_id=run_id,
        producer="test",
        episode_id=episode_id(run_id, intent.intent_id, attempt),
        attempt=attempt,
        intent=intent,
        seed=intent.seed,
    )


async def test_export_run_writes_that_runs_first_attempts(tmp_path: Path, bus_factory, kafka_settings) -> None:
    run_a, run_b = make_intents(3), make_intents(2, offset=10)
    bus = await bus_factory("dedup")
    topic = bus.topics.tasks
    events = [task_ready("run-a", i) for i in run_a] + [task_ready("run-b", i) for i in run_b]
    retried = run_a[1].model_copy(update={"text": "changed on the retry"})
    events += [task_ready("run-a", retried, attempt=1), task_ready("run-a", run_a[0])]  # retry + redelivery
    for event in events:
        await bus.publish(event, topic, event.episode_id)
    await bus.publish_json("not an event", topic, "junk", "run-a")

    out = tmp_path / "export" / "run-a.jsonl"
    assert await export_run(kafka_settings, "run-a", out) == 3
    exported, errors = read_intents(out)
    assert errors == []
    assert exported == [i.model_copy(update={"source": "imported"}) for i in sorted(run_a, key=lambda i: i.intent_id)]
    assert await export_run(kafka_settings, "run-none", tmp_path / "none.jsonl") == 0
    assert (tmp_path / "none.jsonl").read_text() == ""

    # round trip: the exported file imports into a new run unchanged
    report = await import_file(out, bus, "run-c")
    assert report.published == 3 and report.bad == 0
    proposed = {k: e for k, e in await proposed_on_topic(kafka_settings) if e.run_id == "run-c"}
    assert sorted(proposed) == sorted(i.intent_id for i in run_a)
    assert all(proposed[i.intent_id].intent == i.model_copy(update={"source": "imported"}) for i in run_a)


def test_cli_imports_then_exports(
    tmp_path: Path, stack_endpoints, kafka_settings, prefix: str, monkeypatch, capsys
) -> None:
    """``ise intents import|export`` through ``intents_cmd`` (settings from the environment)."""
    import argparse

    from services.cli import intents_cmd

    for key, value in {
        **stack_endpoints.env(),
        "ISE_KAFKA_TOPIC_PREFIX": f"{prefix}.",
        "ISE_REDIS_KEY_PREFIX": prefix,
    }.items():
        monkeypatch.setenv(key, value)
    parser = argparse.ArgumentParser(prog="ise")
    intents_cmd.add_parser(parser.add_subparsers(dest="command"))
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(intent_to_reference(i)) + "\n" for i in make_intents(2)) + "{bad\n")

    assert intents_cmd.run(parser.parse_args(["intents", "import", str(source), "--dry-run"])) == 1
    assert intents_cmd.run(parser.parse_args(["intents", "import", str(source), "--strict"])) == 1
    assert intents_cmd.run(parser.parse_args(["intents", "import", str(source), "--run-id", "run-cli"])) == 1
    err = capsys.readouterr().err
    assert "in.jsonl:3: not valid JSON" in err and "2 intent(s) published to run run-cli" in err
    published = asyncio.run(proposed_on_topic(kafka_settings))
    assert sorted(k for k, _ in published) == [i.intent_id for i in make_intents(2)]
    out = tmp_path / "out.jsonl"
    assert intents_cmd.run(parser.parse_args(["intents", "export", "--run-id", "run-cli", "--out", str(out)])) == 1
    assert out.read_text() == ""  # nothing accepted yet: no dedup gate runs in this test
