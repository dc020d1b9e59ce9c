"""``ise replay`` against the real broker, Redis and Docker, after a small scripted run.

A 3-intent run goes through the pipeline; then its dataset is rebuilt from
``ise.trajectories.finished`` after the run folder is deleted (the same record lines, byte for
byte; a second rebuild writes nothing), rescored from the log (the run's own statistics and a
Vendi Score of its accepted intents), and regenerated into a new run with the scripted LLM (the
same intents, one record per accepted task; a second regenerate does nothing), and its domain,
complexity and verdict filters pick exactly their tasks from the log. Bad input fails
with exit status 2 and the runs that do exist, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from services.cli.main import main
from services.cli.pipeline import RunResult, run_pipeline
from services.cli.replay_regen import Filters, derived_run_id, plan_regeneration, regen_episode_id, run_regeneration
from services.common.ids import new_run_id
from services.common.settings import KafkaSettings, RedisSettings
from services.dedup.stats import iter_records, shard_files
from services.intent.settings import IntentSettings

RUN_EXTRAS = ("run_id", "progress", "intent_diversity")
"""What ``ise run`` adds to stats.json beyond the dataset's figures."""


def _lines(run_dir: Path) -> set[bytes]:
    return {line for shard in shard_files(run_dir) for line in shard.read_bytes().splitlines(keepends=True)}


def _files(run_dir: Path) -> dict[str, object]:
    """Every dataset file of a run folder: a shard as its set of lines (the order of the lines may
    differ), a web recording as its bytes; not logs or stats."""
    return {
        str(p.relative_to(run_dir)): set(p.read_bytes().splitlines(keepends=True))
        if p.name.startswith("trajectories-")
        else p.read_bytes()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and (p.name.startswith("trajectories-") or p.parent.name == "web")
    }


def _figures(stats: dict) -> dict:
    return {k: v for k, v in stats.items() if k not in RUN_EXTRAS}


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, kafka_settings: KafkaSettings) -> None:
    """The environment ``ise replay`` reads: this test's broker, topic prefix and embedding model."""
    monkeypatch.setenv("ISE_KAFKA_BOOTSTRAP", kafka_settings.bootstrap)
    monkeypatch.setenv("ISE_KAFKA_TOPIC_PREFIX", kafka_settings.topic_prefix)
    monkeypatch.setenv("ISE_DEDUP_MODEL", "all-MiniLM-L6-v2")


def test_replay_rebuild_rescore_regenerate(
    cli_env,
    pipeline_env,
    scripted_llm,
    kafka_settings,
    redis_settings: RedisSettings,
    out_dir: Path,
    tmp_path,
    capsys,
    monkeypatch,
) -> None:
    env = pipeline_env("default")
    scripted_llm.reset()
    run_id = new_run_id()
    result: RunResult = asyncio.run(run_pipeline(run_id, env, out_dir, IntentSettings(count=3, seed=11), 420))
    accepted = int(result.progress["accepted"])
    original, files = _lines(result.run_dir), _files(result.run_dir)
    shards = sorted(p.name for p in shard_files(result.run_dir))
    stats = json.loads(result.stats_path.read_text())
    assert len(original) == accepted >= 2
    shutil.rmtree(out_dir)
    assert main(["replay", "--list"]) == 0
    assert f"{run_id}\t{accepted} task event(s)" in capsys.readouterr().out

    # rebuild: a dry run counts and writes nothing; the rebuild gives back every line byte for byte
    fresh = tmp_path / "fresh"
    assert main(["replay", "--rebuild", run_id, "--out", str(fresh), "--dry-run"]) == 0
    assert f"would write {accepted} record(s)" in capsys.readouterr().out
    assert not fresh.exists()
    assert main(["replay", "--rebuild", run_id, "--out", str(fresh)]) == 0
    assert f"wrote {accepted} record(s)" in capsys.readouterr().out
    rebuilt = fresh / run_id
    assert _lines(rebuilt) == original
    assert sorted(p.name for p in shard_files(rebuilt)) == shards  # same host: the sink's shard names
    assert _files(rebuilt) == files
    assert _figures(json.loads((rebuilt / "stats.json").read_text())) == _figures(stats)
    # ... exactly once: again, nothing new
    assert main(["replay", "--rebuild", run_id, "--out", str(fresh)]) == 0
    assert (
        f"wrote 0 record(s) and 0 web recording(s) to {rebuilt} ({accepted} already there)" in capsys.readouterr().out
    )
    assert _files(rebuilt) == files

    # rescore: the run's statistics and the Vendi of its accepted intents, from the log alone
    assert main(["replay", "--rescore", run_id, "--out", str(fresh)]) == 0
    assert "Vendi" in capsys.readouterr().out
    rescore = json.loads((rebuilt / "rescore.json").read_text())
    assert _figures(rescore["stats"]) == _figures(stats)
    vendi, gate = rescore["intent_diversity"]["overall"], stats["intent_diversity"]["overall"]
    assert vendi["n"] == gate["n"] == accepted
    assert vendi["q1"] == pytest.approx(gate["q1"], abs=1e-3)

    # regenerate: a dry run says what it would do; then Stages 2-3 again into the derived run
    new_run = derived_run_id(run_id, Filters())
    assert main(["replay", "--regenerate", run_id, "--out", str(out_dir), "--dry-run"]) == 0
    said = capsys.readouterr().out
    assert f"into run {new_run}" in said and f"{accepted} of the {accepted} accepted" in said
    assert not (out_dir / new_run).exists()
    plan = asyncio.run(plan_regeneration(kafka_settings, run_id, None, Filters(), out_dir))
    assert (plan.new_run, len(plan.tasks), plan.written) == (new_run, accepted, 0)
    regen = asyncio.run(run_regeneration(plan, env, kafka_settings, redis_settings, 420))
    records = iter_records(regen.run_dir)
    assert len(records) == accepted
    intents = {json.loads(line)["intent_id"] for line in original}
    assert {r["intent_id"] for r in records} == intents
    assert {r["metadata"]["episode_id"] for r in records} == {regen_episode_id(run_id, new_run, i) for i in intents}
    assert all(r["metadata"]["run_id"] == new_run and r["metadata"]["verdict"] == "success" for r in records)
    made = _files(regen.run_dir)
    # ... twice changes nothing: the plan finds every record written and starts nothing
    assert main(["replay", "--regenerate", run_id, "--out", str(out_dir)]) == 0
    assert f"every record of run {new_run} is already written" in capsys.readouterr().out
    assert _files(regen.run_dir) == made

    # the filters, read against the real log: each axis keeps exactly its tasks, axes combine
    def planned(**axes: list[str]) -> set[str]:
        chosen = Filters(**{axis: tuple(values) for axis, values in axes.items()})
        found = asyncio.run(plan_regeneration(kafka_settings, run_id, None, chosen, out_dir))
        assert found.new_run == derived_run_id(run_id, chosen) != new_run
        return {t.intent.intent_id for t in found.tasks}

    by_id = {t.intent.intent_id: t.intent for t in plan.tasks}
    first = by_id[sorted(by_id)[0]]
    domain, level = first.domains[0].id, first.complexity
    in_domain = {i for i, intent in by_id.items() if domain in {d.id for d in intent.domains}}
    at_level = {i for i, intent in by_id.items() if intent.complexity == level}
    assert planned(domains=[domain]) == in_domain and planned(complexities=[level]) == at_level
    assert planned(domains=[domain], complexities=[level]) == in_domain & at_level
    verdict_of = {r["intent_id"]: r["metadata"]["verdict"] for r in map(json.loads, original)}
    for verdict in ("success", "failed"):
        assert planned(verdicts=[verdict]) == {i for i, v in verdict_of.items() if v == verdict}
    assert planned(verdicts=["success", "failed"], domains=[domain]) == {
        i for i in in_domain if verdict_of[i] in ("success", "failed")
    }
    assert main(["replay", "--regenerate", run_id, "--complexity", level, "--dry-run"]) == 0
    assert (
        f"{len(at_level)} of the {accepted} accepted task(s) (filters: complexity {level})" in capsys.readouterr().out
    )
    assert main(["replay", "--regenerate", run_id, "--domain", "no-such-domain", "--dry-run"]) == 2
    assert (
        f"its domains: {', '.join(sorted({d.id for i in by_id.values() for d in i.domains}))}"
        in capsys.readouterr().err
    )

    # the command itself runs the services: one intent (a filter), into a named run, the LLM from
    # the environment (the scripted server), on the running stack (no second local web)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("ISE_WEB", "false")
    one, named = sorted(intents)[0], f"{run_id}-one"
    argv = ["replay", "--regenerate", run_id, "--intent", one, "--new-run-id", named, "--out", str(out_dir)]
    assert main([*argv, "--llm", "openai", "--timeout", "300"]) == 0
    assert "1 of the" in capsys.readouterr().out
    assert [(r["intent_id"], r["metadata"]["episode_id"]) for r in iter_records(out_dir / named)] == [
        (one, regen_episode_id(run_id, named, one))
    ]


def test_replay_bad_input(cli_env, kafka_settings: KafkaSettings, capsys, monkeypatch) -> None:
    asyncio.run(_ensure(kafka_settings))
    assert main(["replay", "--rebuild", "run-nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ise: error: run 'run-nope' has no events on") and "ise replay --list" in err
    assert "Traceback" not in err
    assert main(["replay", "--rebuild", "run-nope", "--domain", "finance"]) == 2
    assert "--domain only apply to --regenerate" in capsys.readouterr().err
    monkeypatch.setenv("ISE_KAFKA_BOOTSTRAP", "127.0.0.1:1")  # nothing listens there
    monkeypatch.setenv("ISE_KAFKA_REQUEST_TIMEOUT_MS", "2000")
    assert main(["replay", "--rescore", "run-nope"]) == 1
    assert "ise stack up" in capsys.readouterr().err


async def _ensure(kafka: KafkaSettings) -> None:
    from services.common.bus import ensure_topics

    await ensure_topics(kafka)


def test_replay_help_names_every_option(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["replay", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--rebuild",
        "--rescore",
        "--regenerate",
        "--list",
        "--out",
        "--dry-run",
        "--new-run-id",
        "--domain",
        "--complexity",
        "--verdict",
        "--intent",
        "--llm",
        "--scenario",
        "--timeout",
    ):
        assert option in text
