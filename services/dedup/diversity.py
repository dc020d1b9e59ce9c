"""Diversity of an intent pool: the Vendi Score overall and per cell, Distinct-N, the Vendi curve.

* :func:`diversity_report` gives the Vendi Score (cosine kernel, orders 1, 2 and ∞, exact via the
  d×d matrix, see :mod:`services.dedup.vendi`) over the whole pool and per domain and per
  complexity cell, plus corpus-level Distinct-1/2/3 (:mod:`services.dedup.distinct`).
* :func:`vendi_curve` is the paper's Vendi-vs-pool-size figure: the score of nested random
  prefixes of one seeded permutation (each prefix contains the previous one, as when a pool
  grows), computed in a single incremental pass.
* :func:`plot_curve` draws that curve (log-x) to a PNG with matplotlib's Agg canvas, imported only
  when called; :data:`PAPER_CURVE` is the reference curve read off the paper's figure, for overlay.

No I/O except the PNG that :func:`plot_curve` writes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from services.dedup.distinct import DEFAULT_NS, distinct_report
from services.dedup.vendi import DEFAULT_ORDERS, Label, Order, VendiAccumulator, VendiByCell, order_key

# Read off the paper's figure (ise-reference.md §1.4): approximate except the final 61.57.
PAPER_CURVE: tuple[tuple[int, float], ...] = (
    (200, 40.7),
    (500, 51.3),
    (1000, 56.0),
    (2000, 59.0),
    (5000, 60.5),
    (10000, 61.3),
    (20000, 61.3),
    (43956, 61.57),
)
PAPER_VENDI = 61.57
PAPER_POOL = 43956
CELL_GROUPS = ("domain", "complexity")


def diversity_report(
    texts: Sequence[str],
    embeddings: Any,
    labels: Sequence[Mapping[str, Label]] | None = None,
    *,
    orders: Iterable[Order] = DEFAULT_ORDERS,
    ns: Iterable[int] = DEFAULT_NS,
) -> dict[str, Any]:
    """Vendi (overall and per cell) and Distinct-N of a pool.

    ``embeddings`` is (n, d), row i embedding ``texts[i]``; ``labels[i]`` maps a group name
    (normally ``"domain"`` and ``"complexity"``) to row i's label or labels (an intent with three
    domains counts in three domain cells). Returns::

        {"n": int, "dim": int, "kernel": "cosine",
         "vendi": {"q1": float, "q2": float, "qinf": float},
         "cells": {"domain": {label: {"n": int, "q1": ..., ...}}, "complexity": {...}},
         "distinct": {"distinct_1": float, ..., "ngrams": {...}, "tokens": int}}

    Raises ValueError on an empty pool or mismatched lengths.
    """
    x = np.asarray(embeddings)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array (n, d), got shape {x.shape}")
    if x.shape[0] != len(texts):
        raise ValueError(f"{len(texts)} texts but {x.shape[0]} embedding rows")
    if x.shape[0] == 0:
        raise ValueError("the pool is empty: diversity needs at least one item")
    by_cell = VendiByCell(x.shape[1]).add(x, labels)
    cells = by_cell.report(orders)
    overall = cells.pop("overall")
    return {
        "n": int(x.shape[0]),
        "dim": int(x.shape[1]),
        "kernel": "cosine",
        "vendi": {k: v for k, v in overall.items() if k != "n"},
        "cells": cells,
        "distinct": distinct_report(texts, ns),
    }


def default_curve_sizes(n: int, start: int = 10) -> list[int]:
    """The 1-2-5 series from ``start`` below ``n``, then ``n`` itself (10, 20, 50, 100, …, n)."""
    sizes: list[int] = []
    decade = start
    while decade < n:
        sizes.extend(s for s in (decade, 2 * decade, 5 * decade) if s < n)
        decade *= 10
    return [*sizes, n] if n > 0 else []


def vendi_curve(
    embeddings: Any, sizes: Iterable[int] | None = None, seed: int = 0, q: Order = 1
) -> list[tuple[int, float]]:
    """``[(size, vendi), …]`` over nested random prefixes of one seeded permutation of the rows.

    ``sizes`` defaults to :func:`default_curve_sizes`; sizes above n are clipped to n, duplicates
    dropped, and the result is sorted by size. One pass: each prefix adds only the rows the
    previous one lacked.
    """
    x = np.asarray(embeddings)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array (n, d), got shape {x.shape}")
    n = x.shape[0]
    if n == 0:
        raise ValueError("the pool is empty: a Vendi curve needs at least one item")
    wanted = default_curve_sizes(n) if sizes is None else list(sizes)
    if any(int(s) < 1 for s in wanted):
        raise ValueError(f"curve sizes must be >= 1, got {wanted}")
    order = np.random.default_rng(seed).permutation(n)
    acc = VendiAccumulator(x.shape[1])
    points: list[tuple[int, float]] = []
    done = 0
    for size in sorted({min(int(s), n) for s in wanted}):
        acc.add(x[order[done:size]])
        done = size
        points.append((size, acc.score(q)))
    return points


def plot_curve(
    points: Sequence[tuple[int, float]],
    path: str | os.PathLike[str],
    *,
    q: Order = 1,
    title: str = "Vendi Score vs. pool size",
    label: str = "this pool",
    reference: Sequence[tuple[int, float]] | None = None,
    reference_label: str = "ISE paper (read off its figure)",
    others: Sequence[tuple[str, Sequence[tuple[int, float]]]] = (),
) -> str:
    """Write the curve as a PNG (log-x, markers, final value annotated); returns the path.

    ``q`` only labels the y axis (the order the points were computed with); ``reference`` adds a
    dashed curve such as :data:`PAPER_CURVE`; ``others`` adds (label, points) curves of other pools.

    Uses matplotlib's Agg canvas directly (no pyplot, no global backend change), imported here.
    """
    if not points:
        raise ValueError("no curve points to plot")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    xs, ys = zip(*points, strict=True)
    ax.plot(xs, ys, marker="o", color="tab:blue", label=label)
    for (other_label, other), color in zip(others, ("tab:orange", "tab:green", "tab:red", "tab:purple"), strict=False):
        ox, oy = zip(*other, strict=True)
        ax.plot(ox, oy, marker="^", color=color, label=other_label)
    if reference:
        rx, ry = zip(*reference, strict=True)
        ax.plot(rx, ry, marker="s", linestyle="--", color="tab:gray", alpha=0.8, label=reference_label)
    ax.annotate(
        f"{ys[-1]:.2f} (n={xs[-1]:,})",
        xy=(xs[-1], ys[-1]),
        xytext=(-8, 10),
        textcoords="offset points",
        ha="right",
        fontsize=9,
        color="tab:blue",
    )
    ax.set_xscale("log")
    ax.set_xlabel("pool size (random nested subsets)")
    ax.set_ylabel(f"Vendi Score (cosine kernel, {order_key(q).replace('q', 'q=')})")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_ylim(bottom=0)
    ax.legend(loc="lower right", fontsize=8)
    fig.savefig(os.fspath(path), dpi=150)
    return os.fspath(path)


def format_report(report: Mapping[str, Any], curve: Sequence[tuple[int, float]] | None = None) -> str:
    """A compact plain-text table of a :func:`diversity_report` result (and the curve, if given)."""
    keys = list(report["vendi"])
    heads = ["q=" + k[1:] for k in keys]
    rows = [("overall", report["n"], [report["vendi"][k] for k in keys])]
    for group, cells in report["cells"].items():
        rows.extend((f"{group}/{label}", cell["n"], [cell[k] for k in keys]) for label, cell in cells.items())
    width = max(24, *(len(name) + 2 for name, _, _ in rows))
    lines = [f"{'cell':<{width}}{'n':>8}" + "".join(f"{h:>10}" for h in heads)]
    lines += [f"{name:<{width}}{n:>8}" + "".join(f"{v:>10.2f}" for v in vals) for name, n, vals in rows]
    distinct = report["distinct"]
    orders = sorted(int(k.split("_")[1]) for k in distinct if k.startswith("distinct_"))
    lines.append(
        "Distinct-"
        + "/".join(map(str, orders))
        + ": "
        + " / ".join(f"{distinct[f'distinct_{n}']:.3f}" for n in orders)
        + f"   ({distinct['tokens']:,} tokens)"
    )
    if curve:
        lines.append("Vendi curve (q=1): " + ", ".join(f"{n:,}: {v:.2f}" for n, v in curve))
    return "\n".join(lines)
