"""The paper's agent world end to end: reference tools, the local web through the egress proxy,
skills and the runtime prompt, recorded, and re-executed offline from the recording.

The ``world`` scenario's agent searches the local web, fetches a documentation page, clones a git
repository from inside its workspace (workspace egress on), runs a background job it follows with
``process``, keeps a note in memory, edits and reads a file. The records must hold the web
exchanges the proxy really saw (the sidecar recording, hash-checked), the exact prompt, tools
and skills; re-executing an episode answers every web request from the recording (the proxy
marks them replayed) and gives the same web tool results.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from services.cli.pipeline import run_pipeline
from services.common.bus import ensure_topics
from services.common.ids import new_run_id
from services.common.settings import KafkaSettings
from services.dedup.stats import iter_records
from services.egress.control import EgressControl
from services.executor.reexecute import WEB_TOOLS, load_recording, reexecute
from services.executor.runtime_prompt import AgentWorld
from services.executor.settings import ExecutorSettings
from services.executor.tools import tool_schemas
from services.executor.workspace.docker_backend import DockerWorkspaceBackend
from services.intent.settings import IntentSettings

pytestmark = pytest.mark.e2e
N_INTENTS = 2


def _tool_names(record: dict) -> list[str]:
    return [c["function"]["name"] for m in record["messages"] for c in m.get("tool_calls") or []]


def _results(record: dict, name: str) -> list[str]:
    ids = {c["id"] for m in record["messages"] for c in m.get("tool_calls") or [] if c["function"]["name"] == name}
    return [m["content"] for m in record["messages"] if m["role"] == "tool" and m["tool_call_id"] in ids]


async def test_agent_world_records_and_reexecutes(stack_endpoints, pipeline_env, prefix: str, out_dir: Path) -> None:
    assert stack_endpoints.web is not None and stack_endpoints.web.network, "the stack runs the web and its network"
    env = {**pipeline_env("world"), "ISE_EXEC_WORKSPACE_EGRESS": "true"}
    kafka = KafkaSettings(bootstrap=stack_endpoints.kafka_bootstrap, topic_prefix=f"{prefix}.", partitions=4)
    await ensure_topics(kafka)
    result = await run_pipeline(new_run_id(), env, out_dir, IntentSettings(count=N_INTENTS, seed=3), timeout_s=420)
    records = iter_records(result.run_dir)
    assert len(records) == N_INTENTS and all(r["status"] == "completed" for r in records)

    for record in records:
        names = _tool_names(record)
        assert len(set(names)) >= 4 and {"web_search", "web_fetch", "process", "memory_search"} <= set(names)
        assert [t["function"]["name"] for t in record["tools"]] == [t["function"]["name"] for t in tool_schemas()]
        assert record["enable_thinking"] and record["metadata"]["session"]["thinking"] == "on"
        assert any(m.get("reasoning_content") for m in record["messages"] if m["role"] == "assistant")
        system = record["messages"][0]
        assert system["role"] == "system" and record["metadata"]["session"]["system_prompt"] == system["content"]
        assert record["skills"] and all(s["filePath"].startswith("/workspace/skills/") for s in record["skills"])
        assert all(f"- {s['name']}: " in system["content"] for s in record["skills"]), "the prompt lists every skill"

        search = json.loads(_results(record, "web_search")[0])
        assert search["provider"] == "local" and search["results"][0]["url"].endswith("/library/json.html")
        fetched = json.loads(_results(record, "web_fetch")[0])
        assert (
            fetched["status"] == 200 and "JSON" in fetched["text"] and "EXTERNAL_UNTRUSTED_CONTENT" in fetched["text"]
        )
        clone = next(c for c in _results(record, "exec") if "git clone" in c or "json" in c.lower())
        assert "Command exited" not in clone, f"git clone through the workspace's proxy failed: {clone}"
        turn_of, turn = {}, 0
        for m in record["messages"]:
            turn += m["role"] == "user"
            for c in m.get("tool_calls") or []:
                turn_of.setdefault(
                    c["function"]["name"] + ("-bg" if '"background"' in c["function"]["arguments"] else ""), turn
                )
                if '"poll"' in c["function"]["arguments"]:
                    turn_of["poll"] = turn
        assert turn_of["poll"] == turn_of["exec-bg"] + 1, "the background job is finished through process a turn later"
        poll = next(c for c in _results(record, "process") if "Process exited" in c)
        assert "all inputs ok" in poll and "code 0" in poll

        web = record["metadata"]["web"]
        sidecar = result.run_dir / web["recording"]
        data = sidecar.read_bytes()
        assert hashlib.sha256(data).hexdigest() == web["recording_sha256"] and len(data) == web["recording_bytes"]
        urls = [x["url"] for x in web["exchanges"]]
        assert any("search.ise.test/search" in u for u in urls)
        assert "https://docs.python.org/3.11/library/json.html" in urls
        assert any(u.startswith("http://git.ise.test/json.git/") for u in urls), "the workspace's git clone is recorded"

    record = records[0]
    settings = ExecutorSettings.model_validate(
        {
            "image": stack_endpoints.workspace_image,
            "web_proxy": stack_endpoints.web.proxy,
            "web_secret": stack_endpoints.web.secret,
            "web_ca": stack_endpoints.web.ca_path,
            "web_network": stack_endpoints.web.network,
            "workspace_egress": True,
        }
    )
    web = settings.web_access()
    assert web is not None
    backend = DockerWorkspaceBackend(
        settings.image, settings.limits(), name_prefix=f"ise-{prefix}-rx", egress=settings.workspace_egress_config()
    )
    world = AgentWorld.load(tool_schemas(), "", "egress")
    shard = next(result.run_dir.glob("trajectories-*.jsonl"))
    report = reexecute(record, load_recording(shard, record), backend, web, world)
    assert report.web_identical(), [(c.name, c.recorded[:200], c.replayed[:200]) for c in report.differing]
    assert sum(c.name in WEB_TOOLS for c in report.calls) == 2
    assert len(report.exchanges) == len(record["metadata"]["web"]["exchanges"]) and report.offline()
    control = EgressControl((web.proxy_host, web.proxy_port), web.secret)
    assert control.fetch_recording(report.replay_episode) == [], "the replay episode's recording is cleaned up"
    assert backend.list_workspaces() == []
