"""The simulator's guards against a bad user model, with the scripted `hasty` user over real
Kafka, Redis and HTTP: an assistant-style message is regenerated and flagged, and a success is
never accepted before one verification turn."""

from __future__ import annotations

from services.common.contracts.events import AgentTurn, TaskReady, TrajectoryFinished, UserTurn
from services.common.contracts.intent import DomainRef, Intent, Persona, TaskRef
from services.common.contracts.messages import Verdict
from services.common.llm.client import LLMClient
from services.common.settings import LLMSettings
from services.simulator.episode import SimEpisode
from services.simulator.service import SimulatorService
from services.simulator.settings import SimulatorSettings
from services.simulator.user_model import UserModel

INTENT = Intent(
    intent_id="intent_hasty",
    text="I need a plan for the Q3 stock count across our 3 warehouses.",
    persona=Persona(id="p", name="Ana", role="Analyst", industry="Retail"),
    domains=[DomainRef(id="file-io", name="File I/O")],
    tasks=[TaskRef(id="t", name="Plan", domain="file-io")],
    complexity="simple",
    seed=2,
)


async def test_drift_is_regenerated_and_success_waits_for_verification(
    bus_factory, store, scripted_llm, kafka_settings, read_topic
) -> None:
    bus = await bus_factory("simulator")
    llm = LLMClient(LLMSettings(base_url=scripted_llm.base_url, model="hasty:user", max_retries=0), "user")
    service = SimulatorService(bus, store, UserModel(llm, drift_retries=2), SimulatorSettings())
    await service.on_task(
        TaskReady(event_id="t", run_id="run-h", producer="test", episode_id="ep-h", intent=INTENT, seed=2)
    )
    for turn in range(3):
        await service.on_agent_turn(
            AgentTurn(event_id=f"a{turn}", run_id="run-h", producer="test", episode_id="ep-h", turn=turn, reply="Done.")
        )
    state = await store.get_model(store.key("sim", "ep-h"), SimEpisode)
    queries = [x.query for x in state.exchanges]
    assert queries[1].startswith("Sure! I've created")  # kept after 2 regenerations, and flagged
    assert (state.role_drift_regenerations, state.role_drift_messages) == (2, 1)
    assert "verify" in queries[2] or "check" in queries[2] or "confirm" in queries[2]  # inserted by the simulator
    assert state.verification_asked and state.verdict is Verdict.SUCCESS and len(queries) == 3

    turns = [
        UserTurn.model_validate_json(v)
        for v in await read_topic(kafka_settings.bootstrap, kafka_settings.topics.turns_user, 4)
    ]
    assert [t.kind for t in sorted(turns, key=lambda t: t.turn)] == ["message", "message", "message", "close"]
    (finished,) = [
        TrajectoryFinished.model_validate_json(v)
        for v in await read_topic(kafka_settings.bootstrap, kafka_settings.topics.trajectories_finished, 1)
    ]
    assert finished.verification_asked and finished.role_drift_messages == 1


async def test_an_opening_that_is_not_a_request_falls_back_to_the_intent(
    bus_factory, store, scripted_llm, kafka_settings, read_topic
) -> None:
    bus = await bus_factory("simulator")
    llm = LLMClient(LLMSettings(base_url=scripted_llm.base_url, model="stray:user", max_retries=0), "user")
    settings = SimulatorSettings(opening="model")
    service = SimulatorService(bus, store, UserModel(llm, drift_retries=2), settings)
    await service.on_task(
        TaskReady(event_id="t", run_id="run-s", producer="test", episode_id="ep-s", intent=INTENT, seed=2)
    )
    state = await store.get_model(store.key("sim", "ep-s"), SimEpisode)
    assert [x.query for x in state.exchanges] == [INTENT.text]  # regenerated twice, then the intent itself
    assert (state.role_drift_regenerations, state.role_drift_messages) == (2, 1)
    (opening,) = [
        UserTurn.model_validate_json(v)
        for v in await read_topic(kafka_settings.bootstrap, kafka_settings.topics.turns_user, 1)
    ]
    assert opening.turn == 0 and opening.content == INTENT.text
