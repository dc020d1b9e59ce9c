"""The 4D catalogs (personas, domains, tasks, complexity tiers) and the tool and skill pools an
intent may reference, loaded from data files and checked."""

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
class Reference:
    """A tool or skill a request may name (``tools.yaml``, ``skills.yaml``)."""

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
    tools: tuple[int, int] = (0, 0)
    skills: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class Catalog:
    personas: tuple[Persona, ...]
    domains: tuple[DomainRef, ...]
    tasks: tuple[Task, ...]
    tiers: tuple[Tier, ...]
    excluded_needs: frozenset[str] = field(default_factory=frozenset)
    tools: tuple[Reference, ...] = ()
    skills: tuple[Reference, ...] = ()

    def usable_tasks(self, domain_id: str) -> list[Task]:
        """Tasks compatible with ``domain_id`` whose needs the workspace can meet."""
        return [t for t in self.tasks if domain_id in t.domains and not (set(t.needs) & self.excluded_needs)]

    def usable_references(self, pool: tuple[Reference, ...], domain_ids: set[str]) -> list[Reference]:
        """Tools or skills at home in one of ``domain_ids`` whose needs the workspace can meet."""
        return [r for r in pool if set(r.domains) & domain_ids and not (set(r.needs) & self.excluded_needs)]

    def excluded_tasks(self) -> int:
        """How many tasks are never sampled because the workspace cannot meet their needs."""
        return sum(1 for t in self.tasks if set(t.needs) & self.excluded_needs)


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
            tools=tuple(v.get("tools", (0, 0))),
            skills=tuple(v.get("skills", (0, 0))),
        )
        for n, v in _read(directory, "complexity.yaml").items()
    )
    pools = [_references(directory, name) for name in ("tools.yaml", "skills.yaml")]
    catalog = Catalog(personas, domains, tasks, tiers, excluded_needs, *pools)
    check_catalog(catalog)
    return catalog


def _references(directory: Path, name: str) -> tuple[Reference, ...]:
    """A tool or skill pool; a catalog folder without the file has an empty pool."""
    if not (directory / name).exists():
        return ()
    return tuple(
        Reference(
            id=r["id"],
            name=r["name"],
            description=r["description"],
            domains=tuple(r["domains"]),
            needs=tuple(r.get("needs", ())),
        )
        for r in _read(directory, name)
    )


def check_catalog(catalog: Catalog) -> None:
    """Raise ConfigError naming the first inconsistency: duplicate ids, unknown domains, empty pools."""
    for label, ids in (
        ("persona", [p.id for p in catalog.personas]),
        ("domain", [d.id for d in catalog.domains]),
        ("task", [t.id for t in catalog.tasks]),
        ("tool", [t.id for t in catalog.tools]),
        ("skill", [s.id for s in catalog.skills]),
    ):
        dupes = {i for i in ids if ids.count(i) > 1}
        if dupes:
            raise ConfigError(f"duplicate {label} ids in catalog: {sorted(dupes)}")
    known = {d.id for d in catalog.domains}
    items: list[Task | Reference] = [*catalog.tasks, *catalog.tools, *catalog.skills]
    for item in items:
        unknown = set(item.domains) - known
        if unknown:
            raise ConfigError(f"{item.id} names unknown domains {sorted(unknown)}")
    if not catalog.personas or not catalog.tiers:
        raise ConfigError("catalog needs at least one persona and one complexity tier")
    empty = [d.id for d in catalog.domains if not catalog.usable_tasks(d.id)]
    if len(empty) == len(catalog.domains):
        raise ConfigError("no domain has a usable task")
