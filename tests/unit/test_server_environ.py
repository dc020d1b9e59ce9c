"""Shared servers started by a run (web, egress, Kafka, Redis, dockerd) carry none of its settings."""

from __future__ import annotations

import pytest

from services.stack.procs import server_environ


def test_a_server_keeps_the_machine_settings_and_drops_the_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISE_REDIS_KEY_PREFIX", "run-a")  # the run's identity (what tests find processes by)
    monkeypatch.setenv("ISE_LLM_AGENT_API_KEY", "sk-secret")
    monkeypatch.setenv("ISE_SIM_MAX_TURNS", "3")
    monkeypatch.setenv("ISE_WEB_CACHE_DIR", "/data/web")  # read by the local web itself
    monkeypatch.setenv("PATH", "/usr/bin")
    env = server_environ({"ISE_EGRESS_SECRET_FILE": "/s/secret"})
    assert not {"ISE_REDIS_KEY_PREFIX", "ISE_LLM_AGENT_API_KEY", "ISE_SIM_MAX_TURNS"} & set(env)
    assert env["ISE_WEB_CACHE_DIR"] == "/data/web"
    assert env["ISE_EGRESS_SECRET_FILE"] == "/s/secret"
    assert env["PATH"] == "/usr/bin"
