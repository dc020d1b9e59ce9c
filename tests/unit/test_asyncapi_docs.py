"""The committed AsyncAPI documents (docs/asyncapi/) match what the code generates."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_asyncapi_docs_are_fresh(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ISE_", "OPENAI_"))}
    subprocess.run(
        [sys.executable, "-m", "services.cli.main", "docs", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    stale = [
        p.name
        for p in sorted(tmp_path.glob("*.json"))
        if p.read_text() != (ROOT / "docs/asyncapi" / p.name).read_text()
    ]
    assert stale == [], f"stale AsyncAPI docs {stale}: run `ise docs`"
    assert {p.name for p in tmp_path.glob("*.json")} == {"intent.json", "dedup.json", "simulator.json", "executor.json"}
