"""Intent service settings (env prefix ``ISE_INTENT_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class IntentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ISE_INTENT_", extra="forbid")

    count: int = Field(5, ge=1, description="Intents to generate.")
    seed: int = Field(0, description="Base seed: the same seed samples the same tuples.")
    concurrency: int = Field(4, ge=1, description="Renders in flight at once.")
    render_attempts: int = Field(3, ge=1)
    catalog_dir: str = Field("", description="Folder with personas/domains/tasks/complexity YAML ('' = built in).")
    exclude_needs: list[str] = Field(
        default_factory=lambda: ["internet", "credentials", "device", "gui", "software"],
        description="Tasks needing any of these are never sampled (JSON list; [] with a networked workspace).",
    )
    prompt: str = Field(
        "render.md", description="Prompt file under services/intent/prompts/ (render_small.md suits tiny models)."
    )
    min_words: int = Field(70, ge=1, description="Shortest acceptable request (the prompt asks for 80-200 words).")
    min_task_coverage: float = Field(0.5, ge=0, le=1, description="Share of sampled tasks the text must name.")
    require_concrete_data: bool = Field(True, description="Reject requests without numbers, file names or values.")
    require_references: bool = Field(True, description="Reject requests that leave out a sampled tool or skill name.")
    max_words: int = Field(220, ge=10, description="Longest acceptable request.")
    steer: bool = Field(
        False,
        description="Steer the draw of domains by the gate's measured diversity: domain x complexity cells whose "
        "accepted intents add little Vendi are drawn less (off: the paper's fixed prior).",
    )
    steer_strength: float = Field(1.0, ge=0, description="Exponent on the relative gain (0: no steering).")
