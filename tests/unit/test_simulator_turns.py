"""The simulator's turn logic without a broker, Redis or LLM: plain calls on ``TurnLogic``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.common.contracts.events import AgentTurn, TaskReady, TrajectoryFinished, UserTurn
from services.common.contracts.intent import DomainRef, Intent, Persona, TaskRef
from services.common.contracts.messages import ChatMessage, Usage, Verdict
from services.common.contracts.topics import Topics
from services.common.ids import Stamp
from services.simulator.role_drift import opening_reason
from services.simulator.settings import SimulatorSettings
from services.simulator.turns import TurnLogic
from services.simulator.user_model import Decided, UserDecision

T0 = datetime(2026, 1, 1, tzinfo=UTC)
INTENT = Intent(
    intent_id="intent_1",
    text="Turn my sales notes into a plan with the key numbers, 1200 units and 3 regions.",
    persona=Persona(id="p1", name="Ana", role="Analyst", industry="Retail"),
    domains=[DomainRef(id="file-io", name="File I/O")],
    tasks=[TaskRef(id="t1", name="Write a plan", domain="file-io")],
    complexity="simple",
    seed=1,
)
TOPICS = Topics()


def logic(**settings: object) -> TurnLogic:
    return TurnLogic(SimulatorSettings.model_validate(settings), Stamp("test"), TOPICS)


def task(attempt: int = 0) -> TaskReady:
    return TaskReady(
        event_id="t",
        run_id="run-1",
        producer="gate",
        episode_id=f"ep-{attempt}",
        attempt=attempt,
        intent=INTENT,
        seed=7,
    )


def says(query: str = "", completed: bool = False, success: bool | None = None) -> Decided:
    return Decided(UserDecision(completed=completed, query=query, is_success=success), Usage(llm_calls=1))


def agent(turn: int, status: str = "ok") -> AgentTurn:
    return AgentTurn(
        event_id=f"a{turn}",
        run_id="run-1",
        producer="executor",
        episode_id="ep-0",
        turn=turn,
        status=status,
        reply="done",
        messages=[ChatMessage(role="assistant", content="done")],
        error="boom" if status != "ok" else None,
    )


def events(state) -> list[object]:
    kinds = {TOPICS.turns_user: UserTurn, TOPICS.trajectories_finished: TrajectoryFinished, TOPICS.tasks: TaskReady}
    return [kinds[item.topic].model_validate_json(item.event) for item in state.outbox]


def test_a_task_starts_an_episode_and_the_first_message_delegates() -> None:
    lg = logic()
    assert lg.classify_task(None) == "start"
    state = lg.start(task(), T0)
    lg.take_decision(state, says("Please write plan.md"), "user-model", T0)
    (turn,) = events(state)
    assert isinstance(turn, UserTurn) and turn.turn == 0 and turn.content == "Please write plan.md"
    assert lg.classify_task(state) == "redeliver"


def test_success_needs_one_verification_then_finishes_with_the_trajectory() -> None:
    lg = logic()
    state = lg.start(task(), T0)
    lg.take_decision(state, says("Write plan.md"), "m", T0)
    assert lg.take_agent_turn(state, agent(0), "the agent wrote plan.md", T0)
    lg.take_decision(state, says(completed=True, success=True), "m", T0)
    (verify,) = events(state)
    assert verify.turn == 1 and state.verification_asked and state.verdict is None
    assert lg.take_agent_turn(state, agent(1), "verified", T0 + timedelta(seconds=3))
    lg.take_decision(state, says(completed=True, success=True), "m", T0 + timedelta(seconds=3))
    close, finished = events(state)
    assert close.kind == "close" and close.verdict is Verdict.SUCCESS
    assert finished.verdict is Verdict.SUCCESS and finished.user_turns == 2 and finished.duration_ms == 3000
    assert [m.role for m in finished.messages] == ["user", "assistant", "user", "assistant"]


def test_an_infrastructure_error_retries_as_a_new_attempt_while_attempts_last() -> None:
    lg = logic(max_attempts=2)
    state = lg.start(task(0), T0)
    lg.take_decision(state, says("go"), "m", T0)
    assert not lg.take_agent_turn(state, agent(0, "infrastructure_error"), "", T0)
    _close, finished, retry = events(state)
    assert finished.verdict is Verdict.INFRASTRUCTURE_ERROR and finished.retrying
    assert retry.attempt == 1 and retry.episode_id != state.episode_id
    last = lg.start(task(1), T0)
    lg.take_decision(last, says("go"), "m", T0)
    lg.take_agent_turn(last, agent(0, "infrastructure_error").model_copy(update={"episode_id": "ep-1"}), "", T0)
    assert [type(e).__name__ for e in events(last)] == ["UserTurn", "TrajectoryFinished"]
    assert not events(last)[1].retrying


def test_the_turn_limit_ends_the_episode() -> None:
    lg = logic(max_turns=1)
    state = lg.start(task(), T0)
    lg.take_decision(state, says("go"), "m", T0)
    assert not lg.take_agent_turn(state, agent(0), "ok", T0)
    assert state.verdict is Verdict.MAX_TURNS


@pytest.mark.parametrize("decision", [says(completed=True), says("   ")])
def test_a_user_that_delegates_nothing_is_blocked(decision: Decided) -> None:
    lg = logic()
    state = lg.start(task(), T0)
    lg.take_decision(state, decision, "m", T0)
    assert state.verdict is Verdict.BLOCKED


def test_redeliveries_and_stale_turns_are_told_apart() -> None:
    lg = logic()
    assert lg.classify_agent_turn(None, agent(0)) == "unknown"
    state = lg.start(task(), T0)
    lg.take_decision(state, says("go"), "m", T0)
    assert lg.classify_agent_turn(state, agent(0)) == "advance"
    lg.take_agent_turn(state, agent(0), "ok", T0)
    lg.take_decision(state, says("next"), "m", T0)
    assert lg.classify_agent_turn(state, agent(0)) == "redeliver"  # its answer is in the outbox
    assert lg.classify_agent_turn(state, agent(5)) == "stale"


def test_the_same_inputs_make_the_same_event_ids() -> None:
    runs = []
    for _ in range(2):
        lg = logic()
        state = lg.start(task(), T0)
        lg.take_decision(state, says("go"), "m", T0)
        runs.append([e.event_id for e in events(state)])
    assert runs[0] == runs[1]


def test_the_intent_itself_opens_the_episode_by_default() -> None:
    turns = logic()
    state = turns.start(task(), T0)
    assert turns.open(state) is False  # no user-model call for the opening
    (item,) = state.outbox
    opening = UserTurn.model_validate_json(item.event)
    assert opening.turn == 0 and opening.content == INTENT.text and state.exchanges[0].query == INTENT.text
    model_opens = logic(opening="model")
    state = model_opens.start(task(), T0)
    assert model_opens.open(state) is True and state.outbox == [] and state.exchanges == []


@pytest.mark.parametrize(
    "opening, problem",
    [
        ('{"completed": false, "is_success": false}', "not a request"),
        ("is_success: false", "not a request"),
        ("false", "not a request"),
        ("Good morning! What a lovely day it is.", "names nothing of the intent"),
        ("How can I help you with your sales notes today?", "assistant-style phrase"),
        ("Please turn my sales notes into a plan; the numbers are 1200 units and 3 regions.", None),
    ],
)
def test_an_opening_that_does_not_delegate_the_intent_is_a_role_failure(opening: str, problem: str | None) -> None:
    reason = opening_reason(opening, INTENT.text)
    assert (reason is None) if problem is None else (reason is not None and problem in reason)


def test_only_the_opening_message_is_capped() -> None:
    from services.simulator.turns import cap_opening

    long = "word " * 1000
    capped = cap_opening(long.strip(), 100)
    assert len(capped) <= 106 and capped.endswith(" [...]") and not capped.startswith(" ")
    assert cap_opening("short request", 100) == "short request"
    assert cap_opening(long, 0) == long, "0 turns the cap off"
    lg = logic(opening_max_chars=50)
    state = lg.start(task(), T0)
    lg.take_decision(state, says("y " * 300), "m", T0)
    assert len(state.exchanges[0].query) <= 56, "the opening is capped"
    lg.take_agent_turn(state, agent(0), "view", T0)
    lg.take_decision(state, says("x" * 500), "m", T0)
    assert state.exchanges[-1].query == "x" * 500, "later user messages are never cut"
