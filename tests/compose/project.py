"""``docker compose`` on the checkout's compose.yaml under one project name, as the compose tests
drive it (tests/compose/conftest.py makes one per test)."""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass
class ComposeProject:
    """``docker compose`` for compose.yaml under one project name, with the test's env file."""

    name: str
    env_file: Path
    out_dir: Path
    token: str = field(default_factory=lambda: secrets.token_hex(16))

    @property
    def env(self) -> dict[str, str]:
        """The test process's environment without its ISE_* settings, plus the project's."""
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("ISE_", "COMPOSE_"))}
        return {**clean, "ISE_EXEC_GRPC_TOKEN": self.token, "ISE_OUT_DIR": str(self.out_dir)}

    @property
    def argv(self) -> list[str]:
        project = ("--project-name", self.name, "--project-directory", str(REPO), "--file", str(REPO / "compose.yaml"))
        return ["docker", "compose", *project, "--env-file", str(self.env_file)]

    def __call__(
        self, *args: str, env: dict[str, str] | None = None, check: bool = True, timeout_s: float = 900
    ) -> subprocess.CompletedProcess[str]:
        argv = [*self.argv, *args]
        done = subprocess.run(argv, cwd=REPO, env=env or self.env, capture_output=True, text=True, timeout=timeout_s)
        if check and done.returncode != 0:
            raise AssertionError(
                f"`{shlex.join(argv[2:])}` exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}\n"
                f"--- logs ---\n{self.logs()}"
            )
        return done

    def containers(self, service: str) -> list[str]:
        return self("ps", "--quiet", service).stdout.split()

    def host_port(self, service: str, port: int) -> int:
        return int(self("port", service, str(port)).stdout.strip().rpartition(":")[2])

    def logs(self, tail: int = 60) -> str:
        argv = [*self.argv, "logs", "--no-color", "--tail", str(tail)]
        done = subprocess.run(argv, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=120)
        return done.stdout[-12000:]
