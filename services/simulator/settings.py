"""Simulator settings (env prefix ``ISE_SIM_``): turn limits, retries, concurrency, grounding."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class SimulatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ISE_SIM_", extra="forbid")

    max_turns: int = Field(20, ge=1, description="User turns before the episode ends as max_turns (reference: 20).")
    opening: Literal["intent", "model"] = Field(
        "intent",
        description="The first user message: the intent itself, verbatim, as the reference's episodes open "
        "(intent), or written by the user model (model; an opening that does not delegate the intent is "
        "regenerated like role drift).",
    )
    opening_max_chars: int = Field(
        4000, ge=0, description="Cap on the opening user message only (0: none); later messages are never cut."
    )
    max_attempts: int = Field(3, ge=1, description="Attempts per intent when infrastructure fails.")
    parse_attempts: int = Field(3, ge=1, description="User-LLM calls per turn until a valid JSON decision.")
    drift_retries: int = Field(2, ge=0, description="Regenerations of a user message that reads like the assistant.")
    require_verification: bool = Field(
        True, description="Before a successful finish, the user asks for one verification turn if it has not yet."
    )
    concurrency: int = Field(4, ge=1, description="Partitions processed at once per replica.")
    workspaces_addr: str = Field(
        "",
        description="host:port of the executor's gRPC Workspaces API, or several (comma-separated: one per "
        "replica; or a DNS name of them all, dns:///executor:50061); the user model then sees the files really "
        "created or changed (Inspect), from whichever replica answers. Empty: only the agent turn's own digest.",
    )
    workspaces_token: str = Field("", description="Bearer token for the Workspaces API (empty: none).")
    agent_turn_timeout_s: float = Field(
        2100.0,
        gt=0,
        description="An agent turn not back after this long ends the episode as an infrastructure error "
        "(retried as a new attempt); keep it above the executor's ISE_EXEC_TURN_TIMEOUT_S.",
    )
    watchdog_interval_s: float = Field(15.0, gt=0, description="Seconds between checks for overdue agent turns.")
