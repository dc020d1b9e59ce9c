"""``ise stats`` and ``ise export`` on the reference implementation's format and on ours.

The reference's records are built here in its middle format (system prompt first, tool-call
arguments as JSON objects, ``success`` on tool messages, exit codes only as ``(Command exited
with code N)`` in the text); every figure ``ise stats`` prints is checked against a count made
independently in the test. Export is checked per format for the fields a trainer reads.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from services.cli import main as cli
from services.dedup.export import REFERENCE_FIELDS, convert
from services.dedup.stats import distribution


def reference_record(rng: random.Random, n: int) -> dict[str, Any]:
    """A session as the reference's converter writes it (contents made up here)."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": "runtime prompt"}]
    intent = f"Intent {n}: set up the report and check it."
    for turn in range(rng.randint(1, 9)):
        messages.append({"role": "user", "content": intent if turn == 0 else f"next step {turn}"})
        for step in range(rng.randint(0, 3)):
            names = rng.sample(["exec", "write", "read", "web_search", "process"], rng.randint(1, 2))
            calls = [
                {"id": f"c{turn}-{step}-{i}", "type": "function", "function": {"name": name, "arguments": {"x": i}}}
                for i, name in enumerate(names)
            ]
            messages.append({"role": "assistant", "content": "", "tool_calls": calls})
            for call in calls:
                code = rng.choice([0, 0, 1, 128])
                text = "done" if code == 0 else f"oops\n\n(Command exited with code {code})"
                name = call["function"]["name"]
                ok = rng.random() > 0.1
                messages.append(
                    {"role": "tool", "name": name, "tool_call_id": call["id"], "content": text, "success": ok}
                )
        messages.append({"role": "assistant", "content": f"turn {turn} done"})
    return {
        "status": "completed",
        "session_id": f"intent_{n}__worker__uuid",
        "intent_id": str(n),
        "intent": intent,
        "total_steps": sum(len(m.get("tool_calls") or []) for m in messages),
        "enable_thinking": False,
        "messages": messages,
        "tools": [{"type": "function", "function": {"name": "exec", "parameters": {"type": "object"}}}],
        "skills": [{"name": "pdf", "description": "PDF tools", "filePath": "skills/pdf/SKILL.md"}],
        "final_output": messages[-1]["content"],
        "metadata": {"persona": {"name": "A"}, "domains": [{"name": "d", "selected_tasks": ["t"]}], "session": {}},
    }


def independent_counts(records: list[dict[str, Any]]) -> dict[str, Any]:
    per: dict[str, list[int]] = {"user_turns": [], "messages": [], "tool_calls": [], "unique_tools": []}
    exits, failed, results = [], 0, 0
    for record in records:
        msgs = record["messages"]
        per["user_turns"].append(len([m for m in msgs if m["role"] == "user"]))
        per["messages"].append(len([m for m in msgs if m["role"] != "system"]))
        names = [c["function"]["name"] for m in msgs for c in m.get("tool_calls") or []]
        per["tool_calls"].append(len(names))
        per["unique_tools"].append(len(set(names)))
        for m in msgs:
            if m["role"] == "tool":
                results += 1
                failed += m["success"] is False
                if m["name"] == "exec":
                    exits.append(int(m["content"].rsplit("code ", 1)[1][:-1]) if "exited" in m["content"] else 0)
    return {
        "per": per,
        "nonzero": round(sum(1 for e in exits if e) / len(exits), 4),
        "failed": round(failed / results, 4),
    }


def stats_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert cli.main(["stats", *args, "--json", "--no-save"]) == 0
    return dict(json.loads(capsys.readouterr().out))


@pytest.mark.parametrize("layout", ["jsonl", "json-array", "folder-of-json"])
def test_stats_of_reference_records_equal_an_independent_count(tmp_path: Path, capsys, layout: str) -> None:
    rng = random.Random(7)
    records = [reference_record(rng, n) for n in range(40)]
    if layout == "jsonl":
        target = tmp_path / "sessions.jsonl"
        target.write_text("".join(json.dumps(r) + "\n" for r in records))
    elif layout == "json-array":
        target = tmp_path / "sessions.json"
        target.write_text(json.dumps(records, indent=2))
    else:  # the reference writes one pretty-printed intent_<id>.json per session
        target = tmp_path / "middle_format"
        target.mkdir()
        for r in records:
            (target / f"intent_{r['intent_id']}.json").write_text(json.dumps(r, indent=2))
    stats = stats_json(capsys, str(target))
    want = independent_counts(records)
    assert stats["trajectories"] == 40 and stats["verdicts"] == {"success": 40}  # status completed
    for measure, values in want["per"].items():
        assert stats[measure] == distribution(values), measure
        assert stats[measure]["mean"] == round(sum(values) / 40, 2)
    assert stats["nonzero_exit_share"] == want["nonzero"] and stats["tool_failure_share"] == want["failed"]
    hist = {str(k): want["per"]["user_turns"].count(k) for k in sorted(set(want["per"]["user_turns"]))}
    assert stats["user_turn_histogram"] == hist
    assert stats["paper"]["user_turns"]["mean"] == 8.12


def test_stats_compares_two_datasets_side_by_side(tmp_path: Path, capsys) -> None:
    rng = random.Random(3)
    ref = tmp_path / "ref.jsonl"
    ref.write_text("".join(json.dumps(reference_record(rng, n)) + "\n" for n in range(5)))
    failed = {**reference_record(rng, 9), "status": "failed"}
    ours = tmp_path / "ours.jsonl"
    ours.write_text(json.dumps(convert(reference_record(rng, 7), "openai")) + "\n" + json.dumps(failed) + "\n")
    assert cli.main(["stats", str(ref), str(ours)]) == 0
    out = capsys.readouterr().out
    assert f"[1] {ref}: 5 of 5 records" in out and f"[2] {ours}: 1 of 2 records" in out
    assert "paper" in out and "8.12" in out and "68.24" in out
    assert not (tmp_path / "ref.stats.json").exists()  # comparisons are not saved
    both = stats_json(capsys, str(ref), str(ours), "--all")
    assert [d["trajectories"] for d in both["datasets"]] == [5, 2]
    assert both["datasets"][1]["verdicts"] == {"unknown": 1, "failed": 1}


def _our_record() -> dict[str, Any]:
    return {
        "status": "completed",
        "session_id": "ep-1",
        "intent_id": "intent_1",
        "intent": "Count the lines.",
        "total_steps": 3,
        "enable_thinking": False,
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "Count the lines."},
            {
                "role": "assistant",
                "content": "On it.",
                "tool_calls": [
                    {"id": "a", "type": "function", "function": {"name": "write", "arguments": '{"path": "f"}'}},
                    {"id": "b", "type": "function", "function": {"name": "exec", "arguments": "not json"}},
                ],
            },
            {"role": "tool", "tool_call_id": "a", "name": "write", "content": "wrote", "success": True},
            {
                "role": "tool",
                "tool_call_id": "b",
                "name": "exec",
                "content": "ls: no such file\n\n(Command exited with code 2)",
                "success": True,
            },
            {
                "role": "assistant",
                "tool_calls": [{"id": "c", "type": "function", "function": {"name": "read", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "c", "name": "read", "content": "3", "success": False},
            {"role": "assistant", "content": "3 lines."},
        ],
        "tools": [{"type": "function", "function": {"name": "exec", "parameters": {"type": "object"}}}],
        "skills": [],
        "final_output": "3 lines.",
        "metadata": {"persona": {"name": "P"}, "domains": [], "verdict": "success", "episode_id": "ep-1"},
    }


def test_export_formats_carry_what_each_trainer_reads(tmp_path: Path, capsys) -> None:
    record = _our_record()
    ref = convert(record, "reference")
    assert set(ref) == set(REFERENCE_FIELDS) and set(ref["metadata"]) == {"persona", "domains", "session"}
    calls = [c for m in ref["messages"] for c in m.get("tool_calls") or []]
    assert calls[0]["function"]["arguments"] == {"path": "f"} and calls[1]["function"]["arguments"] == "not json"
    openai = convert(record, "openai")
    assert set(openai) == {"messages", "tools"} and all("success" not in m for m in openai["messages"])
    assert all(
        isinstance(c["function"]["arguments"], str) for m in openai["messages"] for c in m.get("tool_calls") or []
    )
    share = convert(record, "sharegpt")
    roles = [t["from"] for t in share["conversations"]]
    assert roles == ["human", "function_call", "observation", "function_call", "observation", "gpt"]
    assert all(r in ("human", "observation") for r in roles[::2]) and all(
        r in ("gpt", "function_call") for r in roles[1::2]
    )
    assert json.loads(share["conversations"][2]["value"]) == [
        "wrote",
        "ls: no such file\n\n(Command exited with code 2)",
    ]  # one step, two results
    assert share["system"] == "sys" and json.loads(share["tools"])[0]["name"] == "exec"
    run = tmp_path / "run"
    run.mkdir()
    (run / "trajectories-x-00000.jsonl").write_text(
        json.dumps(record) + "\n" + json.dumps({**record, "status": "failed", "metadata": {"verdict": "failed"}}) + "\n"
    )
    out = tmp_path / "exp" / "train.jsonl"
    assert cli.main(["export", str(run), "--format", "openai", "--out", str(out), "--success-only"]) == 0
    assert "wrote 1 record(s)" in capsys.readouterr().out and len(out.read_text().splitlines()) == 1


def test_export_of_a_bad_file_writes_nothing(tmp_path: Path, capsys) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(_our_record()) + "\n{broken\n")
    out = tmp_path / "out.jsonl"
    assert cli.main(["export", str(src), "--format", "sharegpt", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "in.jsonl:2: not valid JSON" in err and "Traceback" not in err and not out.exists()
    src.write_text(json.dumps(_our_record()) + "\n")
    assert cli.main(["export", str(src), "--format", "openai", "--out", str(src)]) == 2  # never over its input
    assert "is one of the input files" in capsys.readouterr().err and src.read_text().count("\n") == 1
