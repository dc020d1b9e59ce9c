"""The compose tier's fixtures: the Compose CLI and the locally built images (made if missing), and
one compose project per test under a unique name, always taken down with its volumes.

tests/conftest.py marks every test in this folder ``compose``.  The project runs the scripted LLM
(``deploy/compose/scripted.env``) with the ``slow`` scenario, whose turn 1 runs an 8 s command, so
a test can kill an executor in the middle of a turn.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.stack.compose_images import ensure_images
from services.stack.docker_daemon import ensure_docker
from tests.compose.project import REPO, ComposeProject
from tests.faults.checks import remove_containers

SCRIPTED_ENV = REPO / "deploy" / "compose" / "scripted.env"
SCENARIO = "slow"


@pytest.fixture(scope="session")
def compose_images() -> list[str]:
    """The Compose CLI (scripts/install_compose.sh builds it when missing) and the stack's images."""
    ensure_docker()
    installed = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if installed.returncode != 0:
        subprocess.run([str(REPO / "scripts" / "install_compose.sh")], check=True, timeout=1800)
    return [result.tag for result in ensure_images()]


@pytest.fixture
def project(compose_images: list[str], tmp_path: Path) -> Iterator[ComposeProject]:
    """A compose project of its own (network, volumes, workspace prefix), on the scripted LLM."""
    name = f"ise-t{uuid.uuid4().hex[:8]}"
    env_file = tmp_path / "compose.env"
    shipped = SCRIPTED_ENV.read_text()
    own_file = "ISE_LLM_ENV_FILE=deploy/compose/scripted.env"
    assert own_file in shipped and shipped.count("=default:") == 3, "scripted.env changed: update this fixture"
    env_file.write_text(shipped.replace("=default:", f"={SCENARIO}:").replace(own_file, f"ISE_LLM_ENV_FILE={env_file}"))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    compose = ComposeProject(name, env_file, out_dir)
    try:
        yield compose
    finally:
        compose("down", "--volumes", "--remove-orphans", "--timeout", "20", check=False, timeout_s=300)
        remove_containers(f"{name}-ws")  # workspaces a killed executor could not close
