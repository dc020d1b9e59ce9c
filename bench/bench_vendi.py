"""Benchmark: the d×d Vendi Score (services.dedup.vendi) against vendi-score's n×n method.

Not a test. Prints, for each n, the baseline time (the ``vendi-score`` package's ``score_K`` on
the float64 n×n cosine kernel), our time, their ratio, and the relative disagreement at q = 1,
2 and ∞ (must be ≤ 1e-9, else the script exits 1). Then our time alone on a large pool, and the
cost of one incremental update.

Data: random unit vectors of dimension 768 (i.i.d. Gaussian rows, normalised: the worst case for
the spectrum, Vendi close to its ceiling of 768) from a fixed seed; with ``--mpnet N`` also N
real all-mpnet-base-v2 embeddings of synthetic intent-like sentences (needs the local model).

    .venv/bin/python bench/bench_vendi.py                      # n = 2000, 5000, 10000; 50000 alone
    .venv/bin/python bench/bench_vendi.py --sizes 2000,5000    # skip the slow 10k baseline
    .venv/bin/python bench/bench_vendi.py --mpnet 1000         # plus real embeddings

The baseline at n = 10000 holds two 800 MB matrices and runs an O(n³) eigendecomposition.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.dedup.vendi import VendiAccumulator, normalise_rows, order_key

ORDERS: tuple[Any, ...] = (1, 2, math.inf)
TOLERANCE = 1e-9


def best_of(repeats: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    """(fastest wall time in seconds, last result) over ``repeats`` calls."""
    best, result = math.inf, None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def ours(x: np.ndarray) -> dict[str, float]:
    return VendiAccumulator(x.shape[1]).add(x).scores(ORDERS)


def baseline(x: np.ndarray) -> dict[str, float]:
    """vendi-score's n×n computation: build K in float64, then exactly what ``score_K`` does
    (``eigvalsh(weight_K(K))`` then ``entropy_q``), with the one eigendecomposition shared by
    the three orders. ``--check-package`` confirms it equals ``score_K`` itself."""
    from vendi_score import vendi as ref

    xn = normalise_rows(x)
    w = scipy.linalg.eigvalsh(ref.weight_K(xn @ xn.T))
    return {order_key(q): float(np.exp(ref.entropy_q(w, q="inf" if math.isinf(q) else q))) for q in ORDERS}


def rel_diff(a: dict[str, float], b: dict[str, float]) -> float:
    return max(abs(a[k] - b[k]) / abs(b[k]) for k in b)


def random_unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def mpnet_embeddings(n: int) -> np.ndarray:
    from services.dedup.embedder import build_embedder

    verbs = ["archive", "compress", "list", "rename", "back up", "sort", "convert", "summarise", "audit", "sync"]
    things = [
        "log files",
        "CSV exports",
        "photos",
        "git branches",
        "invoices",
        "Docker images",
        "notes",
        "database dumps",
        "cron jobs",
        "user accounts",
        "API keys",
        "sales figures",
    ]
    where = [
        "in ~/reports",
        "on the staging server",
        "from last quarter",
        "older than a week",
        "by size",
        "for the finance team",
        "before Friday",
        "into one PDF",
    ]
    rng = np.random.default_rng(1)
    texts = [
        f"Please {rng.choice(verbs)} the {rng.choice(things)} {rng.choice(where)}, then "
        f"{rng.choice(verbs)} the {rng.choice(things)} {rng.choice(where)}."
        for _ in range(n)
    ]
    embedder = build_embedder(model="all-mpnet-base-v2", batch_size=64)
    try:
        return embedder.encode(texts)
    finally:
        embedder.close()


def compare(label: str, x: np.ndarray, baseline_repeats: int) -> bool:
    n = x.shape[0]
    t_base, ref_scores = best_of(baseline_repeats, lambda: baseline(x))
    t_ours, our_scores = best_of(5, lambda: ours(x))
    diff = rel_diff(our_scores, ref_scores)
    print(
        f"{label:<22}{n:>7}  n×n {t_base:9.3f} s   d×d {t_ours:7.3f} s   ratio {t_base / t_ours:8.1f}x   "
        f"q1 {our_scores['q1']:9.4f}  max rel diff (q1,q2,inf) {diff:.1e}",
        flush=True,
    )
    return diff <= TOLERANCE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2000,5000,10000", help="n for the comparison (default 2000,5000,10000)")
    parser.add_argument("--big", type=int, default=50000, help="n for ours alone (default 50000; 0 skips)")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--mpnet", type=int, default=0, metavar="N", help="also compare on N real mpnet embeddings")
    parser.add_argument(
        "--check-package",
        action="store_true",
        help="at the smallest n, also check the baseline against score_K(K, q) itself",
    )
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]

    print(
        f"numpy {np.__version__}, scipy {scipy.__version__}, CPUs {len(os.sched_getaffinity(0))}, "
        f"dim {args.dim}, random unit vectors (Gaussian, seed 0)",
        flush=True,
    )
    ok = True
    if args.check_package and sizes:
        from vendi_score import vendi as ref

        x = normalise_rows(random_unit(sizes[0], args.dim, 0))
        package = {order_key(q): float(ref.score_K(x @ x.T, q="inf" if math.isinf(q) else q)) for q in ORDERS}
        same = rel_diff(baseline(x), package)
        print(f"baseline == score_K at n={sizes[0]}: max rel diff {same:.1e}")
        ok &= same <= TOLERANCE
    for n in sizes:
        ok &= compare(f"random unit, d={args.dim}", random_unit(n, args.dim, 0), 3 if n <= 2000 else 1)
    if args.mpnet:
        ok &= compare("mpnet embeddings", mpnet_embeddings(args.mpnet), 3)
    if args.big:
        x = random_unit(args.big, args.dim, 0)
        t_total, scores = best_of(3, lambda: ours(x))
        acc = VendiAccumulator(args.dim).add(x)
        t_add, _ = best_of(3, lambda: VendiAccumulator(args.dim).add(x))
        t_eig, _ = best_of(3, lambda: acc.scores(ORDERS))
        t_inc, _ = best_of(5, lambda: acc.copy().add(x[:1000]).score())
        print(
            f"ours alone, n={args.big}: {t_total:.3f} s total (best of 3; accumulate {t_add:.3f} s, "
            f"eigenvalues + 3 orders {t_eig:.3f} s), q1 {scores['q1']:.4f}; "
            f"add 1000 rows + rescore: {t_inc * 1000:.0f} ms"
        )
    print("agreement within 1e-9: " + ("yes" if ok else "NO"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
