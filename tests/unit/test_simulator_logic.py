"""The user model's tolerant parsing, its view of an agent turn, and the run-completion rule."""

from __future__ import annotations

import pytest

from services.cli.pipeline import run_finished
from services.common.contracts.messages import OutcomeDigest
from services.simulator.user_model import agent_view, parse_decision


@pytest.mark.parametrize(
    "raw",
    [
        '{"completed": false, "query": "next", "reason": "r", "is_success": false}',
        '```json\n{"completed": false, "query": "next"}\n```',
        'Sure! {"completed": false, "query": "next"} hope that helps',
    ],
)
def test_parse_decision_tolerates_wrapping(raw: str) -> None:
    decision = parse_decision(raw)
    assert decision.completed is False and decision.query == "next"


@pytest.mark.parametrize("raw", ["", "no json", '{"query": "missing completed"}'])
def test_parse_decision_rejects_non_decisions(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_decision(raw)


def test_agent_view_carries_real_outcomes_not_tool_traffic() -> None:
    view = agent_view("Done.", OutcomeDigest(files_written=["a.txt"], exit_codes=[0, 3], tool_errors=1, tool_calls=3))
    assert view.startswith("Done.")
    assert "a.txt" in view and "0, 3" in view and "tool errors: 1" in view


@pytest.mark.parametrize(
    ("progress", "done"),
    [
        ({"proposed": 3, "accepted": 2, "rejected": 1, "episodes_final": 2, "intents_done": 1}, True),
        ({"proposed": 3, "accepted": 2, "rejected": 1, "episodes_final": 1, "intents_done": 1}, False),
        ({"proposed": 3, "accepted": 2, "rejected": 0, "episodes_final": 2, "intents_done": 1}, False),
        ({"proposed": 2, "accepted": 2, "episodes_final": 2}, False),
    ],
)
def test_run_finished(progress: dict, done: bool) -> None:
    assert run_finished(progress) is done
