"""Bad input to ``ise`` gives one clear error and an exit status, never a traceback (issue 8).

In-process and without servers: ``ise stats`` on every shape a user may point it at, ``ise run``
option checks, the top-level error mapping, and ``ise intents import`` up to the publish step.
"""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from services.cli import main as cli
from services.common.errors import ConfigError, TransientError
from services.dedup.record_reader import DatasetFileError, summarize
from services.dedup.stats import dataset_stats, iter_records, save_stats, write_stats
from services.intent.jsonl_io import MAX_LINE_BYTES, read_intents, read_json_lines
from services.intent.transfer import PublishInterrupted, publish_intents

FOREIGN = {
    "messages": [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "List my files."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "ls", "arguments": "{}"}},
                {"id": "c2", "type": "function", "function": {"name": "exec", "arguments": '{"command": "ls"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "a b"},
        {"role": "tool", "tool_call_id": "c2", "content": "a b"},
        {"role": "assistant", "content": "a and b."},
        {"role": "user", "content": "Thanks."},
    ]
}


def ours(verdict: str = "success", exit_code: int = 0) -> dict:
    return {
        "messages": FOREIGN["messages"],
        "metadata": {
            "verdict": verdict,
            "verification_asked": True,
            "intent": {
                "complexity": "simple",
                "domains": [{"id": "files", "name": "Files"}],
                "tasks": [{"id": "t1", "name": "List"}],
            },
            "counts": {
                "user_turns": 2,
                "messages": 7,
                "tool_calls": 2,
                "unique_tools": 2,
                "role_drift_messages": 1,
                "role_drift_regenerations": 1,
            },
            "tool_results": [
                {"tool_call_id": "c1", "name": "ls", "exit_code": 0},
                {"tool_call_id": "c2", "name": "exec", "exit_code": exit_code},
            ],
        },
    }


def stats_cli(target: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(["stats", str(target)])
    out, err = capsys.readouterr()
    return code, out, err


def shard(run: Path, lines: list[object], tail: str = "") -> Path:
    run.mkdir(parents=True, exist_ok=True)
    path = run / "trajectories-x-00000.jsonl"
    text = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines) + tail
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- ise stats


def test_stats_on_our_records_keeps_the_table_and_json(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run-1"
    shard(run, [ours(), ours("failed", 3)])
    (run / "stats.json").write_text(json.dumps({"run_id": "run-1", "trajectories": 99}))
    code, out, err = stats_cli(run, capsys)
    assert code == 0 and err == ""
    assert f"{run}: 1 of 2 records" in out and "verdicts     success 1, failed 1" in out  # successes by default
    assert "without ISE metadata" not in out and f"saved as {run / 'stats.json'}" in out
    saved = json.loads((run / "stats.json").read_text())
    assert saved["run_id"] == "run-1" and saved["trajectories"] == 1  # what `ise run` added is kept
    assert saved["nonzero_exit_share"] == 0.0 and saved["role_drift_rate"] == 0.5 and saved["verified_share"] == 1.0
    code, out, err = cli.main(["stats", str(run), "--all", "--no-save"]), *capsys.readouterr()
    assert code == 0 and f"{run}: 2 of 2 records" in out and "non-zero exit (exec)     25.00%" in out
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []


def test_stats_counts_a_foreign_openai_record_from_its_messages(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    shard(run, [FOREIGN, {**FOREIGN, "metadata": {"source": "elsewhere"}}, ours()])
    code, out, _ = stats_cli(run, capsys)
    assert code == 0 and "2 record(s) without ISE metadata" in out
    stats = json.loads((run / "stats.json").read_text())
    assert stats["trajectories"] == 3 and stats["records_without_metadata"] == 2
    assert stats["user_turns_avg"] == 2.0 and stats["messages_avg"] == 6.0 and stats["tool_calls_avg"] == 2.0
    assert stats["tools"] == {"ls": 3, "exec": 3} and stats["verdicts"] == {"unknown": 2, "success": 1}
    assert stats["verified_share"] == 1.0  # over our records: a foreign one has no such notion
    foreign = summarize(FOREIGN)
    assert (foreign.user_turns, foreign.messages, foreign.tool_calls, foreign.unique_tools) == (2, 6, 2, 2)
    assert foreign.meta is None


def test_stats_on_a_single_file_saves_next_to_it(tmp_path: Path, capsys) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(FOREIGN) + "\n")
    code, out, _ = stats_cli(path, capsys)
    assert code == 0 and f"{path}: 1 of 1 records" in out
    assert json.loads((tmp_path / "data.stats.json").read_text())["trajectories"] == 1


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"not json\n", "x-00000.jsonl:2: not valid JSON"),
        (b'{"messages": [{"role": "user", "content": "\xff"}]}\n', "x-00000.jsonl:2: not UTF-8"),
        (b'{"conversations": [{"from": "human"}]}\n', 'no "messages" list (its keys: conversations)'),
        (b"[1, 2]\n", "expected a JSON object, got a list"),
        (b'{"messages": [{"content": "no role"}]}\n', "messages[0].role: Field required"),
        (b'{"messages": [], "metadata": {"verdict": 3}}\n', "metadata.verdict: Input should be a valid string"),
        (b'{"messages": [], "metadata": {"verdict": "x", "counts": "3", "intent": {}}}\n', "metadata.counts"),
    ],
)
def test_stats_names_file_and_line_of_an_unknown_shape(tmp_path: Path, capsys, content: bytes, problem: str) -> None:
    run = tmp_path / "run"
    path = shard(run, [FOREIGN])
    path.write_bytes(path.read_bytes() + content)
    code, out, err = stats_cli(run, capsys)
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.startswith("ise: error: ") and problem in err and "OpenAI messages format" in err
    assert len(err.strip().splitlines()) == 1 and not (run / "stats.json").exists()


def test_stats_lists_every_bad_line(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shard(run, ["{", FOREIGN, "[]", "7"])
    with pytest.raises(DatasetFileError) as info:
        dataset_stats(run)
    assert [n for _, n, _ in info.value.problems] == [1, 3, 4] and "2 more bad line(s)" in str(info.value)


def test_stats_skips_a_torn_last_line_with_a_warning(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    shard(run, [ours(), FOREIGN], tail='{"messages": [{"role": "us')
    code, out, err = stats_cli(run, capsys)
    assert code == 0 and f"{run}: 2 of 2 records" in out
    assert "ise: warning:" in err and "x-00000.jsonl:3: the last line is incomplete" in err
    assert len(iter_records(run)) == 2
    shard(run, [ours()], tail="\xff")  # cut inside a multi-byte character
    assert stats_cli(run, capsys)[0] == 0


@pytest.mark.parametrize(
    "setup, expect",
    [
        (lambda d: d / "missing", "missing: no such file or folder"),
        (lambda d: d, "holds no .jsonl or .json files"),
        (lambda d: (d / "notes.txt").write_text("x") and d, "holds no .jsonl or .json files"),
        (lambda d: (d / "a.jsonl").write_text("{}\n") and d, 'a.jsonl:1: not a trajectory record: no "messages" list'),
        (lambda d: (d / "b.json").write_text('[{"messages": []}, 3]') and d, "b.json:2: not a trajectory record"),
    ],
)
def test_stats_on_a_folder_without_records_says_what_to_pass(tmp_path: Path, capsys, setup, expect: str) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    code, out, err = stats_cli(setup(folder), capsys)
    assert code == 2 and out == "" and expect in err and "Traceback" not in err


def test_stats_still_prints_when_it_cannot_save(tmp_path: Path, capsys, monkeypatch) -> None:
    run = tmp_path / "run"
    shard(run, [FOREIGN])

    def refuse(path: Path, stats: dict) -> Path:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("services.dedup.stats.save_stats", refuse)
    code, out, err = stats_cli(run, capsys)
    assert code == 0 and "trajectories" in out and "could not save the statistics" in err


def test_write_stats_of_a_run_without_shards_is_all_zeros(tmp_path: Path) -> None:
    stats = json.loads(write_stats(tmp_path, {"run_id": "r"}).read_text())
    assert stats["trajectories"] == 0 and stats["run_id"] == "r" and stats["verdicts"] == {}
    save_stats(tmp_path / "stats.json", {"trajectories": 5})
    assert json.loads((tmp_path / "stats.json").read_text())["run_id"] == "r"


# ---------------------------------------------------------------- ise run options, error mapping


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--intents", "0"], "argument --intents: must be 1 or more, not 0"),
        (["run", "--intents", "-4"], "argument --intents: must be 1 or more, not -4"),
        (["run", "--intents", "many"], "argument --intents: expected an integer, not 'many'"),
        (["run", "--max-turns", "0"], "argument --max-turns: must be 1 or more, not 0"),
        (["run", "--timeout", "0"], "argument --timeout: must be more than 0, not 0"),
        (["run", "--timeout", "inf"], "argument --timeout: expected a finite number"),
        (["run", "--run-id", "../etc"], "argument --run-id: '../etc' is not a usable run id"),
        (["intents", "import", "f.jsonl", "--run-id", "a/b"], "is not a usable run id"),
        (["intents", "export", "--run-id", "", "--out", "x"], "is not a usable run id"),
    ],
)
def test_option_values_are_checked_by_argparse(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(
    "exc, code",
    [
        (ConfigError("bad input: fix X"), 2),
        (TransientError("broker away: retry"), 1),
    ],
)
def test_ise_errors_print_one_line_and_exit_status(monkeypatch, capsys, exc: Exception, code: int) -> None:
    def fail(args: object) -> int:
        raise exc

    monkeypatch.setattr(cli, "_dispatch", fail)
    assert cli.main(["stats", "x"]) == code
    assert capsys.readouterr().err == f"ise: error: {exc}\n"


def test_bad_settings_in_the_environment_are_bad_input(monkeypatch, capsys) -> None:
    from services.common.settings import KafkaSettings

    monkeypatch.setenv("ISE_KAFKA_PARTITIONS", "many")
    monkeypatch.setattr(cli, "_dispatch", lambda args: KafkaSettings() and 0)
    assert cli.main(["stats", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ise: error: invalid KafkaSettings from the environment (partitions:")


def test_unexpected_exceptions_keep_their_traceback(monkeypatch) -> None:
    def bug(args: object) -> int:
        raise KeyError("counts")

    monkeypatch.setattr(cli, "_dispatch", bug)
    with pytest.raises(KeyError):
        cli.main(["stats", "x"])


# ---------------------------------------------------------------- ise intents import (no publishing)


def intent_lines(count: int) -> list[str]:
    return [
        json.dumps({"id": f"intent_{i}", "natural_language_intent": f"Please tidy folder {i}."}) for i in range(count)
    ]


def test_oversized_line_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    lines = intent_lines(7)
    lines[4] = json.dumps({"id": "big", "natural_language_intent": "x" * (3 * MAX_LINE_BYTES)})
    path = tmp_path / "seven.jsonl"
    path.write_text("\n".join(lines) + "\n")
    intents, errors = read_intents(path)
    assert [i.intent_id for i in intents] == [f"intent_{i}" for i in (0, 1, 2, 3, 5, 6)]
    assert [e.line for e in errors] == [5] and "over the 1.0 MiB limit" in str(errors[0])

    class Counting(io.BytesIO):
        biggest = 0

        def readline(self, size: int | None = -1) -> bytes:
            line = super().readline(size)
            Counting.biggest = max(Counting.biggest, len(line))
            return line

    parsed = list(read_json_lines(Counting(path.read_bytes()), MAX_LINE_BYTES))
    assert len(parsed) == 7 and parsed[4].too_long and parsed[5].value["id"] == "intent_5"
    assert Counting.biggest <= MAX_LINE_BYTES + 1


def test_unterminated_oversized_last_line_is_one_error(tmp_path: Path) -> None:
    path = tmp_path / "tail.jsonl"
    path.write_bytes(("\n".join(intent_lines(2)) + "\n").encode() + b"y" * (MAX_LINE_BYTES + 10))
    intents, errors = read_intents(path)
    assert len(intents) == 2 and [e.line for e in errors] == [3] and "cut off" not in str(errors[0])


def import_args(path: Path, **flags: object) -> SimpleNamespace:
    return SimpleNamespace(
        intents_action="import",
        file=path,
        run_id=flags.get("run_id"),
        strict=bool(flags.get("strict")),
        dry_run=bool(flags.get("dry_run")),
    )


def test_dry_run_and_strict_agree_and_publish_nothing(tmp_path: Path, capsys, monkeypatch) -> None:
    from services.cli import intents_cmd

    async def no_publish(intents: list, run_id: str) -> int:
        raise AssertionError("must not publish")

    monkeypatch.setattr(intents_cmd, "_publish", no_publish)
    lines = intent_lines(7)
    lines[4] = "x" * (MAX_LINE_BYTES + 1)
    path = tmp_path / "seven.jsonl"
    path.write_text("\n".join(lines) + "\n")

    assert intents_cmd.run(import_args(path, dry_run=True)) == 1
    err = capsys.readouterr().err
    assert "seven.jsonl:5: line is" in err and "a real import would publish the 6 good intent(s)" in err
    assert intents_cmd.run(import_args(path, dry_run=True, strict=True)) == 1
    assert "a real import would publish nothing (--strict" in capsys.readouterr().err
    assert intents_cmd.run(import_args(path, strict=True)) == 1
    err = capsys.readouterr().err
    assert "seven.jsonl:5:" in err and "nothing published (--strict" in err

    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(intent_lines(3)) + "\n")
    assert intents_cmd.run(import_args(good, dry_run=True, run_id="run-x")) == 0
    assert "all 3 line(s) are good; a real import would publish 3 intent(s) to run run-x" in capsys.readouterr().out


def test_import_of_an_empty_or_unreadable_file_is_bad_input(tmp_path: Path, capsys) -> None:
    (tmp_path / "blank.jsonl").write_text("\n \n")
    assert cli.main(["intents", "import", str(tmp_path / "blank.jsonl")]) == 2
    assert "blank.jsonl: holds no intents" in capsys.readouterr().err
    assert cli.main(["intents", "import", str(tmp_path / "absent.jsonl"), "--dry-run"]) == 2
    assert "absent.jsonl: cannot read the file" in capsys.readouterr().err


class FlakyBus:
    """Publishes until the ``fail_at``-th call, then the broker 'goes away'."""

    topics = SimpleNamespace(intents_proposed="proposed")

    def __init__(self, fail_at: int) -> None:
        self.fail_at, self.calls, self.keys = fail_at, 0, []

    def envelope(self, kind: str, run_id: str, *parts: object) -> dict[str, str]:
        return {"event_id": f"{kind}-{run_id}-{parts[0]}", "run_id": run_id, "producer": "test"}

    async def publish(self, event: object, topic: str, key: str) -> None:
        self.calls += 1
        if self.calls >= self.fail_at:
            raise ConnectionError("broker went away")
        self.keys.append(key)


def test_a_broker_failure_part_way_says_how_many_made_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("services.intent.transfer.PUBLISH_BATCH", 4)
    path = tmp_path / "ten.jsonl"
    path.write_text("\n".join(intent_lines(10)) + "\n")
    intents, _ = read_intents(path)
    bus = FlakyBus(fail_at=7)
    with pytest.raises(PublishInterrupted) as info:
        asyncio.run(publish_intents(intents, bus, "run-f"))  # type: ignore[arg-type]
    assert info.value.published == len(bus.keys) == 6 and info.value.total == 10
    assert bus.calls == 8  # the failing batch finished; no later batch started
    assert "--run-id run-f" in str(info.value) and isinstance(info.value, TransientError)
