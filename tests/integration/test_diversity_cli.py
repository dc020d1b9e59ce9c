"""``ise diversity`` end to end on a small intents.jsonl with the real MiniLM model (offline)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from services.cli import diversity_cmd
from services.dedup.model_assets import MINILM

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ACTIONS = [
    "archive every log file older than a week",
    "compress the CSV exports in ~/reports",
    "list the ten largest files in my home folder",
    "rename the photos by their EXIF date",
    "count the lines of Python code in this repo",
    "back up the Postgres database to S3",
    "convert these Markdown notes to PDF",
    "find the git branches already merged into main",
    "check which ports are listening on this box",
    "summarise last month's sales spreadsheet",
]
DOMAINS = [("files", "File management"), ("data", "Data analysis"), ("ops", "System operations")]


def _record(i: int) -> dict[str, object]:
    doms = [DOMAINS[i % 3]] + ([DOMAINS[(i + 1) % 3]] if i % 4 == 0 else [])
    text = f"Hi, I'm a {('busy', 'new', 'senior')[i % 3]} analyst. Please {ACTIONS[i % 10]}, then email me the result."
    if i >= 30:  # a few exact repeats: the pool is not perfectly diverse
        text = f"Please {ACTIONS[0]}."
    return {
        "id": f"intent_{i:04x}",
        "natural_language_intent": text,
        "domains": [f"dom-{name}" for name, _ in doms],
        "complexity": ("simple", "medium", "complex")[i % 3],
        "metadata": {"domains": [{"name": name, "description": desc, "selected_tasks": []} for name, desc in doms]},
    }


@pytest.fixture
def pool(tmp_path: Path) -> Path:
    path = tmp_path / "intents.jsonl"
    lines = [json.dumps(_record(i)) for i in range(40)] + ["", "{not json"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_diversity_on_a_small_pool(pool: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = SimpleNamespace(
        pool=pool,
        model=MINILM,
        batch_size=16,
        json=tmp_path / "out" / "report.json",
        png=tmp_path / "out" / "curve.png",
        seed=0,
        sizes=None,
        paper=True,
        quiet=True,
        compare=None,
    )
    assert diversity_cmd.run(args) == 0
    out, err = capsys.readouterr()
    assert "skipped" in err and ":42" in err  # the bad line is named, the rest goes on
    assert "overall" in out and "domain/files" in out and "Distinct-1/2/3" in out

    report = json.loads(args.json.read_text())
    assert report["n"] == 40 and report["dim"] == 384 and report["model"] == MINILM
    assert report["skipped_lines"] == 1
    vendi = report["vendi"]
    # 30 varied texts plus 10 copies of one: well above 1, well below 40, orders ordered.
    assert 2.0 < vendi["qinf"] <= vendi["q2"] <= vendi["q1"] < 40
    domains = report["cells"]["domain"]
    assert set(domains) == {"files", "data", "ops"}
    assert sum(c["n"] for c in domains.values()) == 40 + 10  # every 4th intent has two domains
    assert set(report["cells"]["complexity"]) == {"simple", "medium", "complex"}
    for cell in [*domains.values(), *report["cells"]["complexity"].values()]:
        assert 1.0 <= cell["q1"] <= cell["n"]
    assert 0 < report["distinct"]["distinct_1"] < report["distinct"]["distinct_2"] <= 1
    points = report["curve"]["points"]
    assert [p["n"] for p in points] == [10, 20, 40]
    assert points[-1]["vendi"] == pytest.approx(vendi["q1"], rel=1e-9)
    assert args.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # --compare: a second pool's curve at the same sizes and seed, printed, saved and drawn
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps(_record(i)) + "\n" for i in range(0, 40, 2)), encoding="utf-8")
    args.compare, args.png = other, tmp_path / "out" / "both.png"
    assert diversity_cmd.run(args) == 0
    out = capsys.readouterr().out
    compared = json.loads(args.json.read_text())["compare"]
    assert compared["pool"] == str(other) and [p["n"] for p in compared["points"]] == [10, 20]
    assert "other.jsonl (q=1): 10:" in out and args.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_empty_pool_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    args = SimpleNamespace(
        pool=empty,
        model=MINILM,
        batch_size=8,
        json=None,
        png=None,
        seed=0,
        sizes=None,
        paper=False,
        quiet=True,
        compare=None,
    )
    assert diversity_cmd.run(args) == 2
    assert "no usable intents" in capsys.readouterr().err
    assert not list(tmp_path.glob("empty.*.json"))


def test_module_entry_point_help() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "services.cli.diversity_cmd", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Vendi Score" in proc.stdout and "Distinct-N" in proc.stdout and "--png" in proc.stdout
