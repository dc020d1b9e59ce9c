"""The intent gate's decisions and the dataset writer's exactly-once behaviour (no I/O but files)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from services.dedup.gate import IntentGate, normalise
from services.dedup.writer import DatasetWriter, episode_ids_in


def unit(v: list[float]) -> np.ndarray:
    a = np.asarray(v, dtype=np.float32)
    return a / np.linalg.norm(a)


def test_exact_duplicate_after_normalisation() -> None:
    gate = IntentGate(dim=3, threshold=0.9)
    gate.add("a", "Sort my files, please!", unit([1, 0, 0]))
    decision = gate.check("  sort MY files please ", unit([0, 1, 0]))
    assert (decision.accepted, decision.reason, decision.nearest_id) == (False, "exact", "a")
    assert normalise("A, b!  c") == "a b c"


def test_near_duplicate_and_distinct() -> None:
    gate = IntentGate(dim=3, threshold=0.9, initial_capacity=1)
    gate.add("a", "one", unit([1, 0, 0]))
    gate.add("b", "two", unit([0, 1, 0]))  # forces the pool to grow
    near = gate.check("three", unit([0.1, 1, 0]))
    assert (near.accepted, near.reason, near.nearest_id) == (False, "near_duplicate", "b")
    assert near.similarity > 0.99
    far = gate.check("four", unit([0, 0, 1]))
    assert far.accepted and far.similarity < 0.01 and len(gate) == 2


def test_first_intent_is_accepted() -> None:
    assert IntentGate(dim=2, threshold=0.5).check("x", unit([1, 0])).accepted


def _record(episode: str) -> dict:
    return {"messages": [], "tools": [], "metadata": {"episode_id": episode}}


def test_writer_writes_each_episode_once_and_rotates(tmp_path: Path) -> None:
    writer = DatasetWriter(tmp_path, "w1", shard_lines=2)
    assert [writer.write("run", f"ep{i}", _record(f"ep{i}")) for i in range(3)] == [True] * 3
    assert writer.write("run", "ep1", _record("ep1")) is False
    shards = sorted((tmp_path / "run").glob("trajectories-*.jsonl"))
    assert [len(s.read_text().splitlines()) for s in shards] == [2, 1]


def test_writer_recovers_its_index_from_the_files(tmp_path: Path) -> None:
    DatasetWriter(tmp_path, "w1").write("run", "ep1", _record("ep1"))
    shard = next((tmp_path / "run").glob("*.jsonl"))
    with shard.open("a") as fh:
        fh.write('{"torn": ')  # a crash mid-line
    again = DatasetWriter(tmp_path, "w2")  # a restarted (or other) replica
    assert episode_ids_in(tmp_path / "run") == {"ep1"}
    assert again.write("run", "ep1", _record("ep1")) is False
    assert again.write("run", "ep2", _record("ep2")) is True
    lines = [
        json.loads(line)
        for s in (tmp_path / "run").glob("*.jsonl")
        for line in s.read_text().splitlines()
        if line.endswith("}")
    ]
    assert sorted(r["metadata"]["episode_id"] for r in lines) == ["ep1", "ep2"]


def test_gate_logic_turns_a_pool_verdict_into_one_deterministic_event() -> None:
    from services.common.contracts.events import IntentProposed, IntentRejected, TaskReady
    from services.common.contracts.intent import DomainRef, Intent, Persona, TaskRef
    from services.common.contracts.topics import Topics
    from services.common.ids import Stamp
    from services.dedup.gate import GateDecision
    from services.dedup.gate_logic import GateLogic

    intent = Intent(
        intent_id="i1",
        text="Write a plan with 3 numbers.",
        persona=Persona(id="p", name="A", role="r", industry="x"),
        domains=[DomainRef(id="d", name="D")],
        tasks=[TaskRef(id="t", name="T", domain="d")],
        complexity="simple",
        seed=3,
    )
    proposed = IntentProposed(event_id="p1", run_id="run-1", producer="intent", intent=intent)
    logic = GateLogic(Stamp("gate"), Topics())
    accept = logic.decide(proposed, GateDecision(accepted=True))
    task = TaskReady.model_validate_json(accept.event)
    assert accept.topic == "ise.tasks" and accept.key == task.episode_id and task.attempt == 0 and task.seed == 3
    again = logic.decide(proposed, GateDecision(accepted=True))
    assert (again.key, TaskReady.model_validate_json(again.event).event_id) == (accept.key, task.event_id)
    reject = logic.decide(proposed, GateDecision(accepted=False, reason="exact", nearest_id="i0", similarity=1.0))
    rejected = IntentRejected.model_validate_json(reject.event)
    assert reject.topic == "ise.intents.rejected" and rejected.nearest_intent_id == "i0" and rejected.reason == "exact"
