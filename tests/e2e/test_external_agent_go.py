"""The Go client (clients/go) drives episodes over gRPC ``ise.v1.Episodes`` (ISE_EXEC_AGENT=external).

The Go example agent is built with ``go build`` and run as its own process, bridging the scripted
LLM's ``default:agent`` to Episodes, against the real stack (broker, Redis, Docker, gRPC). Its
records must be the built-in agent's shape, with tool results only real execution could give, one
per episode, naming the Go agent. ``go vet`` and the Go unit tests run from here too, so the
README's test command covers them. Needs ``go`` and the Go module proxy (or a warm module cache);
skipped, saying so, only when ``go`` is not installed.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from test_external_agent import TOKEN, _check_records, _external_env, _start_agent, _target

from services.cli.pipeline import run_pipeline
from services.common.ids import new_run_id
from services.dedup.stats import iter_records
from services.intent.settings import IntentSettings

ROOT = Path(__file__).resolve().parents[2]
GO_DIR = ROOT / "clients" / "go"
GO = shutil.which("go")
needs_go = pytest.mark.skipif(GO is None, reason="`go` is not installed: the Go client (clients/go) is not tested")


def _go(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    assert GO is not None
    env = os.environ | {"GOFLAGS": "-mod=mod"}  # modules from the module proxy (or the cache)
    done = subprocess.run([GO, *args], cwd=GO_DIR, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"go {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@needs_go
@pytest.mark.timeout(900)
def test_go_vet_and_unit_tests() -> None:
    _go("vet", "./...")
    done = _go("test", "-count=1", "./...")
    assert "ok  \tgithub.com/ise-trace/ise-trace/clients/go/episodes" in done.stdout, done.stdout


@pytest.fixture(scope="module")
def go_agent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if GO is None:
        pytest.skip("`go` is not installed: the Go example agent is not tested")
    binary = tmp_path_factory.mktemp("go-agent") / "example-agent"
    _go("build", "-o", str(binary), "./cmd/example-agent")
    return binary


@needs_go
@pytest.mark.timeout(900)
async def test_go_example_agent_drives_episodes(go_agent: Path, pipeline_env, scripted_llm, out_dir: Path) -> None:
    env = _external_env(pipeline_env)
    scripted_llm.reset()
    argv = [
        *(str(go_agent), "--target", _target(env), "--token", TOKEN, "--name", "goagent"),
        *("--llm-base-url", scripted_llm.base_url, "--llm-model", "default:agent"),
    ]
    agent, out_path, log_path = _start_agent(argv, out_dir.parent)
    try:
        result = await run_pipeline(new_run_id(), env, out_dir, IntentSettings(count=3, seed=7), timeout_s=360)
    finally:
        agent.terminate()
        await asyncio.to_thread(agent.wait, 30)
    played = [json.loads(line) for line in out_path.read_text().splitlines() if line.startswith("{")]
    records = iter_records(result.run_dir)
    assert len(records) >= 2, (result.progress, log_path.read_text()[-3000:])
    assert len(records) == int(result.progress.get("verdict.success", 0))
    assert {p["episode_id"] for p in played if p["verdict"] == "success"} == {
        r["metadata"]["episode_id"] for r in records
    }
    assert all(p["turns"] == 3 for p in played if p["verdict"] == "success")
    _check_records(records, "goagent/default:agent")
