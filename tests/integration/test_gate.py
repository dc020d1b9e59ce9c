"""The intent gate with the real all-mpnet-base-v2 model over real Kafka and Redis: paraphrases
are rejected with their neighbour, related-but-distinct intents accepted, exact copies caught
after normalisation, and a restarted gate rebuilds its pool from ``ise.tasks``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from services.common.contracts.events import IntentProposed, IntentRejected, TaskReady
from services.common.contracts.intent import DomainRef, Intent, Persona, TaskRef
from services.common.state import RunProgress
from services.common.steering import GainsReader, cell_label
from services.dedup.embedder import Embedder, build_embedder
from services.dedup.gate_service import GateService
from services.dedup.settings import DedupSettings
from services.intent.catalog import load_catalog
from services.intent.sampler import sample_tuple

PAIRS = yaml.safe_load((Path(__file__).resolve().parents[2] / "bench/data/gate_pairs.yaml").read_text())
RUN = "run-gate"


@pytest.fixture(scope="module")
async def mpnet() -> AsyncIterator[Embedder]:
    embedder = await asyncio.to_thread(build_embedder, DedupSettings())
    yield embedder
    embedder.close()


def proposal(intent_id: str, text: str) -> IntentProposed:
    intent = Intent(
        intent_id=intent_id,
        text=text,
        persona=Persona(id="p", name="Ana", role="Analyst", industry="Retail"),
        domains=[DomainRef(id="file-io", name="File I/O")],
        tasks=[TaskRef(id="t", name="T", domain="file-io")],
        complexity="medium",
        seed=1,
    )
    return IntentProposed(event_id=f"e-{intent_id}", run_id=RUN, producer="test", intent=intent)


async def decide_all(gate: GateService, items: list[tuple[str, str]]) -> None:
    await asyncio.gather(*(gate.on_proposed(proposal(i, t)) for i, t in items))  # concurrent: batched


async def test_gate_decisions_and_restart(bus_factory, store, kafka_settings, mpnet, read_topic) -> None:
    bus = await bus_factory("dedup")
    gate = GateService(bus, store, DedupSettings(), embedder=mpnet)
    await gate.start()
    firsts = [(f"p{i}", a) for i, (a, _) in enumerate(PAIRS["paraphrase"])]
    await decide_all(gate, firsts)
    await decide_all(gate, [(f"p{i}b", b) for i, (_, b) in enumerate(PAIRS["paraphrase"])])
    await decide_all(gate, [(f"d{i}", b) for i, (_, b) in enumerate(PAIRS["distinct"])])
    await gate.on_proposed(proposal("exact", "  " + PAIRS["paraphrase"][0][0].upper().replace(",", "") + "!!"))

    rejected = {
        r.intent.intent_id: r
        for r in map(
            IntentRejected.model_validate_json,
            await read_topic(kafka_settings.bootstrap, kafka_settings.topics.intents_rejected, 9),
        )
    }
    assert set(rejected) == {f"p{i}b" for i in range(len(firsts))} | {"exact"}
    for i in range(len(firsts)):
        r = rejected[f"p{i}b"]
        assert (r.reason, r.nearest_intent_id) == ("near_duplicate", f"p{i}") and r.similarity >= 0.80
    assert (rejected["exact"].reason, rejected["exact"].nearest_intent_id) == ("exact", "p0")
    tasks = [
        TaskReady.model_validate_json(v)
        for v in await read_topic(kafka_settings.bootstrap, kafka_settings.topics.tasks, 16)
    ]
    assert sorted(t.intent.intent_id for t in tasks) == sorted([i for i, _ in firsts] + [f"d{i}" for i in range(8)])
    progress = await RunProgress(store, RUN).snapshot()
    assert (progress["accepted"], progress["rejected"]) == (16, 9)

    report = await gate.diversity_report(RUN)
    assert report["overall"]["n"] == 16 and 1 < report["overall"]["q1"] < 16
    assert report["complexity"]["medium"]["n"] == 16 and report["domain"]["file-io"]["n"] == 16
    saved = await store.redis.get(store.key("run", RUN, "diversity"))
    assert saved and '"q1"' in saved

    restarted = GateService(bus, store, DedupSettings(), embedder=mpnet)
    await restarted.start()  # replays ise.tasks; vectors come from the Redis cache
    assert len(restarted.pools[RUN]) == 16
    rebuilt = await restarted.diversity_report(RUN)
    assert abs(rebuilt["overall"]["q1"] - report["overall"]["q1"]) < 1e-9  # same pool, same Vendi
    await restarted.on_proposed(proposal("late", PAIRS["paraphrase"][3][1] + " Thanks."))
    after = [
        IntentRejected.model_validate_json(v)
        for v in await read_topic(kafka_settings.bootstrap, kafka_settings.topics.intents_rejected, 10)
    ]
    late = [r for r in after if r.intent.intent_id == "late"]
    assert [(r.reason, r.nearest_intent_id) for r in late] == [("near_duplicate", "p3")]
    for service in (gate, restarted):
        await service.close()


async def test_gate_gains_steer_the_sampler(bus_factory, store, mpnet) -> None:
    """Two cells: one fed variations of one request (little new diversity per intent), one fed
    distinct requests. The gate's report saves each cell's marginal Vendi gain in Redis; the
    intent job's reader turns it into weights that favour the diverse cell, and the sampler then
    draws that cell's domain more often than the prior does."""
    bus = await bus_factory("dedup")
    gate = GateService(bus, store, DedupSettings(threshold=0.99), embedder=mpnet)  # keep the variations
    await gate.start()
    run = "run-steer"

    def intent(i: str, text: str, domain: str) -> IntentProposed:
        event = proposal(i, text)
        moved = event.intent.model_copy(update={"domains": [DomainRef(id=domain, name=domain)]})
        return event.model_copy(update={"run_id": run, "intent": moved})

    same = [f"Please total the {n} invoices in invoices.csv by vendor and save totals.csv." for n in range(12, 24)]
    distinct = [b for _, b in PAIRS["distinct"]] + [a for a, _ in PAIRS["distinct"]]
    for i, text in enumerate(same):
        await gate.on_proposed(intent(f"s{i}", text, "file-io"))
    for i, text in enumerate(distinct[: len(same)]):
        await gate.on_proposed(intent(f"v{i}", text, "code-runtime"))
    await gate.diversity_report(run)
    reader = GainsReader(store, run, strength=1.0)
    weights = await reader.current()
    low, high = weights[cell_label("file-io", "medium")], weights[cell_label("code-runtime", "medium")]
    assert low < 1 < high, weights

    catalog = load_catalog()
    medium = [s for s in range(4000) if sample_tuple(catalog, s).complexity == "medium"][:600]
    share = {
        mode: sum("code-runtime" in {d.id for d in sample_tuple(catalog, s, w).domains} for s in medium) / len(medium)
        for mode, w in (("prior", None), ("steered", weights))
    }
    assert share["steered"] > share["prior"] + 0.05, share
    assert [sample_tuple(catalog, s).complexity for s in medium] == [
        sample_tuple(catalog, s, weights).complexity for s in medium
    ]  # the complexity mix stays the prior's
    await gate.close()
