"""The price table and the cost figures (``services/dedup/cost.py``): name matching, the user's
own table over the shipped one, bad price files, one record's cost and the per-run and
per-verdict aggregation, and what ``ise stats`` prints and saves from them.

Every expected dollar figure is worked out here by hand from the tokens and the prices.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.cli import main as cli
from services.common.errors import ConfigError
from services.dedup.cost import (
    PriceTable,
    UsageMeta,
    cost_of_record,
    describe,
    load_prices,
    record_cost,
    summarize_costs,
    usd,
)
from services.dedup.errors import PriceFileError
from tests.unit.test_cli_bad_input import ours, shard

M = 1_000_000


def write_prices(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def with_usage(verdict: str, agent: tuple[int, int], user: tuple[int, int], models: dict[str, str]) -> dict:
    """One of our records (``ours``) carrying token usage and the models that used it."""
    record = ours(verdict)
    record["metadata"]["usage"] = {
        "agent": {"prompt_tokens": agent[0], "completion_tokens": agent[1], "llm_calls": 2},
        "user": {"prompt_tokens": user[0], "completion_tokens": user[1], "llm_calls": 1},
    }
    record["metadata"]["models"] = models
    return record


@pytest.fixture(autouse=True)
def _no_user_prices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ISE_PRICES_FILE", raising=False)


# ---------------------------------------------------------------- matching


def test_a_name_is_priced_exactly_then_by_longest_prefix_then_by_pattern() -> None:
    table = load_prices()
    assert table.lookup("gpt-4o") == table.prices["gpt-4o"]
    assert table.lookup("gpt-4o-2024-08-06") == table.prices["gpt-4o"]
    assert table.lookup("gpt-4o-mini-2024-07-18") == table.prices["gpt-4o-mini"]  # the longer prefix wins
    assert table.lookup("gpt-4.1-nano-2025-04-14") == table.prices["gpt-4.1-nano"]
    assert table.lookup("default:agent") == table.prices["*:agent"]  # the scripted server's <scenario>:<role>
    assert table.lookup("world:user") == table.prices["*:user"]
    for unknown in ("llama3:8b", "my-agent/gpt-4o", "GPT-4O", ""):
        assert table.lookup(unknown) is None, unknown


def test_the_most_specific_pattern_wins_and_a_prefix_beats_a_pattern(tmp_path: Path) -> None:
    own = write_prices(
        tmp_path / "p.yaml",
        'models:\n  "team-*": {prompt: 1, completion: 1}\n  "team-big-*": {prompt: 9, completion: 9}\n'
        "  team-big-v2: {prompt: 5, completion: 5}\n",
    )
    table = load_prices(own)
    assert table.lookup("team-small-1") == table.prices["team-*"]
    assert table.lookup("team-big-1") == table.prices["team-big-*"]
    assert table.lookup("team-big-v2-0612") == table.prices["team-big-v2"]


def test_the_shipped_table_prices_our_own_models_at_zero() -> None:
    table = load_prices()
    assert table.files == (str(Path("services/common/llm/prices.yaml").resolve()),) and table.user_file == ""
    for model in ("smollm2-135m-instruct", "default:intent", "bench:user", "stray:agent"):
        price = table.lookup(model)
        assert price is not None and (price.prompt, price.completion) == (0, 0), model
    assert all(p.prompt > 0 and p.completion > 0 for n, p in table.prices.items() if n.startswith(("gpt", "claude")))


# ---------------------------------------------------------------- the user's file


def test_the_users_file_replaces_and_extends_the_shipped_table(tmp_path: Path, monkeypatch) -> None:
    own = write_prices(
        tmp_path / "mine.yaml",
        "models:\n  gpt-4o: {prompt: 1.0, completion: 2.0}\n  my-llama: {prompt: 0.2, completion: 0.4, cached_prompt: 0.1}\n",
    )
    monkeypatch.setenv("ISE_PRICES_FILE", str(own))
    table = load_prices()
    assert table.user_file == str(own) and table.files[-1] == str(own)
    assert (table.prices["gpt-4o"].prompt, table.prices["gpt-4o"].completion) == (1.0, 2.0)
    assert table.lookup("gpt-4o-2024-08-06") == table.prices["gpt-4o"]  # matching uses the override
    assert table.lookup("my-llama-3.1-8b") == table.prices["my-llama"]
    assert table.prices["gpt-4o-mini"] == load_prices("").prices["gpt-4o-mini"]  # the rest stays
    assert "(ISE_PRICES_FILE)" in table.hint(["x"]) and str(own) in table.hint(["x"])


BAD_FILES = [
    ("models:\n  gpt-4o: {prompt: 1, completion: [}\n", "not valid YAML (line 2)"),
    ("prices:\n  gpt-4o: {prompt: 1, completion: 2}\n", "one mapping `models:`"),
    ("models:\n  gpt-4o: {prompt: 1, completion: 2}\nextra: 1\n", "(found: models, extra)"),
    ("", "(found: NoneType)"),
    ("models:\n  gpt-4o: {prompt: 1}\n", "models.gpt-4o: completion: Field required"),
    (
        "models:\n  gpt-4o: {prompt: -1, completion: 2}\n",
        "models.gpt-4o: prompt: Input should be greater than or equal",
    ),
    ("models:\n  gpt-4o: {prompt: cheap, completion: 2}\n", "models.gpt-4o: prompt: Input should be a valid number"),
    ("models:\n  gpt-4o: {prompt: true, completion: 2}\n", "models.gpt-4o: prompt: Input should be a valid number"),
    ("models:\n  gpt-4o: {input: 1, prompt: 1, completion: 2}\n", "models.gpt-4o: input: Extra inputs"),
    ("models:\n  gpt-4o: 2.5\n", "models.gpt-4o: Input should be a valid dictionary"),
    ("models:\n  4: {prompt: 1, completion: 2}\n", "models: 4 is not a model name"),
]


@pytest.mark.parametrize(("text", "problem"), BAD_FILES)
def test_a_bad_price_file_is_a_config_error_naming_file_and_entry(tmp_path: Path, text: str, problem: str) -> None:
    bad = write_prices(tmp_path / "bad.yaml", text)
    with pytest.raises(PriceFileError) as caught:
        load_prices(bad)
    assert isinstance(caught.value, ConfigError)
    message = str(caught.value)
    assert message.startswith(f"{bad}: ") and problem in message, message


def test_ise_stats_with_a_bad_or_missing_price_file_exits_2(tmp_path: Path, monkeypatch, capsys) -> None:
    run = tmp_path / "run"
    shard(run, [ours()])
    bad = write_prices(tmp_path / "bad.yaml", "models:\n  gpt-4o: {prompt: 1}\n")
    monkeypatch.setenv("ISE_PRICES_FILE", str(bad))
    assert cli.main(["stats", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ise: error: {bad}: models.gpt-4o: completion: Field required") and err.count("\n") == 1
    assert not (run / "stats.json").exists()
    monkeypatch.setenv("ISE_PRICES_FILE", str(tmp_path / "missing.yaml"))
    assert cli.main(["stats", str(run)]) == 2
    assert "missing.yaml: cannot read the price file named by ISE_PRICES_FILE" in capsys.readouterr().err


# ---------------------------------------------------------------- one record


def test_one_records_cost_per_role_and_total(tmp_path: Path) -> None:
    table = load_prices(
        write_prices(tmp_path / "p.yaml", "models:\n  big: {prompt: 3, completion: 15, cached_prompt: 0.3}\n")
    )
    meta = UsageMeta.model_validate(
        {
            "usage": {
                "agent": {"prompt_tokens": 120_000, "completion_tokens": 8_000, "cached_prompt_tokens": 100_000},
                "user": {"prompt_tokens": 30_000, "completion_tokens": 2_000, "llm_calls": 4},
                "intent": {},
            },
            "models": {"agent": "big-2025", "user": "gpt-4o-mini"},
        }
    )
    cost = record_cost(meta, table)
    assert cost is not None and cost.unpriced == ()
    agent = (20_000 * 3 + 100_000 * 0.3 + 8_000 * 15) / M  # fresh prompt, cached prompt, completion
    user = (30_000 * 0.15 + 2_000 * 0.60) / M
    assert cost.roles == {"agent": pytest.approx(agent), "user": pytest.approx(user), "intent": 0.0}
    assert cost.total == pytest.approx(agent + user)


def test_an_unknown_model_makes_the_cost_unknown_never_zero() -> None:
    table = load_prices()
    unknown = with_usage("success", (1000, 10), (500, 5), {"agent": "mystery-7b", "user": "gpt-4o-mini"})
    cost = cost_of_record(unknown, table)
    assert cost is not None and cost.total is None and cost.roles["agent"] is None
    assert cost.unpriced == ("mystery-7b",) and cost.roles["user"] == pytest.approx((500 * 0.15 + 5 * 0.6) / M)
    nameless = with_usage("success", (1000, 10), (0, 0), {})
    nameless["metadata"]["usage"]["user"]["llm_calls"] = 0
    cost = cost_of_record(nameless, table)
    assert cost is not None and cost.total is None and cost.roles == {"agent": None, "user": 0.0}
    assert (cost.unpriced, cost.unnamed) == ((), ("agent",))
    assert cost_of_record(ours(), table) is None  # no usage recorded at all
    assert cost_of_record({"messages": []}, table) is None
    assert cost_of_record({"metadata": {"usage": {"agent": {"prompt_tokens": "many"}}}}, table) is None


# ---------------------------------------------------------------- aggregation


def test_run_and_verdict_aggregates(tmp_path: Path) -> None:
    table = load_prices(
        write_prices(
            tmp_path / "p.yaml", "models:\n  a: {prompt: 2, completion: 10}\n  u: {prompt: 1, completion: 4}\n"
        )
    )
    models = {"agent": "a", "user": "u"}
    records = [
        with_usage("success", (100_000, 10_000), (20_000, 1_000), models),  # 0.2 + 0.1 + 0.02 + 0.004
        with_usage("success", (300_000, 30_000), (0, 0), models),  # 0.6 + 0.3
        with_usage("failed", (50_000, 0), (10_000, 500), models),  # 0.1 + 0.01 + 0.002
    ]
    costs = [(r["metadata"]["verdict"], cost_of_record(r, table)) for r in records]
    summary = summarize_costs(costs, table)
    each = [0.324, 0.9, 0.112]
    assert summary["trajectories"] == summary["priced"] == 3 and summary["unpriced"] == summary["without_usage"] == 0
    assert summary["total_usd"] == pytest.approx(sum(each)) == summary["priced_total_usd"]
    assert summary["mean_usd"] == pytest.approx(sum(each) / 3) and summary["median_usd"] == pytest.approx(0.324)
    assert summary["max_usd"] == pytest.approx(0.9)
    assert summary["by_role_usd"] == {"agent": pytest.approx(1.2 + 0.1), "user": pytest.approx(0.024 + 0.012)}
    assert summary["tokens"]["agent"]["prompt_tokens"] == 450_000 and summary["tokens"]["user"]["llm_calls"] == 3
    success, failed = summary["by_verdict"]["success"], summary["by_verdict"]["failed"]
    assert list(summary["by_verdict"]) == ["success", "failed"]
    assert success["total_usd"] == pytest.approx(1.224) and success["median_usd"] == pytest.approx((0.324 + 0.9) / 2)
    assert failed["trajectories"] == 1 and failed["total_usd"] == pytest.approx(0.112)
    assert summary["hint"] is None and summary["unpriced_models"] == {}
    text = "\n".join(describe(summary))
    assert "$1.3360 total over 3 trajectories (agent $1.3000, user $0.0360)" in text
    assert "median $0.3240" in text and "success $1.2240 (2, mean $0.6120), failed $0.1120 (1, mean $0.1120)" in text
    assert "n/a" not in text


def test_unpriced_and_usage_less_records_make_the_total_na_with_a_hint(tmp_path: Path) -> None:
    own = write_prices(tmp_path / "p.yaml", "models:\n  a: {prompt: 2, completion: 10}\n")
    table = load_prices(own)
    priced = with_usage("success", (100_000, 0), (0, 0), {"agent": "a", "user": "a"})
    unknown = with_usage("failed", (100_000, 0), (0, 0), {"agent": "b-1", "user": "a"})
    costs = [(v, cost_of_record(r, table)) for v, r in (("success", priced), ("failed", unknown), (None, {}))]
    summary = summarize_costs(costs, table)
    assert (summary["priced"], summary["unpriced"], summary["without_usage"]) == (1, 1, 1)
    assert summary["total_usd"] is None and summary["priced_total_usd"] == pytest.approx(0.2)
    assert summary["by_verdict"]["success"]["total_usd"] == pytest.approx(0.2)
    assert (
        summary["by_verdict"]["failed"]["total_usd"] is None and summary["by_verdict"]["unknown"]["without_usage"] == 1
    )
    assert summary["unpriced_models"] == {"b-1": 1}
    lines = describe(summary)
    assert lines[0] == "n/a total: 1 of 3 trajectories priced ($0.2000; per trajectory mean $0.2000, median $0.2000)"
    assert f"n/a: no price for b-1: add it under `models:` in {own} (ISE_PRICES_FILE)" in lines
    assert "n/a: 1 record(s) carry no token usage (metadata.usage)" in lines
    assert describe(summarize_costs([(None, None)], table)) == [
        "n/a: the records carry no token usage (metadata.usage)"
    ]
    assert describe(summarize_costs([], table)) == ["no trajectories"]


def test_money_is_written_for_people() -> None:
    assert [usd(v) for v in (None, 0, 4e-7, 0.000123456, 0.0123456, 12.3, 1234.5)] == [
        "n/a",
        "$0",
        "<$0.000001",
        "$0.000123",
        "$0.0123",
        "$12.3000",
        "$1,234.50",
    ]


# ---------------------------------------------------------------- ise stats


def test_ise_stats_prints_and_saves_the_cost(tmp_path: Path, monkeypatch, capsys) -> None:
    own = write_prices(tmp_path / "p.yaml", "models:\n  a: {prompt: 2, completion: 10}\n")
    monkeypatch.setenv("ISE_PRICES_FILE", str(own))
    run = tmp_path / "run"
    models = {"agent": "a-0612", "user": "default:user"}
    shard(run, [with_usage("success", (10_000, 1_000), (5_000, 100), models), with_usage("failed", (0, 0), (1, 1), {})])
    assert cli.main(["stats", str(run)]) == 2 - 2
    out = capsys.readouterr().out
    assert (
        "[1] cost, every verdict: agent, user model and the intent's rendering (rejected intents' rendering is not in the records)"
        in out
    )
    assert "n/a total: 1 of 2 trajectories priced ($0.0300;" in out  # 10k x $2 + 1k x $10 per 1M; user free
    assert "n/a: records with tokens but no model named in metadata.models for agent (1), user (1)" in out
    assert "no price for" not in out
    saved = json.loads((run / "stats.json").read_text())
    assert saved["trajectories"] == 1 and saved["cost"]["trajectories"] == 2  # the cost covers every verdict
    assert saved["cost"]["by_verdict"]["success"]["total_usd"] == pytest.approx(0.03)
    assert saved["cost"]["price_files"][-1] == str(own)


def test_a_price_table_can_be_built_in_code() -> None:
    """What a caller such as the viewer holds: a table and a record, no files."""
    table = PriceTable({"m": load_prices().prices["gpt-4o"]}, ("inline",))
    cost = cost_of_record(with_usage("success", (M, M), (0, 0), {"agent": "m-1", "user": "m"}), table)
    assert cost is not None and cost.total == pytest.approx(2.5 + 10.0)


def test_ise_run_checks_the_price_file_before_starting_anything(tmp_path: Path, monkeypatch, capsys) -> None:
    from services.cli import run_cmd

    def no_stack(*_: object, **__: object) -> None:
        raise AssertionError("the stack was started despite a bad price file")

    monkeypatch.setattr(run_cmd.stack, "up", no_stack)
    bad = write_prices(tmp_path / "bad.yaml", "models:\n  gpt-4o: {prompt: 1, completion: 2, cache: 1}\n")
    monkeypatch.setenv("ISE_PRICES_FILE", str(bad))
    assert cli.main(["run", "--llm", "scripted", "--out", str(tmp_path / "out")]) == 2
    assert f"ise: error: {bad}: models.gpt-4o: cache: Extra inputs are not permitted" in capsys.readouterr().err
