"""The Vendi Score with the cosine kernel, computed exactly from a min(n, d)-sized matrix.

For n items with embeddings x_1..x_n the Vendi Score of order q is ``exp(H_q(λ))``, where λ are
the eigenvalues of K/n, K = XXᵀ is the n×n cosine-similarity kernel, and H_q is the Rényi
entropy (Friedman & Dieng, 2023). It reads as an "effective number of distinct items": n
identical items score 1, n mutually orthogonal items score n.

When the rows of X have unit norm, K/n = XXᵀ/n and C = XᵀX/n (d×d) share their nonzero
eigenvalues (the singular values of X/√n, squared), and both have trace 1. So the score is
computed from whichever is smaller, in float64: for a large pool memory and eigendecomposition
cost O(d²) and O(d³), independent of n, and the only O(n) work is accumulating S = Σ x xᵀ; a
pool of n <= d rows (a small cell, the start of a run) keeps its rows and pays O(n³). Both forms
are incremental: :class:`VendiAccumulator` takes more rows at any time, ``merge``s two pools, and
gives exactly what the batch computation over all rows would give (up to float rounding in the
order of summation).

Conventions, chosen here and relied on by the callers:

* Input rows are always L2-normalised in float64 before use, so any non-zero vectors are
  accepted and the kernel is the cosine kernel. Unit-norm float32 rows from
  :class:`services.dedup.embedder.Embedder` change only by float32 rounding. An all-zero row
  (cosine undefined) or a non-finite value raises :class:`ValueError`.
* Eigenvalues below ``max λ · m · eps`` (m eigenvalues, eps of float64; numpy's matrix-rank
  tolerance) are rounding noise around 0 (some come out slightly negative) and are set to 0;
  the rest are renormalised to sum 1. This matters only for orders q < 1, where λ^q inflates
  noise (10⁻¹⁷ ↦ 3·10⁻⁹ at q = 0.5): without it n identical rows would not score exactly 1.
* Orders: ``q=1`` Shannon, ``exp(-Σ λ log λ)``; ``q=2`` ``1/Σλ²``; ``q=inf`` (``math.inf`` or
  the string ``"inf"``, as the ``vendi-score`` package spells it) ``1/max λ``; any other
  ``q > 0`` ``(Σλ^q)^(1/(1-q))``. ``q <= 0`` raises :class:`ValueError`.
* The score of an empty set is undefined: scoring before any row was added raises
  :class:`ValueError` (it is never silently 0).

Pure numpy, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

Order = float | int | str
DEFAULT_ORDERS: tuple[Order, ...] = (1, 2, math.inf)
_EPS = float(np.finfo(np.float64).eps)
_CHUNK = 8192  # rows converted to float64 at a time: bounded memory, cache-friendly


def order_key(q: Order) -> str:
    """A stable name for an order, used as a report key: ``q1``, ``q2``, ``qinf``, ``q0.5``."""
    q = _check_order(q)
    return "qinf" if math.isinf(q) else f"q{q:g}"


def _check_order(q: Order) -> float:
    if isinstance(q, str):
        if q.strip().lower() not in ("inf", "infinity"):
            raise ValueError(f"Vendi order must be a number > 0 or 'inf', not {q!r}")
        return math.inf
    value = float(q)
    if not value > 0:  # also rejects NaN
        raise ValueError(f"Vendi order must be > 0, not {q!r}")
    return value


def normalise_rows(rows: Any) -> np.ndarray:
    """``rows`` as a float64 (n, d) array with unit-L2-norm rows; raises on zero or non-finite rows."""
    x = np.array(rows, dtype=np.float64, ndmin=2, copy=True)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array (n, d), got shape {x.shape}")
    if x.shape[0] == 0:
        return x
    if not np.isfinite(x).all():
        raise ValueError("embeddings contain NaN or infinite values")
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    zero = np.flatnonzero(norms < 1e-12)
    if zero.size:
        raise ValueError(f"embedding row {int(zero[0])} is all zeros: the cosine kernel is undefined for it")
    x /= norms[:, None]
    return x


def vendi_from_eigenvalues(eigenvalues: Any, q: Order = 1) -> float:
    """``exp(H_q)`` of the distribution made from ``eigenvalues`` (noise set to 0, scaled to sum 1)."""
    order = _check_order(q)
    lam = np.asarray(eigenvalues, dtype=np.float64).ravel()
    if lam.size == 0 or not lam.max() > 0:
        raise ValueError("the Vendi Score needs at least one positive eigenvalue (is the set empty?)")
    lam = np.where(lam > lam.max() * lam.size * _EPS, lam, 0.0)  # rounding noise is zero
    lam = lam / lam.sum()
    if math.isinf(order):
        return float(1.0 / lam.max())
    p = lam[lam > 0]
    if order == 1:
        return float(np.exp(-np.dot(p, np.log(p))))
    if order == 2:
        return float(1.0 / np.dot(p, p))
    return float(np.sum(p**order) ** (1.0 / (1.0 - order)))


class VendiAccumulator:
    """The rows added so far, as few numbers as exactness allows; scores on demand.

    While ``n <= dim`` the unit rows themselves are kept and the spectrum comes from the n×n Gram
    matrix ``XXᵀ/n``: its eigendecomposition costs n³ rather than d³, and the rows take no more
    memory than the d×d matrix would. The row that takes ``n`` past ``dim`` folds them into
    S = Σ x xᵀ (d×d, float64) and they are dropped. The spectrum is cached until the next ``add``
    or ``merge``, so scoring an unchanged accumulator again is free.
    """

    def __init__(self, dim: int) -> None:
        if int(dim) < 1:
            raise ValueError(f"dim must be >= 1, not {dim}")
        self.dim = int(dim)
        self.n = 0
        self._rows: np.ndarray | None = np.empty((0, self.dim), dtype=np.float64)  # capacity >= n
        self._moment: np.ndarray | None = None
        self._spectrum: np.ndarray | None = None

    @property
    def second_moment(self) -> np.ndarray:
        """S = Σ x xᵀ over the unit rows added so far (d×d, float64)."""
        if self._moment is not None:
            return self._moment
        rows = self._kept_rows()
        return rows.T @ rows

    def _kept_rows(self) -> np.ndarray:
        assert self._rows is not None
        return self._rows[: self.n]

    def add(self, rows: Any) -> VendiAccumulator:
        """Add the rows of an (m, dim) array (normalised here); returns ``self``."""
        x = np.asarray(rows)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected rows of shape (m, {self.dim}), got {x.shape}")
        for start in range(0, x.shape[0], _CHUNK):
            self._add_unit(normalise_rows(x[start : start + _CHUNK]))
        return self

    def _add_unit(self, unit: np.ndarray) -> None:
        """Add rows already normalised to unit norm in float64 (for callers that did it once)."""
        m = unit.shape[0]
        if not m:
            return
        self._spectrum = None
        if self._rows is not None and self.n + m <= self.dim:
            if self.n + m > self._rows.shape[0]:  # grow by doubling, never past dim rows
                grown = np.empty((min(self.dim, max(2 * (self.n + m), 16)), self.dim), dtype=np.float64)
                grown[: self.n] = self._rows[: self.n]
                self._rows = grown
            self._rows[self.n : self.n + m] = unit
        else:
            self._fold_rows()
            assert self._moment is not None
            self._moment += unit.T @ unit
        self.n += m

    def _fold_rows(self) -> None:
        """Switch to the d×d form: S from the kept rows, which are dropped."""
        if self._moment is None:
            self._moment = self.second_moment.copy()
            self._rows = None

    def merge(self, other: VendiAccumulator) -> VendiAccumulator:
        """Fold ``other``'s rows into this accumulator (as if they had been added here)."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge a dim-{other.dim} accumulator into a dim-{self.dim} one")
        if other._moment is None:
            self._add_unit(other._kept_rows())
            return self
        self._fold_rows()
        assert self._moment is not None
        self._moment += other._moment
        self.n += other.n
        self._spectrum = None
        return self

    def copy(self) -> VendiAccumulator:
        twin = VendiAccumulator(self.dim)
        twin.merge(self)
        return twin

    def eigenvalues(self) -> np.ndarray:
        """Eigenvalues of K/n, ascending, noise set to 0, scaled to sum 1 (cached until the next add)."""
        if self.n == 0:
            raise ValueError("the Vendi Score of an empty set is undefined: add at least one row first")
        if self._spectrum is None:
            if self._moment is None:
                rows = self._kept_rows()
                c = rows @ rows.T / self.n  # n×n: the same nonzero eigenvalues as XᵀX/n
            else:
                c = self._moment / self.n
            lam = np.linalg.eigvalsh((c + c.T) / 2)
            lam = np.where(lam > lam.max() * lam.size * _EPS, lam, 0.0)
            self._spectrum = lam / lam.sum()
        return self._spectrum.copy()

    def score(self, q: Order = 1) -> float:
        """The Vendi Score of order ``q`` of every row added so far."""
        return vendi_from_eigenvalues(self.eigenvalues(), q)

    def scores(self, orders: Iterable[Order] = DEFAULT_ORDERS) -> dict[str, float]:
        """Several orders from one eigendecomposition, keyed by :func:`order_key`."""
        lam = self.eigenvalues()
        return {order_key(q): vendi_from_eigenvalues(lam, q) for q in orders}


def vendi_score(embeddings: Any, q: Order = 1) -> float:
    """The Vendi Score of order ``q`` of the rows of ``embeddings`` (n, d), cosine kernel."""
    x = np.asarray(embeddings)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array (n, d), got shape {x.shape}")
    return VendiAccumulator(x.shape[1]).add(x).score(q)


Label = str | Sequence[str] | None


class VendiByCell:
    """One :class:`VendiAccumulator` for the whole pool plus one per (group, label) cell.

    ``add(rows, labels)`` takes, per row, a mapping from a group name to that row's label(s), e.g.
    ``{"domain": ["finance", "legal"], "complexity": "simple"}``: the row then counts in the
    overall accumulator and in the cells ``domain/finance``, ``domain/legal`` and
    ``complexity/simple``. A row may sit in several cells of one group; ``None`` or an empty list
    puts it in none of that group's cells. Each row is normalised once.
    """

    def __init__(self, dim: int) -> None:
        self.dim = int(dim)
        self.overall = VendiAccumulator(self.dim)
        self.cells: dict[str, dict[str, VendiAccumulator]] = {}

    def add(self, rows: Any, labels: Sequence[Mapping[str, Label]] | None = None) -> VendiByCell:
        x = np.asarray(rows)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected rows of shape (m, {self.dim}), got {x.shape}")
        if labels is not None and len(labels) != x.shape[0]:
            raise ValueError(f"{x.shape[0]} rows but {len(labels)} label entries")
        for start in range(0, x.shape[0], _CHUNK):
            unit = normalise_rows(x[start : start + _CHUNK])
            self.overall._add_unit(unit)
            if labels is None:
                continue
            members: dict[tuple[str, str], list[int]] = {}
            for i, row_labels in enumerate(labels[start : start + _CHUNK]):
                for group, value in row_labels.items():
                    if group == "overall":
                        raise ValueError("'overall' is reserved for the whole pool; pick another group name")
                    for label in _as_labels(value):
                        members.setdefault((group, label), []).append(i)
            for (group, label), idx in members.items():
                cell = self.cells.setdefault(group, {}).setdefault(label, VendiAccumulator(self.dim))
                cell._add_unit(unit[idx])
        return self

    def merge(self, other: VendiByCell) -> VendiByCell:
        self.overall.merge(other.overall)
        for group, cells in other.cells.items():
            for label, acc in cells.items():
                mine = self.cells.setdefault(group, {})
                if label in mine:
                    mine[label].merge(acc)
                else:
                    mine[label] = acc.copy()
        return self

    def report(self, orders: Iterable[Order] = DEFAULT_ORDERS) -> dict[str, Any]:
        """``{"overall": {"n", "q1", ...}, group: {label: {"n", "q1", ...}}}`` (labels sorted)."""
        orders = tuple(orders)

        def row(acc: VendiAccumulator) -> dict[str, Any]:
            return {"n": acc.n, **acc.scores(orders)}

        out: dict[str, Any] = {"overall": row(self.overall) if self.overall.n else {"n": 0}}
        for group, cells in sorted(self.cells.items()):
            out[group] = {label: row(acc) for label, acc in sorted(cells.items())}
        return out


def _as_labels(value: Label) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    return list(dict.fromkeys(str(v) for v in value if v))  # de-duplicated, order kept
