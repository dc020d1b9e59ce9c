"""compose.yaml parses, names every service, and keeps the executor scalable."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_compose_names_every_service_and_executor_scales() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"kafka", "redis", "intent", "dedup", "simulator", "executor"}
    for name in ("intent", "dedup", "simulator", "executor"):
        assert services[name]["command"] == ["service", name]
        assert services[name]["build"]["dockerfile"] == "deploy/services/Dockerfile"
        assert services[name]["environment"]["ISE_KAFKA_BOOTSTRAP"] == "kafka:9092"
    executor = services["executor"]
    assert "container_name" not in executor
    assert all(":" not in str(port) for port in executor.get("ports", [])), "fixed host ports block --scale"
    assert (ROOT / "deploy/services/Dockerfile").exists()
