"""compose.yaml runs only images this machine builds, keeps the executor scalable and token-guarded,
and its env files name only settings the services know (tests/compose brings the stack up)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from services.common.settings_check import known_settings
from services.stack.compose_images import IMAGES
from services.stack.workspace_image import DEFAULT_TAG as WORKSPACE_TAG

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
TOKEN_REQUIRED = re.compile(r"^\$\{ISE_EXEC_GRPC_TOKEN:\?.+\}$")


def _env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))
    return dict(pairs)


def test_every_service_runs_a_locally_built_image_and_never_pulls() -> None:
    built = {spec.tag for spec in IMAGES.values()}
    assert set(SERVICES) == {"kafka", "redis", "intent", "dedup", "simulator", "executor", "llm", "prometheus"}
    for name, service in SERVICES.items():
        assert service["image"] in built, (
            f"{name} runs {service['image']}, which scripts/build_images.sh does not build"
        )
        assert service["pull_policy"] == "never", name
        assert "build" not in service, f"{name}: images come from scripts/build_images.sh, not compose build"


def test_the_images_start_from_the_workspace_image_only() -> None:
    """No registry base anywhere: each Dockerfile's only FROM is the BASE build argument, which the
    builder sets to the workspace image (debootstrap) or to another image it built, named by default."""
    for spec in IMAGES.values():
        text = spec.dockerfile.read_text()
        assert re.findall(r"^FROM .*$", text, re.M) == ["FROM ${BASE}"], spec.dockerfile
        base = IMAGES[spec.base].tag if spec.base else WORKSPACE_TAG
        assert f"ARG BASE={base}\n" in text, spec.dockerfile


def test_the_services_are_the_pipeline_and_the_intent_job_is_a_one_shot() -> None:
    for name in ("dedup", "simulator", "executor"):
        assert SERVICES[name]["command"] == ["service", name]
        assert SERVICES[name]["environment"]["ISE_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert SERVICES[name]["healthcheck"]["test"][0] == "CMD"
    intent = SERVICES["intent"]
    assert intent["command"] == ["job", "intent"]
    assert intent["restart"] == "no" and intent["profiles"] == ["job"], "`up` must not start a run by itself"
    assert {"ISE_RUN_ID", "ISE_INTENT_COUNT"} <= set(intent["environment"])
    for name in ("kafka", "redis", "llm", "prometheus"):
        assert SERVICES[name]["healthcheck"]["test"][0] == "CMD", name


def test_prometheus_scrapes_every_service_on_its_metrics_port() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    (dns,) = config["scrape_configs"][0]["dns_sd_configs"]
    assert set(dns["names"]) == {"dedup", "simulator", "executor"}
    for name in dns["names"]:
        env = SERVICES[name]["environment"]
        assert (env["ISE_METRICS_PORT"], env["ISE_METRICS_HOST"]) == (str(dns["port"]), "0.0.0.0"), name
    assert all(p.startswith("127.0.0.1:") for p in SERVICES["prometheus"]["ports"])


def test_the_executor_scales_and_its_public_grpc_needs_a_token() -> None:
    executor = SERVICES["executor"]
    assert "container_name" not in executor
    assert all(":" not in str(port) for port in executor["ports"]), "fixed host ports block --scale"
    env = executor["environment"]
    assert env["ISE_EXEC_GRPC_HOST"] == "0.0.0.0"
    assert TOKEN_REQUIRED.match(env["ISE_EXEC_GRPC_TOKEN"]), "compose must refuse to start without a token"
    assert TOKEN_REQUIRED.match(SERVICES["simulator"]["environment"]["ISE_SIM_WORKSPACES_TOKEN"])
    assert "/var/run/docker.sock:/var/run/docker.sock" in executor["volumes"]
    assert "${COMPOSE_PROJECT_NAME}" in env["ISE_EXEC_CONTAINER_PREFIX"], "workspaces of one project only"
    assert all(p.startswith("127.0.0.1:") for p in SERVICES["redis"]["ports"]), "Redis has no password"


def test_env_files_set_only_known_settings_and_the_scripted_one_is_complete() -> None:
    known = known_settings()
    for path in sorted((ROOT / "deploy" / "compose").glob("*.env")):
        names = {n for n in _env_file(path) if n.startswith("ISE_")}
        assert names <= known, f"{path.name}: unknown settings {sorted(names - known)}"
    scripted = _env_file(ROOT / "deploy" / "compose" / "scripted.env")
    assert scripted["COMPOSE_PROFILES"] == "scripted"
    assert scripted["ISE_LLM_ENV_FILE"] == "deploy/compose/scripted.env", "it is also the services' env_file"
    for role in ("INTENT", "USER", "AGENT"):
        assert scripted[f"ISE_LLM_{role}_BASE_URL"] == "http://llm:8765/v1"
        assert scripted[f"ISE_LLM_{role}_MODEL"] == f"default:{role.lower()}"
    assert "--port" in SERVICES["llm"]["entrypoint"] and "8765" in SERVICES["llm"]["entrypoint"]
