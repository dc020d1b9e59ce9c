"""The executor's turn logic without Redis, Docker or an LLM: plain calls on ``TurnLogic``."""

from __future__ import annotations

import pytest

from services.common.contracts.events import UserTurn
from services.common.contracts.messages import ChatMessage
from services.common.ids import Stamp
from services.executor.agent_loop import TurnOutput
from services.executor.turns import TurnLogic

SKILL = {
    "name": "log-triage",
    "description": "find errors in logs",
    "filePath": "/workspace/skills/log-triage/SKILL.md",
}
LOGIC = TurnLogic(Stamp("test"), ({"type": "function", "function": {"name": "exec"}},), (SKILL,))


def user(turn: int, kind: str = "message", run: str = "run-1") -> UserTurn:
    return UserTurn(
        event_id=f"u{turn}", run_id=run, producer="sim", episode_id="ep-1", turn=turn, kind=kind, content=f"step {turn}"
    )


@pytest.mark.parametrize(
    ("turn", "registered", "action"),
    [
        (0, "run-1", "execute"),
        (0, None, "unknown"),
        (0, "run-2", "unknown"),
        (2, "run-1", "lost"),
        (2, None, "unknown"),
    ],
)
def test_a_turn_without_state_runs_only_for_an_episode_the_simulator_opened(turn, registered, action) -> None:
    assert LOGIC.classify(None, user(turn), registered) == action


def test_turns_advance_one_by_one_and_redeliveries_get_the_same_answer() -> None:
    state = LOGIC.begin(user(0))
    assert state.messages == [], "the runtime prompt comes once the workspace exists"
    LOGIC.with_system_prompt(state, "You are an agent. Files: a.txt")
    LOGIC.with_system_prompt(state, "a second prompt never replaces the first")
    first = LOGIC.answered(
        state, user(0), TurnOutput(reply="ok", messages=[ChatMessage(role="assistant", content="ok")]), 5
    )
    assert state.turn_done == 0 and state.last_turn == first
    assert [m.role for m in state.messages] == ["system", "user", "assistant"]
    assert first.system_prompt == "You are an agent. Files: a.txt"
    assert first.skills == [SKILL] and first.tools[0]["function"]["name"] == "exec"
    assert LOGIC.classify(state, user(0), "run-1") == "redeliver"
    assert LOGIC.classify(state, user(1), "run-1") == "execute"
    assert LOGIC.classify(state, user(3), "run-1") == "stale"
    assert LOGIC.classify(state, user(1, "close"), None) == "close"
    again = LOGIC.answered(LOGIC.begin(user(0)), user(0), TurnOutput(reply="ok"), 9)
    assert again.event_id == first.event_id, "the same turn has the same event id in any replica"


def test_a_failed_turn_is_an_infrastructure_error_that_still_advances() -> None:
    state = LOGIC.begin(user(0))
    turn = LOGIC.failed(state, user(0), "docker down")
    assert turn.status == "infrastructure_error" and turn.error == "docker down"
    assert state.turn_done == 0 and LOGIC.classify(state, user(0), "run-1") == "redeliver"
    assert LOGIC.failed(None, user(4), "lost").turn == 4
