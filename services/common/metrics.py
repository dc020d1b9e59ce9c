"""Prometheus metrics of a service process: every instrument the services record, and the endpoint.

Each process keeps its own default registry and serves it as ``/metrics`` on
``ISE_METRICS_PORT`` (``0``: no endpoint) from a daemon thread, so a scrape never runs on the
event loop. ``ise run`` gives each process it starts a free port and lists them all in
``<run>/logs/metrics-targets.json`` (Prometheus ``file_sd`` format); compose sets one port per
container. The instruments are module-level, as ``prometheus_client`` intends; recording is a
lock and an add, cheap enough for every event and tool call.

What the numbers mean:

* counters count what *this process* did, deliveries included: after a crash and a redelivery a
  turn's tool calls are counted again. The run's exact, redelivery-safe figures are the
  progress counters in Redis (``RunProgress``) that ``ise run`` and the dataset agree with;
* ``ise_episodes_in_flight`` goes up on the replica that starts an episode and down on the one
  that ends it, so only the sum over simulator replicas is meaningful;
* label values are bounded: topics, verdicts, roles, the toolset's tool names (anything else is
  ``unknown``), gate decisions, and run ids for the per-run Vendi gauge.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram, start_http_server
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.errors import ConfigError

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
"""Seconds: from a Redis round trip to a slow remote model's answer."""


class MetricsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ISE_METRICS_", extra="forbid")

    port: int = Field(0, ge=0, le=65535, description="Serve Prometheus /metrics on this port (0: off).")
    host: str = Field("127.0.0.1", description="Address the metrics endpoint binds (0.0.0.0 in containers).")


# ---------------------------------------------------------------- the bus (every service)

EVENTS_CONSUMED = Counter(
    "ise_events_consumed",
    "Events taken from a topic, by outcome: handled, dead_letter, other_run.",
    ["topic", "outcome"],
)
EVENTS_PRODUCED = Counter("ise_events_produced", "Events published to a topic.", ["topic"])
HANDLER_SECONDS = Histogram(
    "ise_handler_seconds", "Time from an event's validation to its settlement.", ["topic"], buckets=LATENCY_BUCKETS
)
DEAD_LETTERS = Counter("ise_dead_letters", "Events sent to the dead-letter topic.", ["source_topic", "error_type"])

# ---------------------------------------------------------------- LLM calls (intent, simulator, executor)

LLM_SECONDS = Histogram("ise_llm_request_seconds", "One chat completion, by role.", ["role"], buckets=LATENCY_BUCKETS)
LLM_TOKENS = Counter("ise_llm_tokens", "Tokens the endpoint reported, by role and kind.", ["role", "kind"])
LLM_FAILURES = Counter("ise_llm_failures", "Chat completions that failed, by role and kind.", ["role", "kind"])

# ---------------------------------------------------------------- simulator

EPISODES_STARTED = Counter("ise_episodes_started", "Episode attempts started by the user simulator.")
EPISODES_FINISHED = Counter("ise_episodes_finished", "Episode attempts ended, by verdict.", ["verdict"])
EPISODES_IN_FLIGHT = Gauge("ise_episodes_in_flight", "Episodes started minus ended here (sum over replicas).")
EPISODE_USER_TURNS = Histogram(
    "ise_episode_user_turns", "User turns of an ended episode.", buckets=(1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 30)
)

# ---------------------------------------------------------------- executor

AGENT_TURNS = Counter("ise_agent_turns", "Agent turns answered, by outcome: answered or failed.", ["outcome"])
TOOL_CALLS = Counter("ise_tool_calls", "Tool calls run in a workspace, by tool and status.", ["tool", "status"])
TOOL_SECONDS = Histogram("ise_tool_seconds", "One tool call's duration, by tool.", ["tool"], buckets=LATENCY_BUCKETS)
WORKSPACES = Gauge("ise_workspaces", "Workspace containers of this replica: warm (idle) or in_use.", ["state"])

# ---------------------------------------------------------------- dedup

GATE_DECISIONS = Counter("ise_gate_decisions", "Intents the gate decided: accepted or rejected.", ["decision"])
INTENT_VENDI = Gauge("ise_intent_vendi", "The latest Vendi Score of a run's accepted intents.", ["run_id"])
RECORDS_WRITTEN = Counter("ise_records_written", "Trajectories written to the dataset, by verdict.", ["verdict"])


def tool_status(ok: bool, exit_code: int | None, error: str | None) -> str:
    """``ok``, ``error`` (the tool refused or failed) or ``exit_nonzero`` (the command ran and failed)."""
    if error:
        return "error"
    if not ok or (exit_code not in (None, 0)):
        return "exit_nonzero"
    return "ok"


def watch_workspaces(warm: Callable[[], int], in_use: Callable[[], int]) -> None:
    """Read the workspace gauges from the pool at scrape time (callbacks run in the scrape thread)."""
    WORKSPACES.labels("warm").set_function(lambda: float(warm()))
    WORKSPACES.labels("in_use").set_function(lambda: float(in_use()))


def serve_metrics(service: str, settings: MetricsSettings | None = None) -> int | None:
    """Start this process's ``/metrics`` endpoint if a port is set; returns the port, or None."""
    chosen = settings or MetricsSettings()
    if not chosen.port:
        return None
    try:
        start_http_server(chosen.port, addr=chosen.host)
    except OSError as exc:
        raise ConfigError(
            f"{service}: cannot serve metrics on {chosen.host}:{chosen.port} ({exc.strerror or exc}); "
            "set ISE_METRICS_PORT to a free port, or 0 for no metrics endpoint"
        ) from exc
    log.info("%s: Prometheus metrics on http://%s:%d/metrics", service, chosen.host, chosen.port)
    return chosen.port
