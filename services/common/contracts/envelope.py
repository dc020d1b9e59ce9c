"""The envelope every event carries, and the strict base model all contracts derive from."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1
"""Bumped only when a field changes meaning; new optional fields keep the version."""


class StrictModel(BaseModel):
    """Unknown fields are an error: a typo in a producer must not pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=False, populate_by_name=True)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Envelope(StrictModel):
    """Fields common to every event on every topic."""

    schema_version: int = Field(SCHEMA_VERSION, description="Contract version of this event.")
    event_id: str = Field(description="Unique, content-derived where replay must be deterministic.")
    run_id: str = Field(description="The generation run this event belongs to.")
    created_at: datetime = Field(default_factory=utcnow)
    producer: str = Field(description="Service (and replica) that produced the event.")
