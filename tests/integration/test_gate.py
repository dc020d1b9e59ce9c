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
from services.dedup.embedder import Embedder, build_embedder
from services.dedup.gate_service import GateService
from services.dedup.settings import DedupSettings

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
