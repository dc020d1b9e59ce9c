"""At-least-once delivery changes nothing: redelivered user turns, agent turns and finished
trajectories are answered from saved state, with no second LLM call, tool run or dataset line.

Real Kafka, Redis, Docker and the scripted LLM over HTTP; handlers are called directly so that
each redelivery is exact.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.common.contracts.events import AgentTurn, TaskReady, TrajectoryFinished, UserTurn
from services.common.contracts.intent import DomainRef, Intent, Persona, TaskRef
from services.common.contracts.messages import ChatMessage, Verdict
from services.common.llm.client import LLMClient
from services.common.settings import LLMSettings
from services.common.state import RunProgress
from services.dedup.settings import DedupSettings
from services.dedup.sink import SinkService
from services.dedup.stats import iter_records
from services.executor.agent_loop import LoopConfig
from services.executor.episode import ExecEpisode
from services.executor.errors import UnknownEpisodeError
from services.executor.service import ExecutorService
from services.executor.settings import ExecutorSettings
from services.executor.workspace.docker_backend import DockerWorkspaceBackend
from services.simulator.episode import SimEpisode
from services.simulator.service import SimulatorService
from services.simulator.settings import SimulatorSettings
from services.simulator.user_model import UserModel

INTENT = Intent(
    intent_id="intent_idem",
    text="I need my sales notes turned into a short plan with the key numbers, 1200 units and 3 regions.",
    persona=Persona(id="p1", name="Ana", role="Analyst", industry="Retail"),
    domains=[DomainRef(id="file-io", name="File I/O")],
    tasks=[TaskRef(id="t1", name="Write a plan", domain="file-io")],
    complexity="simple",
    seed=11,
)


def llm(base_url: str, role: str) -> LLMClient:
    return LLMClient(LLMSettings(base_url=base_url, model=f"default:{role}", max_retries=0), role)


def agent_requests(scripted) -> int:
    return sum(1 for r in scripted.requests() if r["model"] == "default:agent")


async def test_redelivered_user_turn_is_answered_from_state(
    bus_factory, store, scripted_llm, stack_endpoints, kafka_settings, prefix: str, read_topic
) -> None:
    bus = await bus_factory("executor")
    settings = ExecutorSettings(image=stack_endpoints.workspace_image, container_prefix=f"ise-{prefix}")
    backend = DockerWorkspaceBackend(settings.image, settings.limits(), name_prefix=settings.container_prefix)
    service = ExecutorService(bus, store, llm(scripted_llm.base_url, "agent"), backend, settings, LoopConfig())
    turn0 = UserTurn(
        event_id="u0",
        run_id="run-idem",
        producer="test",
        episode_id=f"ep-{prefix}",
        turn=0,
        kind="message",
        content="Start: write the plan.",
    )
    await store.open_episode(turn0.episode_id, turn0.run_id)  # what the simulator does on a task
    try:
        await service.on_user_turn(turn0)
        calls_after_first = agent_requests(scripted_llm)
        state = await store.get_model(store.key("exec", turn0.episode_id), ExecEpisode)
        await service.on_user_turn(turn0)  # redelivery
        assert agent_requests(scripted_llm) == calls_after_first, "no second LLM call"
        again = await store.get_model(store.key("exec", turn0.episode_id), ExecEpisode)
        assert again == state and again.turn_done == 0
        published = [
            AgentTurn.model_validate_json(v)
            for v in await read_topic(kafka_settings.bootstrap, kafka_settings.topics.turns_agent, 2)
        ]
        assert len(published) == 2 and published[0] == published[1]
        assert [r.name for r in published[0].tool_results] == ["write", "exec"]
        wc = await asyncio.to_thread(
            backend.exec, turn0.episode_id, "wc -l < notes/plan.md", workdir=None, timeout_s=10
        )
        assert wc.stdout.strip() == "3", "the write ran once, in the real container"
    finally:
        await service.on_user_turn(turn0.model_copy(update={"kind": "close", "turn": 1, "event_id": "c"}))
    assert backend.get(turn0.episode_id) is None


async def test_redelivered_agent_turn_does_not_advance_the_episode(bus_factory, store, scripted_llm) -> None:
    bus = await bus_factory("simulator")
    user = UserModel(llm(scripted_llm.base_url, "user"))
    service = SimulatorService(bus, store, user, SimulatorSettings())
    task = TaskReady(event_id="t", run_id="run-idem", producer="test", episode_id="ep-sim", intent=INTENT, seed=1)
    await service.on_task(task)
    await service.on_task(task)  # redelivered task: same first user turn, no new episode
    reply = AgentTurn(event_id="a0", run_id="run-idem", producer="test", episode_id="ep-sim", turn=0, reply="Wrote it.")
    await service.on_agent_turn(reply)
    state = await store.get_model(store.key("sim", "ep-sim"), SimEpisode)
    user_calls = sum(1 for r in scripted_llm.requests() if r["model"] == "default:user")
    await service.on_agent_turn(reply)  # redelivery
    assert sum(1 for r in scripted_llm.requests() if r["model"] == "default:user") == user_calls
    after = await store.get_model(store.key("sim", "ep-sim"), SimEpisode)
    assert after == state and after.turn == 1 and len(after.exchanges) == 2
    assert await RunProgress(store, "run-idem").snapshot() == {"episodes_started": 1}


async def test_redelivered_trajectory_is_written_once(store, tmp_path: Path) -> None:
    settings = DedupSettings(dataset_dir=str(tmp_path))
    service = SinkService(store, settings, instance="test")
    finished = TrajectoryFinished(
        event_id="f",
        run_id="run-w",
        producer="test",
        episode_id="ep-w",
        intent=INTENT,
        verdict=Verdict.SUCCESS,
        user_turns=1,
        messages=[ChatMessage(role="user", content="Write the plan."), ChatMessage(role="assistant", content="Done.")],
    )
    for _ in range(3):
        await service.on_finished(finished)
    # a restarted replica (fresh writer, index rebuilt from the files) also skips it
    await SinkService(store, settings, instance="other").on_finished(finished)
    assert len(iter_records(tmp_path / "run-w")) == 1
    progress = await RunProgress(store, "run-w").snapshot()
    assert progress == {"verdict.success": 1, "episodes_final": 1}


async def test_trajectory_without_turns_is_counted_not_written(store, tmp_path: Path) -> None:
    settings = DedupSettings(dataset_dir=str(tmp_path))
    empty = TrajectoryFinished(
        event_id="f0",
        run_id="run-e",
        producer="test",
        episode_id="ep-e",
        intent=INTENT,
        verdict=Verdict.BLOCKED,
        messages=[],
        user_turns=0,
    )
    await SinkService(store, settings, instance="test").on_finished(empty)
    assert iter_records(tmp_path / "run-e") == []
    progress = await RunProgress(store, "run-e").snapshot()
    assert progress == {"not_written.no_turns": 1, "verdict.blocked": 1, "episodes_final": 1}


async def test_user_turn_for_an_unknown_episode_makes_no_workspace(
    bus_factory, store, scripted_llm, stack_endpoints, prefix: str
) -> None:
    """A forged or stray user turn is refused (dead-lettered by the bus): no agent call, no container."""
    bus = await bus_factory("executor")
    settings = ExecutorSettings(image=stack_endpoints.workspace_image, container_prefix=f"ise-{prefix}")
    backend = DockerWorkspaceBackend(settings.image, settings.limits(), name_prefix=settings.container_prefix)
    service = ExecutorService(bus, store, llm(scripted_llm.base_url, "agent"), backend, settings, LoopConfig())
    stray = UserTurn(
        event_id="u0",
        run_id="run-x",
        producer="test",
        episode_id=f"ep-{prefix}-stray",
        turn=0,
        kind="message",
        content="run rm -rf /",
    )
    before = agent_requests(scripted_llm)
    with pytest.raises(UnknownEpisodeError):
        await service.on_user_turn(stray)
    assert agent_requests(scripted_llm) == before
    assert backend.get(stray.episode_id) is None
