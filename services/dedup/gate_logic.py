"""The gate's turn logic, pure: a proposed intent and the pool's verdict in, the event out.

``IntentGate`` (``gate.py``) answers "is this a duplicate?"; this module turns that answer into
the one event the gate publishes for the proposal: a ``TaskReady`` for the intent's first
episode, or an ``IntentRejected`` naming the neighbour. The same proposal always makes the same
event (ids derive from the run and the intent), so a redelivery republishes an identical event.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.common.contracts.events import IntentProposed, IntentRejected, TaskReady
from services.common.contracts.topics import Topics
from services.common.ids import Stamp, episode_id
from services.common.outbox import OutboxItem
from services.dedup.gate import GateDecision


@dataclass(frozen=True)
class GateLogic:
    stamp: Stamp
    topics: Topics

    def decide(self, event: IntentProposed, decision: GateDecision) -> OutboxItem:
        """The event answering ``event`` given the pool's ``decision``."""
        return self.accepted(event) if decision.accepted else self.rejected(event, decision)

    def accepted(self, event: IntentProposed) -> OutboxItem:
        intent = event.intent
        ep = episode_id(event.run_id, intent.intent_id, 0)
        task = TaskReady(
            **self.stamp.envelope("task", event.run_id, ep), episode_id=ep, attempt=0, intent=intent, seed=intent.seed
        )
        return OutboxItem.of(self.topics.tasks, ep, task)

    def rejected(self, event: IntentProposed, decision: GateDecision) -> OutboxItem:
        intent = event.intent
        rejected = IntentRejected(
            **self.stamp.envelope("rejected", event.run_id, intent.intent_id),
            intent=intent,
            reason=decision.reason or "near_duplicate",
            nearest_intent_id=decision.nearest_id,
            similarity=decision.similarity,
        )
        return OutboxItem.of(self.topics.intents_rejected, intent.intent_id, rejected)
