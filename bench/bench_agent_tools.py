"""Latency of every reference tool in a real workspace, and what the egress proxy adds to the web.

Each tool runs N times through the executor's Toolbox in one Docker workspace (the persistent
shell), and its p50/p99 are printed. The web tools run twice, in this process, one after the other:
- direct (baseline): the same calls sent straight to the local web (it accepts proxy-form
  requests), no proxy, nothing recorded;
- proxied: through the egress proxy with the episode's credentials, recorded.
The ratio proxied/direct is what the proxy (auth, allow-list, recording) adds to a web tool call.
It also prints the bytes the recording adds per web call and per ``world``-scenario episode.

    .venv/bin/python bench/bench_agent_tools.py [--calls 40]

Uses the embedded stack (`ise stack up`; started if needed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid
from collections.abc import Callable

from services.egress.control import EgressControl
from services.executor.settings import ExecutorSettings
from services.executor.tools import Toolbox
from services.executor.web_access import WebAccess
from services.executor.workspace.docker_backend import DockerWorkspaceBackend
from services.stack import stack
from services.stack.procs import ServerRecord
from services.stack.settings import StackSettings

WEB_CALLS = {
    "web_search": {"query": "json dumps indent", "count": 5},
    "web_fetch": {"url": "http://docs.python.org/3.11/library/csv.html", "maxChars": 4000},
}
LOCAL_CALLS: dict[str, Callable[[int], dict]] = {
    "exec": lambda i: {"command": f"echo {i} && ls /workspace >/dev/null"},
    "write": lambda i: {"path": f"notes/n{i % 5}.md", "content": f"note {i}\n" * 20},
    "read": lambda i: {"path": f"notes/n{i % 5}.md", "offset": 1, "limit": 10},
    "edit": lambda i: {"path": "notes/edit.md", "oldText": f"v{i}", "newText": f"v{i + 1}"},
    "memory_search": lambda i: {"query": "backup rotation days"},
    "memory_get": lambda i: {"path": "MEMORY.md", "from": 1, "lines": 3},
    "process": lambda i: {"action": "list"},
}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(box: Toolbox, name: str, args: dict) -> float:
    started = time.perf_counter()
    out = box.run(f"c{uuid.uuid4().hex[:8]}", name, json.dumps(args))
    elapsed = (time.perf_counter() - started) * 1000
    if not out.meta.ok:
        raise SystemExit(f"{name} failed in the benchmark: {out.content[:300]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=40, help="calls per tool (default 40)")
    args = parser.parse_args()
    os.environ.update(stack.up().env())
    settings = ExecutorSettings()
    proxied = settings.web_access()
    if proxied is None:
        raise SystemExit("the stack runs without the web (ISE_WEB=false): nothing to compare")
    record = ServerRecord.load(StackSettings().stack_path(), "web")
    if record is None:
        raise SystemExit("no local web recorded in the stack dir: run `ise stack up`")
    web_host, _, web_port = record.address.rpartition(":")
    direct = WebAccess(web_host, int(web_port), proxied.secret)  # the local web itself as the "proxy"
    backend = DockerWorkspaceBackend(settings.image, settings.limits(), name_prefix=f"ise-bt-{uuid.uuid4().hex[:6]}")
    ep = f"bench-tools-{uuid.uuid4().hex[:8]}"
    backend.create(ep, "bench")
    try:
        box = Toolbox(backend, ep, web=proxied)
        timed(box, "write", {"path": "MEMORY.md", "content": "# Memory\n- backup rotation: keep 14 days\n"})
        timed(box, "write", {"path": "notes/edit.md", "content": "v0\n"})
        rows = []
        for name, make in LOCAL_CALLS.items():
            times = [timed(box, name, make(i)) for i in range(args.calls)]
            rows.append((name, statistics.median(times), pct(times, 0.99), None))
        for name, call in WEB_CALLS.items():
            base = [timed(Toolbox(backend, ep, web=direct), name, call) for _ in range(args.calls)]
            through = [timed(box, name, call) for _ in range(args.calls)]
            rows.append((f"{name} direct", statistics.median(base), pct(base, 0.99), None))
            rows.append(
                (
                    f"{name} proxied",
                    statistics.median(through),
                    pct(through, 0.99),
                    statistics.median(through) / statistics.median(base),
                )
            )
        recording = EgressControl((proxied.proxy_host, proxied.proxy_port), proxied.secret).fetch_recording_bytes(ep)
        web_calls = args.calls * len(WEB_CALLS)
    finally:
        backend.close(ep)
    print(f"{'tool':<22}{'p50 ms':>9}{'p99 ms':>9}{'ratio':>8}")
    for name, p50, p99, ratio in rows:
        print(f"{name:<22}{p50:>9.1f}{p99:>9.1f}{'' if ratio is None else f'{ratio:>7.2f}x':>8}")
    print(
        f"recording: {len(recording)} bytes for {web_calls} proxied web calls = {len(recording) / web_calls:.0f} B/call"
    )


if __name__ == "__main__":
    main()
