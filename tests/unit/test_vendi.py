"""The d×d Vendi Score against the vendi-score package's n×n reference, its incremental form, and
Distinct-N counted by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
from vendi_score import vendi as reference

from services.dedup.distinct import distinct_n, distinct_report, tokenize
from services.dedup.vendi import (
    VendiAccumulator,
    VendiByCell,
    normalise_rows,
    order_key,
    vendi_from_eigenvalues,
    vendi_score,
)

REL = 1e-9
# vendi-score 0.0.3 touches scipy.sparse.csr, deprecated in recent SciPy.
pytestmark = pytest.mark.filterwarnings("ignore:.*csr.*:DeprecationWarning")


def unit_rows(n: int, d: int, seed: int = 0, clusters: int | None = None) -> np.ndarray:
    """Random unit rows; with ``clusters``, noisy copies of a few centres (a realistic spectrum)."""
    rng = np.random.default_rng(seed)
    if clusters:
        centres = rng.standard_normal((clusters, d))
        x = centres[rng.integers(0, clusters, n)] + 0.3 * rng.standard_normal((n, d))
    else:
        x = rng.standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def reference_score(x: np.ndarray, q: object) -> float:
    """vendi-score's n×n computation: score_K on the float64 cosine kernel (its score_X ignores q)."""
    xn = normalise_rows(x)
    return float(reference.score_K(xn @ xn.T, q=q))


SHAPES = [(50, 16, None), (300, 32, 5), (40, 64, None), (200, 24, 3)]


@pytest.mark.parametrize("q, ref_q", [(1, 1), (2, 2), (math.inf, "inf"), (3, 3)])
@pytest.mark.parametrize("n, d, clusters", SHAPES)
def test_matches_vendi_score_package(q: float, ref_q: object, n: int, d: int, clusters: int | None) -> None:
    x = unit_rows(n, d, seed=n + d, clusters=clusters)
    ours = vendi_score(x, q=q)
    theirs = reference_score(x, ref_q)
    assert ours == pytest.approx(theirs, rel=REL)
    assert 1.0 <= ours <= min(n, d) + 1e-9


@pytest.mark.parametrize("n, d, clusters", SHAPES)
def test_order_below_one_matches_the_n_by_n_spectrum(n: int, d: int, clusters: int | None) -> None:
    """For q < 1 the package's own answer is dominated by λ^q of its n - d rounding-noise
    eigenvalues, so compare with the n×n spectrum (scipy, as the package computes it) cleaned the
    same way."""
    x = normalise_rows(unit_rows(n, d, seed=n + d, clusters=clusters))
    n_by_n = scipy.linalg.eigvalsh(x @ x.T / n)
    assert vendi_score(x, q=0.5) == pytest.approx(vendi_from_eigenvalues(n_by_n, 0.5), rel=REL)


def test_float32_unit_rows_from_the_embedder_are_accepted() -> None:
    x32 = unit_rows(120, 48, seed=3, clusters=4).astype(np.float32)
    assert vendi_score(x32) == pytest.approx(reference_score(x32.astype(np.float64), 1), rel=REL)


def test_unnormalised_input_is_normalised() -> None:
    x = unit_rows(80, 20, seed=5)
    scales = np.random.default_rng(1).uniform(0.01, 100, size=(80, 1))
    assert vendi_score(x * scales) == pytest.approx(vendi_score(x), rel=1e-12)


def test_incremental_equals_batch() -> None:
    x = unit_rows(1000, 40, seed=7, clusters=6)
    batch = VendiAccumulator(40).add(x)
    inc = VendiAccumulator(40)
    seen = 0
    for part in np.split(x, [1, 17, 300, 301, 777]):  # includes an empty part
        inc.add(part)
        seen += len(part)
        assert inc.n == seen
    assert inc.n == batch.n == 1000
    np.testing.assert_allclose(inc.second_moment, batch.second_moment, rtol=0, atol=1e-12)
    for q in (1, 2, math.inf):
        assert inc.score(q) == pytest.approx(batch.score(q), rel=REL)


def test_score_at_any_time_and_merge() -> None:
    x = unit_rows(600, 30, seed=11, clusters=4)
    left, right = VendiAccumulator(30).add(x[:250]), VendiAccumulator(30).add(x[250:])
    assert left.score() == pytest.approx(vendi_score(x[:250]), rel=REL)
    merged = left.copy().merge(right)
    assert merged.n == 600
    assert merged.score(2) == pytest.approx(vendi_score(x, q=2), rel=REL)
    assert left.n == 250  # copy() left the original alone
    with pytest.raises(ValueError, match="dim"):
        merged.merge(VendiAccumulator(31))


def test_small_pools_keep_rows_and_cross_over_to_the_d_by_d_form() -> None:
    """Below dim rows the n×n Gram form is used; the row that passes dim switches to S. Every
    step, cached or not, and every merge or copy across the two forms gives the batch score."""
    d = 12
    x = unit_rows(40, d, seed=13, clusters=3)
    acc = VendiAccumulator(d)
    for i in range(len(x)):
        acc.add(x[i : i + 1])
        assert acc.score() == pytest.approx(vendi_score(x[: i + 1]), rel=REL)
        assert acc.score() == pytest.approx(vendi_score(x[: i + 1]), rel=REL)  # cached
    np.testing.assert_allclose(acc.second_moment, x.T @ x, atol=1e-12)
    small = VendiAccumulator(d).add(x[:5])
    twin = small.copy()
    twin.add(x[5:9])
    assert small.n == 5 and small.score(2) == pytest.approx(vendi_score(x[:5], q=2), rel=REL)
    big = VendiAccumulator(d).add(x[5:30])
    assert big.copy().merge(small).score() == pytest.approx(vendi_score(x[:30]), rel=REL)
    assert small.copy().merge(big).score() == pytest.approx(vendi_score(x[:30]), rel=REL)
    assert small.copy().merge(twin).n == 14  # two row-form pools still within dim
    assert small.merge(VendiAccumulator(d).add(x[5:10])).score() == pytest.approx(vendi_score(x[:10]), rel=REL)


def test_duplicates_score_one_and_orthogonal_rows_score_n() -> None:
    row = unit_rows(1, 64, seed=2)
    dupes = np.repeat(row, 500, axis=0) * 3.0  # also not unit norm
    for q in (1, 2, math.inf, 0.5):
        assert vendi_score(dupes, q=q) == pytest.approx(1.0, rel=REL)
    basis = np.eye(64)[:20]
    for q in (1, 2, math.inf):
        assert vendi_score(basis, q=q) == pytest.approx(20.0, rel=REL)
    rotated = basis @ np.linalg.qr(np.random.default_rng(0).standard_normal((64, 64)))[0]
    assert vendi_score(rotated) == pytest.approx(20.0, rel=REL)
    two_groups = np.vstack([np.repeat(basis[:1], 30, axis=0), np.repeat(basis[1:2], 10, axis=0)])
    p = np.array([0.75, 0.25])
    assert vendi_score(two_groups, q=1) == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=REL)
    assert vendi_score(two_groups, q=math.inf) == pytest.approx(1 / 0.75, rel=REL)


def test_empty_zero_and_bad_input_raise() -> None:
    with pytest.raises(ValueError, match="empty set"):
        VendiAccumulator(8).score()
    with pytest.raises(ValueError, match="empty set"):
        vendi_score(np.empty((0, 8)))
    with pytest.raises(ValueError, match="all zeros"):
        vendi_score(np.vstack([np.ones(8), np.zeros(8)]))
    with pytest.raises(ValueError, match="NaN"):
        vendi_score(np.full((2, 8), np.nan))
    with pytest.raises(ValueError, match="shape"):
        VendiAccumulator(8).add(np.ones((3, 9)))
    for bad in (0, -1, "two", float("nan")):
        with pytest.raises(ValueError, match="order"):
            vendi_score(np.eye(3), q=bad)


def test_order_keys_and_eigenvalue_form() -> None:
    assert [order_key(q) for q in (1, 2, math.inf, "inf", 0.5)] == ["q1", "q2", "qinf", "qinf", "q0.5"]
    assert vendi_from_eigenvalues([2, 2, -1e-18, 0]) == pytest.approx(2.0)
    acc = VendiAccumulator(10).add(unit_rows(30, 10, seed=4))
    lam = acc.eigenvalues()
    assert lam.min() >= 0 and lam.sum() == pytest.approx(1.0, abs=1e-15)
    assert acc.scores() == {k: pytest.approx(acc.score(q)) for k, q in (("q1", 1), ("q2", 2), ("qinf", math.inf))}


def test_by_cell_matches_scoring_each_cell_alone() -> None:
    x = unit_rows(90, 12, seed=9, clusters=3)
    labels = [
        {"domain": ["a", "b"] if i % 3 == 0 else ["c"], "complexity": ("simple", "complex")[i % 2]} for i in range(90)
    ]
    labels[5] = {"domain": [], "complexity": None}
    by_cell = VendiByCell(12).add(x[:40], labels[:40]).merge(VendiByCell(12).add(x[40:], labels[40:]))
    report = by_cell.report()
    assert report["overall"]["n"] == 90
    assert report["overall"]["q1"] == pytest.approx(vendi_score(x), rel=REL)
    for group in ("domain", "complexity"):
        for label, cell in report[group].items():
            idx = [i for i, lab in enumerate(labels) if label in np.atleast_1d(lab[group] or [])]
            assert cell["n"] == len(idx)
            assert cell["qinf"] == pytest.approx(vendi_score(x[idx], q=math.inf), rel=REL)
    assert sorted(report["domain"]) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="reserved"):
        VendiByCell(12).add(x[:1], [{"overall": "x"}])
    with pytest.raises(ValueError, match="label entries"):
        VendiByCell(12).add(x[:2], labels[:1])


def test_tokenize() -> None:
    assert tokenize("Hello, WORLD! Don't re-run user’s job_2 — 3.5x") == [
        "hello",
        "world",
        "don't",
        "re",
        "run",
        "user's",
        "job",
        "2",
        "3",
        "5x",
    ]


def test_distinct_n_by_hand() -> None:
    corpus = ["the cat sat", "The cat ran!", "a dog"]
    # unigrams: the cat sat the cat ran a dog -> 8 total, unique {the,cat,sat,ran,a,dog} = 6
    assert distinct_n(corpus, 1) == pytest.approx(6 / 8)
    # bigrams (within texts only): the-cat, cat-sat | the-cat, cat-ran | a-dog -> 5 total, 4 unique
    assert distinct_n(corpus, 2) == pytest.approx(4 / 5)
    # trigrams: the-cat-sat | the-cat-ran -> 2 total, 2 unique ("a dog" has none)
    assert distinct_n(corpus, 3) == pytest.approx(1.0)
    report = distinct_report(corpus)
    assert report["ngrams"]["2"] == {"unique": 4, "total": 5}
    assert report["tokens"] == 8
    assert distinct_n(["one two"], 3) == 0.0
    assert distinct_n([], 1) == 0.0
    assert distinct_n(["same words here"] * 4, 2) == pytest.approx(2 / 8)
    with pytest.raises(ValueError):
        distinct_n(corpus, 0)


def test_distinct_packed_and_tuple_paths_agree() -> None:
    from services.dedup import distinct

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(50)]
    corpus = [" ".join(rng.choice(words, size=rng.integers(0, 30))) for _ in range(200)]
    c = distinct._Corpus(corpus)
    for n in (1, 2, 3, 4):
        assert c.counts(n) == c._counts_tuples(n)
