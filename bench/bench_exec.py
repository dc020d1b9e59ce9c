"""Tool latency: the long-lived workspace shell against one ``docker exec`` per call.

Runs ``true``, ``echo hi``, a 4 KiB file write and a 4 KiB file read N times (default 200) in one
real workspace container, through ``DockerWorkspaceBackend`` with ``shell="persistent"`` and with
``shell="exec"`` (the baseline, same process, same container: ``docker exec`` per command, a
helper exec plus ``put_archive`` per write), and prints p50/p99 in milliseconds of the host-side
wall time of each backend call plus the baseline/persistent ratios.  The container is removed at the end.

    .venv/bin/python bench/bench_exec.py [--calls 200] [--image ise-workspace:latest]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable

from services.executor.workspace.base import WorkspaceLimits
from services.executor.workspace.docker_backend import DockerWorkspaceBackend


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


PAYLOAD = bytes(range(256)) * 16  # 4 KiB, every byte value


def operations(episode: str) -> dict[str, Callable[[DockerWorkspaceBackend], object]]:
    def run(command: str) -> Callable[[DockerWorkspaceBackend], object]:
        def call(backend: DockerWorkspaceBackend) -> object:
            result = backend.exec(episode, command, workdir=None, timeout_s=30)
            assert result.exit_code == 0, result
            return result

        return call

    def read(backend: DockerWorkspaceBackend) -> object:
        data, _ = backend.read_file(episode, "bench.bin", max_bytes=len(PAYLOAD))
        assert data == PAYLOAD
        return data

    return {
        "true": run("true"),
        "echo hi": run("echo hi"),
        "write 4K": lambda backend: backend.write_file(episode, "bench.bin", PAYLOAD),
        "read 4K": read,
    }


def measure(
    backend: DockerWorkspaceBackend, call: Callable[[DockerWorkspaceBackend], object], calls: int
) -> list[float]:
    for _ in range(5):  # warm up (starts the shell driver in persistent mode)
        call(backend)
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        call(backend)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--image", default="ise-workspace:latest")
    args = parser.parse_args()
    prefix = f"ise-bench-{uuid.uuid4().hex[:6]}"
    limits = WorkspaceLimits()
    persistent = DockerWorkspaceBackend(args.image, limits, name_prefix=prefix, shell="persistent")
    plain = DockerWorkspaceBackend(args.image, limits, name_prefix=prefix, shell="exec")
    persistent.create("bench", "bench")
    try:
        print(f"{args.calls} calls each, milliseconds (host wall time of the backend call)")
        print(f"{'call':<10} {'mode':<11} {'p50':>8} {'p99':>8} {'mean':>8}")
        for command, call in operations("bench").items():
            stats = {}
            for mode, backend in (("persistent", persistent), ("docker exec", plain)):
                samples = measure(backend, call, args.calls)
                stats[mode] = (percentile(samples, 0.5), percentile(samples, 0.99), statistics.fmean(samples))
                p50, p99, mean = stats[mode]
                print(f"{command:<10} {mode:<11} {p50:8.2f} {p99:8.2f} {mean:8.2f}")
            base, fast = stats["docker exec"], stats["persistent"]
            print(
                f"{command:<10} {'ratio':<11} {base[0] / fast[0]:7.1f}x {base[1] / fast[1]:7.1f}x {base[2] / fast[2]:7.1f}x"
                "  (docker exec / persistent)"
            )
    finally:
        persistent.close("bench")


if __name__ == "__main__":
    main()
