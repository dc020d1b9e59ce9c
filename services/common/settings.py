"""Settings shared by all services: Kafka, Redis and the per-role LLM endpoints.

Every value comes from the environment (``ISE_KAFKA_*``, ``ISE_REDIS_*``, ``ISE_LLM_<ROLE>_*``);
each service adds its own settings class with its own prefix next to its code.
"""

from __future__ import annotations

import json
import os
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.contracts.topics import Topics

DEFAULT_KAFKA_PORT = 19092
DEFAULT_REDIS_PORT = 16379
DEFAULT_WORKSPACES_PORT = 50061

LLMRole = Literal["intent", "user", "agent"]


class KafkaSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ISE_KAFKA_", extra="forbid")

    bootstrap: str = Field(f"127.0.0.1:{DEFAULT_KAFKA_PORT}", description="host:port[,host:port]")
    topic_prefix: str = Field("", description="Prepended to every topic (isolates runs and tests).")
    partitions: int = Field(12, ge=1, description="Partitions per topic: more than executor replicas.")
    replication_factor: int = Field(1, ge=1)
    retention_ms: int = Field(-1, description="-1 keeps data forever: Kafka is the log of record.")
    request_timeout_ms: int = 30_000
    run_scope: str = Field(
        "",
        description="A run id: consume only that run's events, in consumer groups of its own starting at "
        "the run's start (set by `ise run` for the services it starts; empty = serve every run).",
    )
    run_started_ms: int = Field(
        0, ge=0, description="With run_scope: the run's start (epoch ms); new scoped groups start there."
    )

    @property
    def topics(self) -> Topics:
        return Topics.with_prefix(self.topic_prefix)

    def group(self, service: str, purpose: str) -> str:
        """Consumer-group id: one group per (service, purpose), isolated by the topic prefix and,
        for a run-scoped process, by the run."""
        scoped = f".run.{self.run_scope}" if self.run_scope else ""
        return f"{self.topic_prefix}ise.{service}.{purpose}{scoped}"


class RedisSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ISE_REDIS_", extra="forbid")

    url: str = f"redis://127.0.0.1:{DEFAULT_REDIS_PORT}/0"
    key_prefix: str = Field("ise", description="Namespace of every key (isolates runs and tests).")
    state_ttl_s: int = Field(7 * 24 * 3600, description="Working state expires; Kafka keeps the record.")


_DEFAULT_MODELS: dict[str, str] = {"intent": "gpt-4o-mini", "user": "gpt-4o-mini", "agent": "gpt-4o"}


class LLMSettings(BaseSettings):
    """One role's endpoint. Env: ``ISE_LLM_<ROLE>_BASE_URL`` etc., falling back to ``OPENAI_*``."""

    model_config = SettingsConfigDict(extra="forbid")

    base_url: str = ""
    api_key: str = ""
    model: str = ""
    temperature: float | None = 0.7
    max_tokens: int = 1024
    timeout_s: float = 120.0
    max_retries: int = Field(3, ge=0, description="Retries with backoff inside the openai client.")
    tool_choice_first_step: Literal["auto", "required"] = Field(
        "auto", description="'required' forces a tool call on the first step of a turn (small models)."
    )
    tool_call_prefill: str = Field(
        "", description="Assistant prefill that starts a tool call (e.g. '<tool_call>\\n' for SmolLM2)."
    )
    tool_call_stop: str = Field("", description="Stop string after one forced tool call (small models).")
    response_format: Literal["json_object", "json_schema", "text"] = Field(
        "json_object",
        description="How JSON replies are requested: json_schema enforces the fields; text asks for "
        "none (for models that write better prose than JSON; callers then accept plain text).",
    )

    @classmethod
    def for_role(cls, role: LLMRole) -> LLMSettings:
        prefix = f"ISE_LLM_{role.upper()}_"
        settings = cls(_env_prefix=prefix)
        updates: dict[str, object] = {}
        if not settings.base_url:
            updates["base_url"] = os.environ.get("OPENAI_BASE_URL", "")
        if not settings.api_key:
            updates["api_key"] = os.environ.get("OPENAI_API_KEY", "") or "not-needed"
        if not settings.model:
            updates["model"] = os.environ.get("ISE_LLM_MODEL", "") or _DEFAULT_MODELS[role]
        return settings.model_copy(update=updates)


def settings_env(settings: BaseSettings, *, prefix: str | None = None) -> dict[str, str]:
    """The environment variables that give a child process the same ``settings``: every field
    that was set explicitly, under the class's prefix (or ``prefix``), values JSON-encoded where
    they are not strings (as pydantic-settings reads them back). The one way to hand settings
    to ``ise service`` processes, instead of spelling variable names by hand."""
    head = prefix if prefix is not None else str(settings.model_config.get("env_prefix", ""))
    env: dict[str, str] = {}
    for name, value in settings.model_dump(mode="json", exclude_unset=True).items():
        env[f"{head}{name}".upper()] = value if isinstance(value, str) else json.dumps(value)
    return env
