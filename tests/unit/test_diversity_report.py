"""The diversity report, the nested-subset Vendi curve, its PNG and the text table (random vectors,
no model)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.dedup.diversity import (
    PAPER_CURVE,
    default_curve_sizes,
    diversity_report,
    format_report,
    plot_curve,
    vendi_curve,
)
from services.dedup.vendi import vendi_score


def _pool(n: int = 120, d: int = 24) -> tuple[list[str], np.ndarray, list[dict[str, object]]]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    texts = [f"please archive report {i % 17} for team {i % 5}" for i in range(n)]
    labels = [
        {"domain": ["files", "data"][: 1 + i % 2], "complexity": ("simple", "medium", "complex")[i % 3]}
        for i in range(n)
    ]
    return texts, x, labels


def test_report_shape_and_values() -> None:
    texts, x, labels = _pool()
    report = diversity_report(texts, x, labels)
    assert report["n"] == 120 and report["dim"] == 24 and report["kernel"] == "cosine"
    assert set(report["vendi"]) == {"q1", "q2", "qinf"}
    assert report["vendi"]["q1"] == pytest.approx(vendi_score(x), rel=1e-9)
    assert report["vendi"]["qinf"] <= report["vendi"]["q2"] <= report["vendi"]["q1"] <= 24
    assert report["cells"]["domain"]["files"]["n"] == 120
    assert report["cells"]["domain"]["data"]["n"] == 60
    assert sum(c["n"] for c in report["cells"]["complexity"].values()) == 120
    assert 0 < report["distinct"]["distinct_3"] <= 1
    table = format_report(report, [(10, 5.0), (120, 20.0)])
    assert "overall" in table and "domain/files" in table and "complexity/simple" in table
    assert "Distinct-1/2/3" in table and "120: 20.00" in table


def test_report_without_labels_and_bad_input() -> None:
    texts, x, _ = _pool(10)
    assert diversity_report(texts, x)["cells"] == {}
    with pytest.raises(ValueError, match="empty"):
        diversity_report([], np.empty((0, 4)))
    with pytest.raises(ValueError, match="texts"):
        diversity_report(texts[:3], x)


def test_default_sizes() -> None:
    assert default_curve_sizes(43956) == [10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 43956]
    assert default_curve_sizes(50) == [10, 20, 50]
    assert default_curve_sizes(7) == [7]


def test_curve_is_nested_prefixes_of_a_seeded_permutation() -> None:
    _, x, _ = _pool(300)
    curve = vendi_curve(x, [50, 10, 1000, 200], seed=3)
    assert [n for n, _ in curve] == [10, 50, 200, 300]
    order = np.random.default_rng(3).permutation(300)
    for n, value in curve:
        assert value == pytest.approx(vendi_score(x[order[:n]]), rel=1e-9)
    assert curve[-1][1] == pytest.approx(vendi_score(x), rel=1e-9)
    assert vendi_curve(x, seed=3) != vendi_curve(x, seed=4)
    assert vendi_curve(x, q=math.inf)[-1][1] == pytest.approx(vendi_score(x, q=math.inf), rel=1e-9)
    with pytest.raises(ValueError):
        vendi_curve(x, [0, 5])


def test_plot_writes_a_png(tmp_path) -> None:
    _, x, _ = _pool(200)
    path = plot_curve(vendi_curve(x), tmp_path / "curve.png", reference=PAPER_CURVE)
    data = (tmp_path / "curve.png").read_bytes()
    assert path.endswith("curve.png") and data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    with pytest.raises(ValueError):
        plot_curve([], tmp_path / "empty.png")
