"""The structured intent: Persona x Domain x Task x Complexity, and its rendered request."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from services.common.contracts.envelope import StrictModel
from services.common.contracts.messages import Usage

Complexity = Literal["simple", "medium", "complex"]


class Persona(StrictModel):
    id: str
    name: str
    role: str
    industry: str
    expertise: list[str] = Field(default_factory=list)
    experience_level: str = ""
    communication_style: str = ""
    work_context: str = ""


class DomainRef(StrictModel):
    id: str
    name: str
    description: str = ""


class TaskRef(StrictModel):
    id: str
    name: str
    description: str = ""
    domain: str = Field(description="Id of the domain this task was drawn under.")


class Intent(StrictModel):
    """One intent; ``text`` is the persona-voiced request the user simulator delegates."""

    intent_id: str
    text: str = Field(min_length=1, description="The rendered natural-language request.")
    persona: Persona
    domains: list[DomainRef]
    tasks: list[TaskRef]
    complexity: Complexity
    seed: int = Field(description="Seed the tuple was sampled with (replay is deterministic).")
    source: Literal["rendered", "imported"] = "rendered"
    render_model: str = ""
    render_usage: Usage = Field(
        default_factory=Usage, description="Tokens the renderer spent on this intent, every attempt counted."
    )
    tools_used: list[str] = Field(default_factory=list)
    skills_used: list[str] = Field(default_factory=list)
