"""Rendering a sampled tuple into a persona-voiced request with the LLM, validated, with retries."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from services.common.contracts.messages import Usage
from services.common.errors import PermanentError
from services.common.llm.client import LLMClient
from services.common.resources import load_text
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
    start, end = content.find("{"), content.rfind("}")
    if start < 0 or end <= start:
        raise ValueError("no JSON object in the reply")
    value = json.loads(content[start : end + 1]).get("intent", "")
    if not isinstance(value, str):
        raise ValueError("'intent' is not a string")
    return value.strip()


async def render(llm: LLMClient, tup: IntentTuple, limits: RenderLimits) -> tuple[str, Usage, int]:
    """Return (text, usage, attempts used); RenderError after ``limits.attempts`` failures."""
    prompt = load_text("services.intent", "prompts/render.md").format(
        tuple_json=json.dumps(tup.as_prompt_json(), ensure_ascii=False, indent=1)
    )
    usage = Usage()
    problems: list[str] = []
    for attempt in range(1, limits.attempts + 1):
        result = await llm.chat([{"role": "user", "content": prompt}], json_mode=True)
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
