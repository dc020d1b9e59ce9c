"""Diversity steering's pure parts: marginal gains per cell from successive reports, and weights."""

from __future__ import annotations

import pytest

from services.common.steering import CellGains, cell_label, steering_weights


def report(**cells: tuple[int, float]) -> dict:
    return {"overall": {"n": 0}, "cell": {k.replace("__", "/"): {"n": n, "q1": q} for k, (n, q) in cells.items()}}


def test_gains_are_the_vendi_added_per_new_intent_smoothed() -> None:
    gains = CellGains(smoothing=0.5)
    assert gains.update(report(a__simple=(4, 3.0), b__simple=(4, 1.2))) == {"a/simple": 0.75, "b/simple": 0.3}
    after = gains.update(report(a__simple=(8, 4.0), b__simple=(4, 1.2)))  # b got nothing new: unchanged
    assert after == {"a/simple": pytest.approx(0.5 * 0.75 + 0.5 * 0.25), "b/simple": 0.3}
    assert cell_label("file-io", "complex") == "file-io/complex"


def test_weights_favour_cells_that_still_add_diversity() -> None:
    weights = steering_weights({"a": 0.9, "b": 0.3, "c": 0.0}, strength=1.0)
    assert weights["a"] > 1 > weights["b"] >= weights["c"] == 0.2  # clipped to the floor
    assert steering_weights({"a": 0.9, "b": 0.3}, strength=0.0) == {"a": 1.0, "b": 1.0}  # strength 0: the prior
    assert steering_weights({}) == {} and steering_weights({"a": 0.0}) == {}
