"""The envelope every event carries, the base model all contracts derive from, and the id rules.

Versioning: producers build events strictly (an unknown field is a typo and an error), while
consumers read them *forward-compatibly*: a newer producer may add fields (and bumps
``SCHEMA_VERSION`` when it does); an older consumer ignores the fields it does not know and
logs them, so a rolling upgrade never dead-letters a stream. A field never changes meaning.

Ids that end up in paths, keys and container names (``run_id``, ``episode_id``) must match
:data:`SAFE_ID`, so no event can steer a file write outside its folder.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

SCHEMA_VERSION = 1
"""Bumped when fields are added (older consumers ignore them) - never to change a meaning."""

SAFE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
"""Letters, digits and ``_.:-``; starts with a letter or digit; at most 128 characters."""

_SAFE = re.compile(SAFE_ID)
SafeId = Annotated[str, StringConstraints(pattern=SAFE_ID)]

M = TypeVar("M", bound=BaseModel)


def is_safe_id(value: str) -> bool:
    """True when ``value`` is usable as a path component, key part and container-name part."""
    return bool(_SAFE.fullmatch(value))


class StrictModel(BaseModel):
    """Unknown fields are an error when *building* a model: a typo in a producer must not pass."""

    model_config = ConfigDict(extra="forbid", frozen=False, populate_by_name=True)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Envelope(StrictModel):
    """Fields common to every event on every topic."""

    schema_version: int = Field(SCHEMA_VERSION, ge=1, description="Contract version of this event.")
    event_id: str = Field(description="Unique, content-derived where replay must be deterministic.")
    run_id: SafeId = Field(description="The generation run this event belongs to (a safe id).")
    created_at: datetime = Field(default_factory=utcnow)
    producer: str = Field(description="Service (and replica) that produced the event.")


def read_compatible(model: type[M], raw: bytes | str) -> tuple[M, list[str]]:
    """Validate ``raw`` JSON as ``model``, ignoring fields a newer producer added.

    Returns the model and the dotted names of the ignored fields (empty for an exact match, the
    common case, which costs one validation). Raises ``pydantic.ValidationError`` for anything
    else (missing or malformed fields), with only those errors.
    """
    try:
        return model.model_validate_json(raw), []
    except ValidationError as exc:
        extras = [e for e in exc.errors() if e["type"] == "extra_forbidden"]
        if len(extras) < len(exc.errors()) or not extras:
            if extras:  # report the real problems, not the fields we would have ignored
                model.model_validate_json(raw, extra="ignore")
            raise
        names = [".".join(str(p) for p in e["loc"]) for e in extras]
        return model.model_validate_json(raw, extra="ignore"), names
