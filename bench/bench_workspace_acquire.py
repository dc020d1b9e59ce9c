"""Workspace acquisition with 16 concurrent episodes: warm pool against cold create.

Each round starts ``--episodes`` (default 16) threads at once; each acquires its episode's
workspace (``DockerWorkspaceBackend.create``) and the host-side wall time of that call is one
sample.  Warm: a ``WarmPool`` of ``--episodes`` started containers, filled before each round.
Cold (the baseline, same process, same image and limits): the pool detached, each call creates
and starts a container.  The pool is full before each cold and each warm round, so refilling
never runs during a measurement.  Prints p50/p99 in milliseconds over ``--rounds`` rounds (default 5) and
the cold/warm ratios.  Every container is removed at the end (and between rounds).

    .venv/bin/python bench/bench_workspace_acquire.py [--episodes 16] [--rounds 5] [--image ise-workspace:latest]
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid

from services.executor.workspace.base import WorkspaceLimits
from services.executor.workspace.docker_backend import DockerWorkspaceBackend
from services.executor.workspace.pool import WarmPool


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def one_round(backend: DockerWorkspaceBackend, episodes: int, tag: str) -> list[float]:
    samples: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(episodes)

    def acquire(index: int) -> None:
        barrier.wait()
        started = time.perf_counter()
        backend.create(f"{tag}-{index}", "bench")
        with lock:
            samples.append((time.perf_counter() - started) * 1000)

    threads = [threading.Thread(target=acquire, args=(i,)) for i in range(episodes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for info in backend.list_workspaces("bench"):
        backend.close(info.episode_id)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--image", default="ise-workspace:latest")
    args = parser.parse_args()
    limits = WorkspaceLimits(memory_mb=256, pids=128, cpus=1.0)
    backend = DockerWorkspaceBackend(args.image, limits, name_prefix=f"ise-bench-{uuid.uuid4().hex[:6]}")
    backend.create("warmup", "warmup")  # connect, warm the daemon's image cache
    backend.close("warmup")
    results: dict[str, list[float]] = {"cold": [], "warm": []}
    pool = WarmPool(backend, args.episodes, refill_parallelism=4)
    try:
        pool.start()
        for round_no in range(args.rounds):
            if not pool.wait_full(180):  # refilled before either measurement: no background load
                raise SystemExit("the warm pool did not fill in 180 s")
            backend.pool = None  # detached: cold creates
            results["cold"] += one_round(backend, args.episodes, f"c{round_no}")
            backend.pool = pool
            hits = pool.hits
            results["warm"] += one_round(backend, args.episodes, f"w{round_no}")
            assert pool.hits - hits == args.episodes, "some warm acquisitions fell back to cold"
    finally:
        pool.stop()
        for info in backend.list_workspaces():
            backend.close(info.episode_id)
    n = len(results["warm"])
    print(f"workspace acquisition, {args.episodes} concurrent episodes, {args.rounds} rounds ({n} samples each)")
    print(f"{'':6} {'p50 ms':>9} {'p99 ms':>9}")
    for mode in ("cold", "warm"):
        print(f"{mode:6} {percentile(results[mode], 0.5):9.1f} {percentile(results[mode], 0.99):9.1f}")
    for q, label in ((0.5, "p50"), (0.99, "p99")):
        print(f"cold/warm {label}: {percentile(results['cold'], q) / percentile(results['warm'], q):.1f}x")


if __name__ == "__main__":
    main()
