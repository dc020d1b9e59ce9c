"""Gate throughput at a 50k pool: vectorised search vs a Python loop over the pool (baseline, same
process), the embedding cost reported separately, and the gate's peak memory.

    .venv/bin/python bench/bench_gate.py [--pool 50000] [--decisions 200] [--embed 64]

The pool holds random unit vectors of dimension 768 (all-mpnet-base-v2's); search cost does not
depend on what the vectors mean. Embedding is timed on real rendered-intent-length texts.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from services.dedup.embedder import build_embedder
from services.dedup.gate import IntentGate

DIM = 768


def unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    rows = rng.standard_normal((n, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def build_pool(vectors: np.ndarray) -> tuple[IntentGate, int]:
    tracemalloc.start()
    gate = IntentGate(DIM, threshold=0.80)
    for i, v in enumerate(vectors):
        gate.add(f"i{i}", f"text {i}", v)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return gate, peak


def python_loop_best(pool: np.ndarray, v: np.ndarray) -> float:
    return max(float(row @ v) for row in pool)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", type=int, default=50_000)
    parser.add_argument("--decisions", type=int, default=200)
    parser.add_argument("--embed", type=int, default=64, help="texts to embed for the embedding timing")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    vectors = unit_rows(rng, args.pool)
    queries = unit_rows(rng, args.decisions)

    gate, peak = build_pool(vectors)
    started = time.perf_counter()
    for i, q in enumerate(queries):
        gate.check(f"query {i}", q)
    ours = (time.perf_counter() - started) / len(queries)

    sample = queries[: max(5, args.decisions // 20)]
    started = time.perf_counter()
    for q in sample:
        python_loop_best(vectors, q)
    loop = (time.perf_counter() - started) / len(sample)

    text = (
        "I need you to convert my sales.csv with region, units and price columns into typed JSON, "
        "total the units per region, flag regions under 1,200 units and write a short report.md for the board. "
    )
    embedder = build_embedder()
    embedder.encode([text] * 4)  # warm-up
    started = time.perf_counter()
    embedder.encode([f"{text} Case {i}." for i in range(args.embed)])
    embed = (time.perf_counter() - started) / args.embed
    embedder.close()

    print(f"pool {args.pool} x {DIM} float32, {args.decisions} decisions")
    print(f"  search, vectorised     {ours * 1e3:8.2f} ms/decision  {1 / ours:9.0f} decisions/s")
    print(f"  search, Python loop    {loop * 1e3:8.2f} ms/decision  {1 / loop:9.0f} decisions/s  (baseline)")
    print(f"  speed-up               {loop / ours:8.0f}x")
    print(f"  embedding (mpnet fp32) {embed * 1e3:8.1f} ms/text     {1 / embed:9.1f} texts/s  (batch {args.embed})")
    print(
        f"  end to end             {1 / (ours + embed):9.1f} decisions/s, embedding is {embed / (ours + embed):.0%} of it"
    )
    print(f"  gate peak memory       {peak / 2**20:8.1f} MiB  (pool matrix {gate.nbytes() / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
