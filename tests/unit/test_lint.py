"""The code passes ruff (lint and format) and mypy as configured in pyproject.toml; test modules collect."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ruff_is_clean() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "services", "tests", "scripts", "bench"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_format_is_clean() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "services", "tests", "scripts", "bench"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, "run `ruff format services tests scripts bench`\n" + done.stdout + done.stderr


def test_mypy_is_clean() -> None:
    """services/ type-checks (pydantic plugin; settings in pyproject.toml [tool.mypy])."""
    done = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_test_modules_have_unique_names() -> None:
    """The test folders have no __init__.py, so pytest imports each test file by its basename: two
    files of one name in different folders stop the whole collection ("import file mismatch")."""
    names = Counter(path.name for path in (ROOT / "tests").rglob("test_*.py"))
    assert [name for name, n in names.items() if n > 1] == []
