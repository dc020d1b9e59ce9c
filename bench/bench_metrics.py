"""What Prometheus metrics cost a turn: the per-turn benchmark with and without them, one process.

1. System: two executor services on the embedded stack, each on its own topics, take turns
   answering the same kind of user turn (3 tool calls, scripted LLM), in alternating blocks so
   drift hits both alike. Baseline: ``ISE_METRICS_PORT=0`` (no endpoint). Measured: the endpoint
   on and scraped every 50 ms by a thread (Prometheus scrapes every 15 s; this is 300x harsher).
2. Recording: the instrument calls one such turn makes (events, handler time, LLM calls and
   tokens, tool calls), timed in a loop, against the measured turn.

    .venv/bin/python bench/bench_metrics.py [--turns 40]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
import urllib.request
import uuid
from pathlib import Path

from bench_turn import executor_env, pct, system_turns, warm

from services.cli.pipeline import LocalPipeline
from services.common import metrics as m
from services.common.bus import ensure_topics
from services.common.llm.scripted_server import ScriptedLLMServer
from services.common.settings import KafkaSettings, RedisSettings
from services.common.state import StateStore
from services.executor.settings import ExecutorSettings
from services.executor.workspace.docker_backend import DockerWorkspaceBackend
from services.stack import stack

BLOCKS = 4
EPISODES = 2


def record_one_turn() -> None:
    """The metric operations of one agent turn with 3 tool calls and 4 LLM calls."""
    m.EVENTS_CONSUMED.labels("ise.turns.user", "handled").inc()
    with m.HANDLER_SECONDS.labels("ise.turns.user").time():
        for _ in range(4):
            m.LLM_SECONDS.labels("agent").observe(0.01)
            m.LLM_TOKENS.labels("agent", "prompt").inc(900)
            m.LLM_TOKENS.labels("agent", "completion").inc(40)
        for tool in ("write", "exec", "read"):
            m.TOOL_CALLS.labels(tool, "ok").inc()
            m.TOOL_SECONDS.labels(tool).observe(0.004)
    m.AGENT_TURNS.labels("answered").inc()
    m.EVENTS_PRODUCED.labels("ise.turns.agent").inc()


def recording_us(n: int = 20_000) -> float:
    started = time.perf_counter()
    for _ in range(n):
        record_one_turn()
    return (time.perf_counter() - started) / n * 1e6


class Scraper(threading.Thread):
    def __init__(self, port: int, every_s: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.url, self.every_s, self.stopped, self.scrapes = f"http://127.0.0.1:{port}/metrics", every_s, False, 0

    def run(self) -> None:
        while not self.stopped:
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    response.read()
                self.scrapes += 1
            except OSError:
                pass  # not up yet
            time.sleep(self.every_s)


async def main(turns: int) -> None:
    endpoints = stack.up()
    runs = {}
    with ScriptedLLMServer() as llm_server:
        for name in ("off", "on"):
            prefix = f"benchm{name}{uuid.uuid4().hex[:6]}"
            kafka = KafkaSettings(bootstrap=endpoints.kafka_bootstrap, topic_prefix=f"{prefix}.", partitions=4)
            await ensure_topics(kafka)
            settings = ExecutorSettings(image=endpoints.workspace_image, container_prefix=f"ise-{prefix}")
            backend = DockerWorkspaceBackend(settings.image, settings.limits(), name_prefix=settings.container_prefix)
            # a block's episodes are new ones (turn numbers restart at 0); set 0 warms up
            episodes = [[f"{name}{block}-{i}" for i in range(EPISODES)] for block in range(BLOCKS + 1)]
            await asyncio.to_thread(warm, backend, [ep for group in episodes for ep in group])
            env = executor_env(endpoints, prefix, settings.container_prefix, llm_server.base_url)
            if name == "off":
                env["ISE_METRICS_PORT"] = "0"  # on: the supervisor gives the executor a port
            pipeline = LocalPipeline(env, Path("/tmp") / prefix)
            pipeline.start_one("executor", "executor")
            store = StateStore(RedisSettings(url=endpoints.redis_url, key_prefix=prefix))
            for ep in (ep for group in episodes for ep in group):
                await store.open_episode(ep, "bench")
            await store.close()
            runs[name] = (kafka, backend, episodes, pipeline, pipeline.metrics_ports.get("executor", 0))
        scraper = Scraper(runs["on"][4])
        scraper.start()
        times: dict[str, list[float]] = {"off": [], "on": []}
        try:
            for kafka, backend, episodes, _, _ in runs.values():
                await system_turns(kafka, backend, episodes[0], 1)  # consumer joined, shells and caches warm
            per_block = max(1, turns // BLOCKS // EPISODES)
            for block in range(1, BLOCKS + 1):
                for name, (kafka, backend, episodes, _, _) in runs.items():
                    t, _ = await system_turns(kafka, backend, episodes[block], per_block)
                    times[name].extend(t)
        finally:
            scraper.stopped = True
            for _, backend, episodes, pipeline, _ in runs.values():
                pipeline.stop()
                for ep in (ep for group in episodes for ep in group):
                    await asyncio.to_thread(backend.close, ep)
    if not scraper.scrapes:
        raise SystemExit("the executor's metrics endpoint never answered: the comparison would mean nothing")
    cost = recording_us()
    off, on = times["off"], times["on"]
    print(f"per-turn cost of metrics: {len(on)} turns each, 3 tool calls, scripted LLM ({scraper.scrapes} scrapes)")
    for name, t in (("metrics endpoint off (baseline)", off), ("metrics on, scraped every 50 ms", on)):
        print(
            f"  {name:34} p50 {pct(t, 0.5) * 1e3:7.1f} ms  p99 {pct(t, 0.99) * 1e3:7.1f} ms  mean {statistics.mean(t) * 1e3:7.1f} ms"
        )
    print(f"  ratio on/off (p50)                 {pct(on, 0.5) / pct(off, 0.5):.3f}x")
    print(f"  ratio on/off (mean)                {statistics.mean(on) / statistics.mean(off):.3f}x")
    print(f"  recording one turn's metrics        {cost:.1f} us = {cost / 1e6 / pct(off, 0.5):.4%} of a p50 turn")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=40)
    asyncio.run(main(parser.parse_args().turns))
