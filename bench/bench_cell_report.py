"""Benchmark: the gate's live diversity report (Vendi overall and per cell) as a run grows.

Not a test. The gate scores the accepted pool overall and per domain, complexity and
domain x complexity cell, about once a second while intents are accepted. This prints, for
pools of several sizes, the time of one report:

* **baseline**: every cell through its d×d matrix, recomputed on every report (how the gate did
  it before cells kept their rows: 768³ per cell, ~170 cells for the shipped catalogs);
* **cold**: every cell scored once in the form it is in now (n×n Gram while n <= d, else d×d);
* **one accept**: the report right after one more accepted intent (only the cells it touched, and
  the overall pool, are recomputed: what the gate pays each second).

and the ratios baseline / cold and baseline / one accept. Rows are random unit vectors of
dimension 768 labelled with the shipped catalogs' domains and complexity tiers (as many domains as
the tier draws), from
a fixed seed; the scores of the two methods must agree to 1e-9 or the script exits 1.

    .venv/bin/python bench/bench_cell_report.py                    # pools of 100, 400, 1600
    .venv/bin/python bench/bench_cell_report.py --sizes 200 --repeats 5
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.common.steering import CELL_GROUP, cell_label
from services.dedup.vendi import DEFAULT_ORDERS, VendiByCell, order_key, vendi_from_eigenvalues

CATALOGS = Path(__file__).resolve().parents[1] / "services" / "intent" / "catalogs"
DIM = 768


def labelled_pool(n: int, seed: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """n random rows, each labelled as the sampler would: a tier by its weight, then as many
    domains as that tier draws (complexity.yaml)."""
    domains = [str(item["id"]) for item in yaml.safe_load((CATALOGS / "domains.yaml").read_text())]
    tiers = yaml.safe_load((CATALOGS / "complexity.yaml").read_text())
    names = list(tiers)
    weights = np.array([float(tiers[t]["weight"]) for t in names])
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, DIM))
    labels = []
    for _ in range(n):
        level = str(rng.choice(names, p=weights / weights.sum()))
        low, high = tiers[level]["domains"]
        picked = [str(d) for d in rng.choice(domains, size=int(rng.integers(low, high + 1)), replace=False)]
        labels.append({"domain": picked, "complexity": level, CELL_GROUP: [cell_label(d, level) for d in picked]})
    return x, labels


def moments(cells: VendiByCell) -> dict[str, Any]:
    """Each accumulator's d×d matrix S and n, shaped like a report (built before the timing)."""
    out: dict[str, Any] = {"overall": (cells.overall.second_moment, cells.overall.n)}
    for group, accs in cells.cells.items():
        out[group] = {label: (acc.second_moment, acc.n) for label, acc in accs.items()}
    return out


def baseline_report(matrices: dict[str, Any]) -> dict[str, Any]:
    """The old per-report cost: a d×d eigendecomposition for every cell, every time."""

    def row(s: np.ndarray, n: int) -> dict[str, Any]:
        lam = np.linalg.eigvalsh(s / n)
        return {"n": n, **{order_key(q): vendi_from_eigenvalues(lam, q) for q in DEFAULT_ORDERS}}

    out: dict[str, Any] = {"overall": row(*matrices["overall"])}
    for group, accs in matrices.items():
        if group != "overall":
            out[group] = {label: row(*pair) for label, pair in accs.items()}
    return out


def timed(fn: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def max_rel_diff(a: dict[str, Any], b: dict[str, Any]) -> float:
    worst = 0.0
    for key, value in a.items():
        if isinstance(value, dict):
            worst = max(worst, max_rel_diff(value, b[key]))
        elif key != "n":
            worst = max(worst, abs(value - b[key]) / abs(b[key]))
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,400,1600", help="pool sizes, comma-separated (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many timings (default: %(default)s)")
    args = parser.parse_args(argv)
    print(
        f"{'pool':>6} {'cells':>6} {'baseline s':>11} {'cold s':>8} {'1 accept s':>11} {'base/cold':>10} {'base/accept':>12}"
    )
    failed = False
    for n in (int(s) for s in args.sizes.split(",")):
        x, labels = labelled_pool(n + 1, seed=n)
        cold = accept = base = float("inf")
        for _ in range(args.repeats):
            cells = VendiByCell(DIM).add(x[:n], labels[:n])
            t_cold, ours = timed(cells.report)
            cells.add(x[n:], labels[n:])
            t_accept, ours = timed(cells.report)
            t_base, theirs = timed(partial(baseline_report, moments(cells)))
            cold, accept, base = min(cold, t_cold), min(accept, t_accept), min(base, t_base)
        diff = max_rel_diff(ours, theirs)
        failed |= diff > 1e-9
        count = sum(len(group) for key, group in ours.items() if key != "overall")
        print(
            f"{n:>6} {count:>6} {base:>11.3f} {cold:>8.3f} {accept:>11.4f} {base / cold:>9.1f}x {base / accept:>11.1f}x"
        )
        if diff > 1e-9:
            print(f"       scores disagree: max relative difference {diff:.2e}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
