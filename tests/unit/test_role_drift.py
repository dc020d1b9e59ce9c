"""The role-drift detector on a labelled sample: every drifted message caught, no in-role one flagged."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from services.simulator.role_drift import asks_for_verification, drift_reason

SAMPLE = yaml.safe_load((Path(__file__).resolve().parents[1] / "data" / "role_drift_sample.yaml").read_text())


@pytest.mark.parametrize("message", SAMPLE["assistant"])
def test_assistant_style_messages_are_caught(message: str) -> None:
    assert drift_reason(message) is not None


@pytest.mark.parametrize("message", SAMPLE["user"])
def test_user_style_messages_pass(message: str) -> None:
    assert drift_reason(message) is None


def test_sample_is_balanced_enough_to_mean_something() -> None:
    assert len(SAMPLE["user"]) >= 20 and len(SAMPLE["assistant"]) >= 15


def test_verification_requests_are_recognised() -> None:
    assert asks_for_verification("Please double-check the totals before we wrap up.")
    assert asks_for_verification("Show me the final file.")
    assert not asks_for_verification("Now total the units per region.")
