"""Loading the data files that ship inside the packages (prompts, catalogs, scripts)."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import yaml


@cache
def load_text(package: str, path: str) -> str:
    """The text of ``path`` inside ``package`` (e.g. ``("services.simulator", "prompts/user.md")``)."""
    return resources.files(package).joinpath(path).read_text(encoding="utf-8")


@cache
def load_json(package: str, path: str) -> Any:
    return json.loads(load_text(package, path))


@cache
def load_yaml(package: str, path: str) -> Any:
    """Parsed once per process; treat the result as read-only."""
    return yaml.load(load_text(package, path), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
