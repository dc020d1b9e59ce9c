"""The fault-injection tier's fixtures: tests/conftest.py marks every test in this folder ``faults``."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.faults.checks import REPO, FaultRun, remove_containers

PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable
MAX_TURNS = "3"
RUN_TIMEOUT_S = 240


@pytest.fixture
def marker(prefix: str) -> str:
    """What every process of this test carries in its environment."""
    return f"ISE_REDIS_KEY_PREFIX={prefix}"


@pytest.fixture
def fault_env(pipeline_env) -> Callable[..., dict[str, str]]:
    """``fault_env(scenario, **ISE_vars)``: the pipeline environment, three user turns at most."""

    def make(scenario: str = "default", **extra: str) -> dict[str, str]:
        return {**pipeline_env(scenario), "ISE_SIM_MAX_TURNS": MAX_TURNS, **extra}

    return make


@pytest.fixture
async def runs(prefix: str) -> AsyncIterator[list[FaultRun]]:
    """FaultRuns a test starts: stopped at the end whatever happened, their leftovers removed."""
    started: list[FaultRun] = []
    yield started
    for run in started:
        with contextlib.suppress(Exception):
            await run.stop()
    await asyncio.to_thread(remove_containers, f"ise-{prefix}")


def new_run(runs: list[FaultRun], env: dict[str, str], out_dir: Path, **kwargs) -> FaultRun:
    run = FaultRun(env, out_dir, **kwargs)
    runs.append(run)
    return run


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: fault injection on the real stack (outages, crashes, hostile input)")
