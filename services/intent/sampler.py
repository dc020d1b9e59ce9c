"""Seeded sampling of Persona x Domains x Tasks x Complexity tuples (same seed -> same tuple).

Domains are drawn among those with usable tasks; tasks only from the drawn domains, at least
one per domain, within the tier's bounds. Tool and skill references (``tools_used``,
``skills_used``) are drawn from the pools' entries at home in the drawn domains, within the
tier's bounds, with a generator of their own so that adding them left every earlier tuple as it was.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from services.common.contracts.intent import DomainRef, Intent, Persona, TaskRef
from services.common.contracts.messages import Usage
from services.common.steering import cell_label
from services.intent.catalog import Catalog, Reference, Tier

T = TypeVar("T")


@dataclass(frozen=True)
class IntentTuple:
    seed: int
    persona: Persona
    domains: tuple[DomainRef, ...]
    tasks: tuple[TaskRef, ...]
    complexity: str
    tools: tuple[Reference, ...] = ()
    skills: tuple[Reference, ...] = ()

    def to_intent(self, intent_id: str, text: str, render_model: str = "", usage: Usage | None = None) -> Intent:
        """The intent this tuple rendered to as ``text`` (by ``render_model``, spending ``usage``)."""
        return Intent(
            intent_id=intent_id,
            text=text,
            persona=self.persona,
            domains=list(self.domains),
            tasks=list(self.tasks),
            complexity=self.complexity,
            seed=self.seed,
            render_model=render_model,
            render_usage=usage or Usage(),
            tools_used=[t.id for t in self.tools],
            skills_used=[s.id for s in self.skills],
        )

    def as_prompt_json(self) -> dict[str, object]:
        return {
            "persona": self.persona.model_dump(exclude={"id"}),
            "domains": [{"name": d.name, "description": d.description} for d in self.domains],
            "tasks": [{"name": t.name, "description": t.description, "domain": t.domain} for t in self.tasks],
            "tools": [{"name": t.name, "description": t.description} for t in self.tools],
            "skills": [{"name": s.name, "description": s.description} for s in self.skills],
            "complexity": self.complexity,
        }


def _pick_tier(rng: random.Random, tiers: tuple[Tier, ...]) -> Tier:
    return rng.choices(tiers, weights=[t.weight for t in tiers], k=1)[0]


def sample_tuple(catalog: Catalog, seed: int, cell_weights: Mapping[str, float] | None = None) -> IntentTuple:
    """The tuple of ``seed``. ``cell_weights`` (diversity steering, ``steering.py``) reweights the
    domains drawn within the sampled tier by ``"<domain>/<tier>"`` cell; the tier itself keeps the
    prior, so the complexity mix stays the paper's. Without weights: the paper's uniform draw."""
    rng = random.Random(seed)
    tier = _pick_tier(rng, catalog.tiers)
    persona = rng.choice(catalog.personas)
    eligible = [d for d in catalog.domains if catalog.usable_tasks(d.id)]
    n_domains = min(rng.randint(*tier.domains), len(eligible))
    if cell_weights:
        weights = [cell_weights.get(cell_label(d.id, tier.name), 1.0) for d in eligible]
        domains = _weighted_sample(rng, eligible, weights, n_domains)
    else:
        domains = rng.sample(eligible, n_domains)
    chosen: dict[str, TaskRef] = {}
    for domain in domains:  # at least one task per drawn domain
        pool = [t for t in catalog.usable_tasks(domain.id) if t.id not in chosen]
        if pool:
            task = rng.choice(pool)
            chosen[task.id] = TaskRef(id=task.id, name=task.name, description=task.description, domain=domain.id)
    rest = [(t, d) for d in domains for t in catalog.usable_tasks(d.id) if t.id not in chosen]
    target = rng.randint(*tier.tasks)
    rng.shuffle(rest)
    for task, domain in rest:
        if len(chosen) >= target:
            break
        if task.id not in chosen:
            chosen[task.id] = TaskRef(id=task.id, name=task.name, description=task.description, domain=domain.id)
    refs = random.Random(f"{seed}:references")
    at_home = {d.id for d in domains}
    return IntentTuple(
        seed=seed,
        persona=persona,
        domains=tuple(domains),
        tasks=tuple(chosen.values()),
        complexity=tier.name,
        tools=_draw(refs, catalog.usable_references(catalog.tools, at_home), tier.tools),
        skills=_draw(refs, catalog.usable_references(catalog.skills, at_home), tier.skills),
    )


def _weighted_sample(rng: random.Random, items: list[T], weights: list[float], k: int) -> list[T]:
    """``k`` distinct items, each draw proportional to the weights of those left."""
    pool, left = list(items), list(weights)
    chosen: list[T] = []
    for _ in range(k):
        index = rng.choices(range(len(pool)), weights=left, k=1)[0]
        chosen.append(pool.pop(index))
        left.pop(index)
    return chosen


def _draw(rng: random.Random, pool: list[Reference], bounds: tuple[int, int]) -> tuple[Reference, ...]:
    return tuple(rng.sample(pool, min(rng.randint(*bounds), len(pool))))
