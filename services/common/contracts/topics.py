"""Kafka topic names (docs/architecture.md §1) and what each one is keyed by."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Topics:
    """The seven topics; a prefix lets tests and parallel runs use their own set."""

    intents_proposed: str = "ise.intents.proposed"
    intents_rejected: str = "ise.intents.rejected"
    tasks: str = "ise.tasks"
    turns_user: str = "ise.turns.user"
    turns_agent: str = "ise.turns.agent"
    trajectories_finished: str = "ise.trajectories.finished"
    dlq: str = "ise.dlq"

    @classmethod
    def with_prefix(cls, prefix: str) -> Topics:
        """``Topics.with_prefix("t1.")`` -> ``t1.ise.tasks`` and so on; ``""`` gives the defaults."""
        base = cls()
        return cls(**{f.name: prefix + getattr(base, f.name) for f in fields(cls)})

    def all(self) -> list[str]:
        return [getattr(self, f.name) for f in fields(self)]


TOPICS = Topics()
