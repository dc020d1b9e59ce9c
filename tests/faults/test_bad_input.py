"""The real ``ise`` command on bad input (issue 8): one ``ise: error:`` paragraph naming the file
and line, a non-zero exit status, no traceback, and nothing lost or half-published.

Runs ``python -m services.cli.main`` as a subprocess; ``ise intents import`` runs against the real
Kafka of the test stack (per-test topic prefix) and the test reads back what landed on the topic.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from services.common.contracts.events import IntentProposed
from services.common.replay import read_to_end
from services.stack.procs import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PYTHON = REPO / ".venv" / "bin" / "python"
BIG = 50 << 20  # the user's 50 MB line


def ise(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    python = str(PYTHON if PYTHON.exists() else Path(sys.executable))
    return subprocess.run(
        [python, "-m", "services.cli.main", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def failed_cleanly(proc: subprocess.CompletedProcess[str], code: int, *expect: str) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    for text in expect:
        assert text in proc.stderr, proc.stderr


MESSAGES = {
    "messages": [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c", "type": "function", "function": {"name": "exec", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c", "content": "ok"},
        {"role": "assistant", "content": "done"},
    ]
}


def make(kind: str, root: Path) -> Path:
    """A path showing one kind of bad (or odd) ``ise stats`` input."""
    run = root / "run"
    shard = run / "trajectories-a-00000.jsonl"
    if kind == "missing":
        return root / "nowhere"
    run.mkdir()
    if kind == "empty folder":
        return run
    if kind == "other names":
        (run / "episodes.jsonl").write_text(json.dumps(MESSAGES) + "\n")
        return run
    content = {
        "non-JSON": b"this is not json\n",
        "non-UTF-8": json.dumps(MESSAGES).encode() + b"\n\xff\xfe\x00garbage\n",
        "foreign record": json.dumps(MESSAGES).encode() + b"\n",
        "unknown shape": json.dumps(MESSAGES).encode() + b'\n{"conversations": []}\n',
        "torn last line": json.dumps(MESSAGES).encode() + b'\n{"messages": [{"role": "us',
        "single file": json.dumps(MESSAGES).encode() + b"\n",
    }[kind]
    shard.write_bytes(content)
    return shard if kind == "single file" else run


@pytest.mark.parametrize(
    "kind, code, expect",
    [
        ("missing", 2, ["nowhere: no such file or folder"]),
        ("empty folder", 2, ["holds no .jsonl or .json files"]),
        ("other names", 0, []),  # any .jsonl of a folder is read, whatever its name
        ("non-JSON", 2, ["trajectories-a-00000.jsonl:1: not valid JSON"]),
        ("non-UTF-8", 2, ["trajectories-a-00000.jsonl:2: not UTF-8"]),
        ("unknown shape", 2, ['trajectories-a-00000.jsonl:2: not a trajectory record: no "messages" list']),
        ("foreign record", 0, []),
        ("single file", 0, []),
        ("torn last line", 0, ["ise: warning:", "trajectories-a-00000.jsonl:2: the last line is incomplete"]),
    ],
)
def test_stats_on_bad_input(tmp_path: Path, kind: str, code: int, expect: list[str]) -> None:
    proc = ise("stats", str(make(kind, tmp_path)))
    failed_cleanly(proc, code, *expect)
    if code:
        assert proc.stderr.startswith("ise: error: ") and proc.stdout == ""
        assert not list(tmp_path.rglob("*stats.json"))
    else:
        assert ": 1 of 1 records" in proc.stdout
        assert re.search(r"^tool calls\s+1\s+1\s+1\s+1\s+29.26$", proc.stdout, re.MULTILINE), proc.stdout
        assert "saved as" in proc.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--intents", "0"], "argument --intents: must be 1 or more, not 0"),
        (["--intents", "-5"], "argument --intents: must be 1 or more, not -5"),
        (["--max-turns", "0"], "argument --max-turns: must be 1 or more, not 0"),
        (["--timeout", "-1"], "argument --timeout: must be more than 0"),
    ],
)
def test_run_refuses_bad_numbers_before_starting_anything(args: list[str], message: str) -> None:
    failed_cleanly(ise("run", *args, timeout=60), 2, message)


def seven_with_one_oversized(path: Path) -> list[str]:
    """Seven intents, the fifth one 50 MB long; returns the ids of the six good ones."""
    with path.open("w", encoding="utf-8") as out:
        for i in range(7):
            text = "x" * BIG if i == 4 else f"Please archive the logs of project {i} and mail me a summary."
            out.write(json.dumps({"id": f"intent_{i}", "natural_language_intent": text}) + "\n")
    return [f"intent_{i}" for i in range(7) if i != 4]


async def proposed(kafka_settings) -> list[IntentProposed]:
    return [
        IntentProposed.model_validate_json(r.value)
        async for r in read_to_end(kafka_settings, kafka_settings.topics.intents_proposed)
    ]


def test_import_with_an_oversized_line(tmp_path: Path, stack_endpoints, kafka_settings, prefix: str) -> None:
    env = {**stack_endpoints.env(), "ISE_KAFKA_TOPIC_PREFIX": f"{prefix}.", "ISE_REDIS_KEY_PREFIX": prefix}
    path = tmp_path / "seven.jsonl"
    good = seven_with_one_oversized(path)
    where = "seven.jsonl:5: line is 50.0 MiB, over the 1.0 MiB limit"

    dry = ise("intents", "import", str(path), "--dry-run", "--run-id", "run-dry", env=env)
    failed_cleanly(
        dry,
        1,
        where,
        "6 good line(s), 1 bad line(s)",
        "a real import would publish the 6 good intent(s) to run run-dry and skip the bad lines",
    )
    strict_dry = ise("intents", "import", str(path), "--dry-run", "--strict", env=env)
    failed_cleanly(strict_dry, 1, where, "a real import would publish nothing (--strict")
    strict = ise("intents", "import", str(path), "--strict", "--run-id", "run-strict", env=env)
    failed_cleanly(strict, 1, where, "nothing published (--strict")
    assert asyncio.run(proposed(kafka_settings)) == []  # --strict: not one intent landed

    real = ise("intents", "import", str(path), "--run-id", "run-real", env=env)
    failed_cleanly(real, 1, where, "6 intent(s) published to run run-real; 1 bad line(s) (listed above) skipped")
    events = asyncio.run(proposed(kafka_settings))
    assert sorted(e.intent.intent_id for e in events) == good
    assert {e.run_id for e in events} == {"run-real"}

    only_big = tmp_path / "big.jsonl"
    only_big.write_text(json.dumps({"natural_language_intent": "y" * BIG}) + "\n")
    failed_cleanly(
        ise("intents", "import", str(only_big), env=env),
        1,
        "big.jsonl:1: line is 50.0 MiB",
        "nothing published (every line is bad)",
    )
    assert len(asyncio.run(proposed(kafka_settings))) == 6


def test_import_without_a_broker_publishes_nothing_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "two.jsonl"
    path.write_text("".join(json.dumps({"natural_language_intent": f"Task {i}"}) + "\n" for i in range(2)))
    nowhere = f"127.0.0.1:{free_port()}"
    env = {"ISE_KAFKA_BOOTSTRAP": nowhere, "ISE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    proc = ise("intents", "import", str(path), "--run-id", "run-x", env=env)
    failed_cleanly(proc, 1, f"ise: error: cannot reach Kafka at {nowhere}", "nothing was published", "ise stack up")


def test_unreadable_intents_files_are_bad_input(tmp_path: Path) -> None:
    failed_cleanly(ise("intents", "import", str(tmp_path / "absent.jsonl")), 2, "absent.jsonl: cannot read the file")
    (tmp_path / "blank.jsonl").write_text("\n\n")
    failed_cleanly(ise("intents", "import", str(tmp_path / "blank.jsonl"), "--dry-run"), 2, "holds no intents")


def test_stats_into_a_closed_pipe_is_quiet(tmp_path: Path) -> None:
    """`ise stats ... | head`: the reader is gone before ise writes; no traceback, exit 0."""
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps(MESSAGES) + "\n")
    python = str(PYTHON if PYTHON.exists() else Path(sys.executable))
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will ever read
    try:
        proc = subprocess.run(
            [python, "-m", "services.cli.main", "stats", str(path)],
            cwd=REPO,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
