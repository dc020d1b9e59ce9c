"""The cost of a real run: the pipeline (real broker, Redis, Docker, the scripted LLM) writes
records with token usage; a price file written here prices the scripted models; the run's
``stats.json``, its end-of-run summary and ``ise stats`` must all state the money that the
records' usage and those prices give when worked out independently here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.cli import main as cli
from services.cli.pipeline import run_pipeline
from services.cli.run_cmd import summary
from services.common.ids import new_run_id
from services.dedup.cost import usd
from services.dedup.stats import iter_records
from services.intent.settings import IntentSettings

PRICES = {
    "default:agent": (3.0, 15.0),
    "default:user": (0.5, 2.0),
    "default:intent": (1.0, 4.0),
}  # USD per 1M prompt, completion tokens


def independent_cost(record: dict) -> float:
    """The record's USD from its usage and PRICES (the scripted models are named exactly)."""
    meta = record["metadata"]
    total = 0.0
    for role, used in meta["usage"].items():
        prompt, completion = PRICES[meta["models"][role]]
        total += (used["prompt_tokens"] * prompt + used["completion_tokens"] * completion) / 1_000_000
    return total


async def test_a_runs_cost_follows_its_usage_and_the_price_file(
    pipeline_env, out_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    prices = tmp_path / "prices.yaml"
    lines = [f'  "{m}": {{prompt: {p}, completion: {c}}}' for m, (p, c) in PRICES.items()]
    prices.write_text("models:\n" + "\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.setenv("ISE_PRICES_FILE", str(prices))

    env = pipeline_env("default")
    result = await run_pipeline(new_run_id(), env, out_dir, IntentSettings(count=2, seed=11), timeout_s=420)
    records = iter_records(result.run_dir)
    assert records, "the run wrote no trajectory"
    for record in records:
        usage, models = record["metadata"]["usage"], record["metadata"]["models"]
        assert models == {"agent": "default:agent", "user": "default:user", "intent": "default:intent"}
        assert set(usage) == set(models) and usage["agent"]["prompt_tokens"] > 0
        assert usage["user"]["completion_tokens"] > 0 and usage["intent"]["completion_tokens"] > 0
    each = [independent_cost(r) for r in records]
    total = sum(each)

    saved = json.loads(result.stats_path.read_text())["cost"]  # written at the end of the run
    assert saved["price_files"][-1] == str(prices) and saved["priced"] == len(records)
    assert saved["total_usd"] == pytest.approx(total, abs=1e-7)

    assert cli.main(["stats", str(result.run_dir), "--json", "--no-save"]) == 0
    cost = json.loads(capsys.readouterr().out)["cost"]
    assert cost["total_usd"] == pytest.approx(total, abs=1e-7) and cost["trajectories"] == len(records)
    assert cost["mean_usd"] == pytest.approx(total / len(records), abs=1e-7)
    assert cost["max_usd"] == pytest.approx(max(each), abs=1e-7)
    for verdict, figures in cost["by_verdict"].items():
        mine = [c for c, r in zip(each, records, strict=True) if r["metadata"]["verdict"] == verdict]
        assert figures["trajectories"] == len(mine) and figures["total_usd"] == pytest.approx(sum(mine), abs=1e-7)
    tokens = cost["tokens"]["agent"]
    assert tokens["prompt_tokens"] == sum(r["metadata"]["usage"]["agent"]["prompt_tokens"] for r in records)
    assert (
        cost["counted"]
        == "agent, user model and the intent's rendering (rejected intents' rendering is not in the records)"
    )

    assert cli.main(["stats", str(result.run_dir), "--no-save"]) == 0
    table = capsys.readouterr().out
    assert f"{usd(cost['total_usd'])} total over {len(records)} trajectories" in table

    text = summary(result, "scripted", "scripted replies", env)
    assert f"  cost         {usd(cost['total_usd'])} total over {len(records)} trajectories" in text
    assert "agent, user model and the intent's rendering (rejected intents' rendering is not in the records)" in text

    # without the user's file the scripted models are free, and said to be: $0, not n/a
    monkeypatch.delenv("ISE_PRICES_FILE")
    assert cli.main(["stats", str(result.run_dir), "--json", "--no-save"]) == 0
    free = json.loads(capsys.readouterr().out)["cost"]
    assert free["total_usd"] == 0 and free["priced"] == len(records) and free["hint"] is None
