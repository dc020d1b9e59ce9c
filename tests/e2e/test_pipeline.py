"""The whole pipeline over the real broker, Redis and Docker with the scripted LLM.

Six intents go through intent -> dedup -> simulator <-> executor -> dedup as separate processes.
Every trajectory must hold results only real execution can produce, the dataset one line per
finished episode, a malformed event must land in the DLQ without stopping anything, and no
workspace container may be left behind.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import docker
from aiokafka import AIOKafkaProducer

from services.cli.pipeline import run_pipeline
from services.common.bus import ensure_topics
from services.common.contracts.events import DeadLetter
from services.common.ids import new_run_id
from services.common.settings import KafkaSettings
from services.dedup.stats import iter_records, shard_files
from services.intent.settings import IntentSettings
from tests.trainer_checks import check_reference_fields, load_with_datasets, render_chat

N_INTENTS = 6


async def _publish_garbage(bootstrap: str, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b'{"type": "task.ready", "surprise": tru', key=b"garbage")
    finally:
        await producer.stop()


def _tool_outputs(record: dict) -> dict[str, tuple[str, str]]:
    """tool_call_id -> (function name, tool message content)."""
    names = {c["id"]: c["function"]["name"] for m in record["messages"] for c in m.get("tool_calls") or []}
    return {
        m["tool_call_id"]: (names[m["tool_call_id"]], m["content"]) for m in record["messages"] if m["role"] == "tool"
    }


def _user_model_views(scripted_llm) -> list[str]:
    """The assistant-side messages (agent views) the user model was shown, from the scripted LLM's log."""
    return [
        str(m.get("content"))
        for r in scripted_llm.requests()
        if r.get("model") == "default:user" and isinstance(r.get("body"), dict)
        for m in r["body"].get("messages", [])
        if m.get("role") == "assistant"
    ]


async def test_pipeline_end_to_end(
    stack_endpoints, pipeline_env, scripted_llm, prefix: str, out_dir: Path, read_topic
) -> None:
    env = pipeline_env("default")
    assert env["ISE_SIM_WORKSPACES_ADDR"] == f"127.0.0.1:{env['ISE_EXEC_GRPC_PORT']}"
    scripted_llm.reset()
    bootstrap = stack_endpoints.kafka_bootstrap
    kafka = KafkaSettings(bootstrap=bootstrap, topic_prefix=f"{prefix}.", partitions=4)
    await ensure_topics(kafka)
    await _publish_garbage(bootstrap, kafka.topics.tasks)

    run_id = new_run_id()
    result = await run_pipeline(run_id, env, out_dir, IntentSettings(count=N_INTENTS, seed=7), timeout_s=420)

    progress = result.progress
    assert progress["proposed"] == N_INTENTS
    accepted = int(progress["accepted"])
    assert accepted + int(progress.get("rejected", 0)) == N_INTENTS
    assert accepted >= N_INTENTS - 1
    records = iter_records(result.run_dir)
    written = accepted - int(progress.get("verdict.infrastructure_error", 0))
    assert len(records) == written == int(progress.get("verdict.success", 0))
    assert len({r["metadata"]["episode_id"] for r in records}) == len(records)

    views = _user_model_views(scripted_llm)
    for record in records:
        meta = record["metadata"]
        assert meta["verdict"] == "success"
        assert meta["counts"]["user_turns"] == 3
        first_user = next(m["content"] for m in record["messages"] if m["role"] == "user")
        ep = hashlib.sha256(first_user.encode()).hexdigest()[:8]
        outputs = list(_tool_outputs(record).values())
        # turn 0 wrote the plan; wc -c saw its real size in the container
        plan = f"plan {ep}\n- gather the inputs\n- produce the report\n"
        assert any(n == "exec" and f"{len(plan.encode())} notes/plan.md" in c for n, c in outputs)
        # the user model was grounded in the executor's Inspect: the real file and its real size
        grounded = f"[workspace] files created or changed since the start: notes/plan.md ({len(plan.encode())} B)"
        assert any(grounded in v for v in views), views[:3]
        # turn 1 edited the plan (the reference's edit: oldText/newText), turn 2 read the result back
        edited = plan.replace("- produce the report", "- produce the report (input check exits 3: fix first)")
        assert ("edit", "Successfully replaced text in notes/plan.md.") in outputs
        assert ("read", edited) in outputs
        # a real non-zero exit code, recorded in the structured results
        codes = [t["exit_code"] for t in meta["tool_results"] if t["name"] == "exec"]
        assert 3 in codes and 0 in codes
        assert any(c.endswith("(Command exited with code 3)") and "checking inputs" in c for _, c in outputs)
        # the malformed call from the LLM became a tool error, not a crash
        errors = [t for t in meta["tool_results"] if not t["ok"] and t["error"]]
        assert any("not valid JSON" in t["error"] for t in errors)
        for m in record["messages"]:
            for call in m.get("tool_calls") or []:
                assert isinstance(call["function"]["arguments"], str)
        assert record["tools"] and {t["function"]["name"] for t in record["tools"]} >= {"exec", "read", "write"}
        assert meta["intent"]["complexity"] in {"simple", "medium", "complex"}
        assert meta["workspace_image"]

    letters = [DeadLetter.model_validate_json(v) for v in await read_topic(bootstrap, kafka.topics.dlq, 1)]
    assert [(d.source_topic, d.error_type) for d in letters] == [(kafka.topics.tasks, "ContractError")]
    assert "surprise" in letters[0].payload

    # a trainer reads it as it reads the reference's: its fields and meanings, the intent itself as
    # the opening, datasets.load_dataset, a tool-aware chat template
    for record in records:
        check_reference_fields(record)
        assert next(m["content"] for m in record["messages"] if m["role"] == "user") == record["intent"]
        assert record["intent"] == record["metadata"]["intent"]["text"] and record["status"] == "completed"
    rows = load_with_datasets(shard_files(result.run_dir), out_dir / "hf-cache")
    assert sorted(r["session_id"] for r in rows) == sorted(r["session_id"] for r in records)
    assert all(
        len(r["messages"]) == len(next(x for x in records if x["session_id"] == r["session_id"])["messages"])
        for r in rows
    )
    rendered = render_chat(records[0])
    assert "<tool_call>" in rendered and '"name": "exec"' in rendered and records[0]["final_output"] in rendered

    client = docker.from_env()
    # episodes closed their containers and the stopped executor removed its idle warm-pool ones
    leftovers = client.containers.list(all=True, filters={"label": f"ise.prefix={env['ISE_EXEC_CONTAINER_PREFIX']}"})
    assert leftovers == []
    stats = json.loads(result.stats_path.read_text())
    assert stats["trajectories"] == len(records)
    assert stats["intent_diversity"]["overall"]["n"] == accepted  # exact Vendi of the accepted pool
    assert stats["tools"]["exec"] >= 3 * len(records)
    assert stats["verified_share"] == 1.0 and stats["role_drift_rate"] == 0.0
    assert sum(stats["domain_x_tool"].values()) >= stats["tools"]["exec"]
