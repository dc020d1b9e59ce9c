"""Rendering a sampled tuple into a persona-voiced request with the LLM, validated, with retries."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from services.common.contracts.messages import Usage
from services.common.llm.client import LLMClient
from services.common.resources import load_json, load_text, load_yaml
from services.intent.errors import RenderError
from services.intent.sampler import IntentTuple

_WORD = re.compile(r"[a-z0-9']+|!!")
_CONCRETE = re.compile(r"\d|\b[\w-]+\.[a-z]{2,5}\b|\"[^\"]{2,}\"|`[^`]+`")


@dataclass(frozen=True)
class RenderLimits:
    min_words: int = 70
    max_words: int = 220
    attempts: int = 3
    min_task_coverage: float = 0.5
    require_concrete_data: bool = True
    require_references: bool = True


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def task_coverage(text: str, tup: IntentTuple) -> float:
    """Share of the tuple's tasks named in ``text`` by at least one content word (5-letter stems)."""
    lists = load_yaml("services.intent", "prompts/validation.yaml")
    stems = {w[:5] for w in _words(text)}
    covered = 0
    for task in tup.tasks:
        keys = {w[:5] for w in _words(task.name) if w not in lists["stopwords"] and len(w) > 2}
        covered += bool(keys & stems) or not keys
    return covered / len(tup.tasks) if tup.tasks else 1.0


def missing_references(text: str, tup: IntentTuple) -> list[str]:
    """The tuple's tool and skill names that ``text`` does not name (case-insensitive)."""
    lowered = " ".join(text.lower().split())
    return [r.name for r in (*tup.tools, *tup.skills) if r.name.lower() not in lowered]


def validate_text(text: str, limits: RenderLimits, tup: IntentTuple | None = None) -> str | None:
    """None when ``text`` is acceptable, else the reason it is not."""
    lists = load_yaml("services.intent", "prompts/validation.yaml")
    words = _words(text)
    if len(text.split()) < limits.min_words:
        return f"too short ({len(text.split())} words < {limits.min_words})"
    if len(text.split()) > limits.max_words:
        return f"too long ({len(text.split())} words > {limits.max_words})"
    if not set(words) & set(lists["first_person"]):
        return "not in the first person"
    if limits.require_concrete_data and not _CONCRETE.search(text):
        return "no concrete inline data (numbers, file names or quoted values)"
    if tup is None:
        return None
    style = tup.persona.communication_style.lower()
    formal = any(marker in style for marker in lists["formal_styles"])
    if formal and (slang := set(words) & set(lists["casual_markers"])):
        return f"casual words {sorted(slang)} from a persona whose style is {style}"
    coverage = task_coverage(text, tup)
    if coverage < limits.min_task_coverage:
        return f"covers {coverage:.0%} of the sampled tasks (< {limits.min_task_coverage:.0%})"
    if limits.require_references and (missing := missing_references(text, tup)):
        return f"does not name the tool/skill references {missing}"
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
        problem = validate_text(text, limits, tup)
        if problem is None:
            return text, usage, attempt
        problems.append(f"attempt {attempt}: {problem}")
    raise RenderError("; ".join(problems))
