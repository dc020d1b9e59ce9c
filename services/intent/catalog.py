"""The 4D catalogs (personas, domains, tasks, complexity tiers), loaded from data files and checked."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from services.common.contracts.intent import DomainRef, Persona
from services.common.errors import ConfigError

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C parser reads the catalogs ~10x faster
CATALOG_DIR = Path(__file__).parent / "catalogs"
# Task needs the offline workspace cannot meet (see the vocabulary in catalogs/tasks.yaml).
OFFLINE_EXCLUDED_NEEDS = frozenset({"internet", "credentials", "device", "gui", "software"})


@dataclass(frozen=True)
class Task:
    id: str
    name: str
    description: str
    domains: tuple[str, ...]
    needs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Tier:
    name: str
    weight: float
    domains: tuple[int, int]
    tasks: tuple[int, int]
    meaning: str = ""


@dataclass(frozen=True)
class Catalog:
    personas: tuple[Persona, ...]
    domains: tuple[DomainRef, ...]
    tasks: tuple[Task, ...]
    tiers: tuple[Tier, ...]
    excluded_needs: frozenset[str] = field(default_factory=frozenset)

    def usable_tasks(self, domain_id: str) -> list[Task]:
        """Tasks compatible with ``domain_id`` whose needs the workspace can meet."""
        return [t for t in self.tasks if domain_id in t.domains and not (set(t.needs) & self.excluded_needs)]


def _read(directory: Path, name: str) -> Any:
    path = directory / name
    if not path.exists():
        raise ConfigError(f"catalog file missing: {path}")
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)


def load_catalog(directory: Path = CATALOG_DIR, *, excluded_needs: frozenset[str] = OFFLINE_EXCLUDED_NEEDS) -> Catalog:
    personas = tuple(Persona.model_validate(p) for p in _read(directory, "personas.yaml"))
    domains = tuple(DomainRef.model_validate(d) for d in _read(directory, "domains.yaml"))
    tasks = tuple(
        Task(
            id=t["id"],
            name=t["name"],
            description=t["description"],
            domains=tuple(t["domains"]),
            needs=tuple(t.get("needs", ())),
        )
        for t in _read(directory, "tasks.yaml")
    )
    tiers = tuple(
        Tier(
            name=n,
            weight=float(v["weight"]),
            domains=tuple(v["domains"]),
            tasks=tuple(v["tasks"]),
            meaning=v.get("meaning", ""),
        )
        for n, v in _read(directory, "complexity.yaml").items()
    )
    catalog = Catalog(personas, domains, tasks, tiers, excluded_needs)
    check_catalog(catalog)
    return catalog


def check_catalog(catalog: Catalog) -> None:
    """Raise ConfigError naming the first inconsistency: duplicate ids, unknown domains, empty pools."""
    for label, ids in (
        ("persona", [p.id for p in catalog.personas]),
        ("domain", [d.id for d in catalog.domains]),
        ("task", [t.id for t in catalog.tasks]),
    ):
        dupes = {i for i in ids if ids.count(i) > 1}
        if dupes:
            raise ConfigError(f"duplicate {label} ids in catalog: {sorted(dupes)}")
    known = {d.id for d in catalog.domains}
    for task in catalog.tasks:
        unknown = set(task.domains) - known
        if unknown:
            raise ConfigError(f"task {task.id} names unknown domains {sorted(unknown)}")
    if not catalog.personas or not catalog.tiers:
        raise ConfigError("catalog needs at least one persona and one complexity tier")
    empty = [d.id for d in catalog.domains if not catalog.usable_tasks(d.id)]
    if len(empty) == len(catalog.domains):
        raise ConfigError("no domain has a usable task")
