"""Rendering a sampled tuple into a persona-voiced request with the LLM, validated, with retries."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from services.common.contracts.messages import Usage
from services.common.errors import PermanentError
from services.common.llm.client import LLMClient
from services.common.resources import load_json, load_text
from services.intent.sampler import IntentTuple

_FIRST_PERSON = re.compile(r"\b(i|i'm|i've|i'd|my|me|we|our|us)\b", re.IGNORECASE)


class RenderError(PermanentError):
    """The LLM did not produce a valid request within the allowed attempts."""


@dataclass(frozen=True)
class RenderLimits:
    min_words: int = 12
    max_words: int = 400
    attempts: int = 3


def validate_text(text: str, limits: RenderLimits) -> str | None:
    """None when ``text`` is acceptable, else the reason it is not."""
    words = len(text.split())
    if words < limits.min_words:
        return f"too short ({words} words < {limits.min_words})"
    if words > limits.max_words:
        return f"too long ({words} words > {limits.max_words})"
    if not _FIRST_PERSON.search(text):
        return "not in the first person"
    return None


def extract_intent(content: str) -> str:
    """The ``intent`` of a JSON reply; a reply that is plain prose is taken as the request itself."""
    start, end = content.find("{"), content.rfind("}")
    if start < 0 or end <= start:
        return content.strip()
    value = json.loads(content[start : end + 1]).get("intent", "")
    if not isinstance(value, str):
        raise ValueError("'intent' is not a string")
    return value.strip()


def build_prompt(tup: IntentTuple, prompt_file: str) -> str:
    """Fill a prompt file; files may use any of the fields below."""
    p = tup.persona
    return load_text("services.intent", f"prompts/{prompt_file}").format(
        tuple_json=json.dumps(tup.as_prompt_json(), ensure_ascii=False, indent=1),
        name=p.name,
        role=p.role,
        industry=p.industry,
        work_context=p.work_context or p.industry,
        communication_style=p.communication_style,
        tasks="; ".join(f"{t.name.lower()} ({t.description.rstrip('.').lower()})" for t in tup.tasks),
    )


async def render(
    llm: LLMClient, tup: IntentTuple, limits: RenderLimits, prompt_file: str = "render.md"
) -> tuple[str, Usage, int]:
    """Return (text, usage, attempts used); RenderError after ``limits.attempts`` failures."""
    prompt = build_prompt(tup, prompt_file)
    usage = Usage()
    problems: list[str] = []
    for attempt in range(1, limits.attempts + 1):
        schema = load_json("services.intent", "prompts/render.schema.json")
        result = await llm.chat([{"role": "user", "content": prompt}], json_schema=schema)
        usage = usage + result.usage
        try:
            text = extract_intent(result.message.content or "")
        except (ValueError, json.JSONDecodeError) as exc:
            problems.append(f"attempt {attempt}: {exc}")
            continue
        problem = validate_text(text, limits)
        if problem is None:
            return text, usage, attempt
        problems.append(f"attempt {attempt}: {problem}")
    raise RenderError("; ".join(problems))
