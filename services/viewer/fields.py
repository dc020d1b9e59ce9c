"""Loose reading of record fields: records are untrusted JSON of several shapes (ours, the
reference's middle format, a trainer's plain OpenAI messages), so every field is checked for its
type before use and a missing or odd one reads as empty."""

from __future__ import annotations

import json
from typing import Any


def text(value: Any) -> str:
    """``value`` if it is a string, else ``""``."""
    return value if isinstance(value, str) else ""


def mapping(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else ``{}``."""
    return value if isinstance(value, dict) else {}


def items(value: Any) -> list[Any]:
    """``value`` if it is a JSON array, else ``[]``."""
    return value if isinstance(value, list) else []


def message_text(content: Any) -> str:
    """A message's content as text: a string as is, OpenAI content parts joined, anything else as JSON."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        return "\n".join(text(p.get("text")) or json.dumps(p, ensure_ascii=False) for p in content)
    return json.dumps(content, ensure_ascii=False, indent=2)


def label(ref: Any) -> str:
    """A catalog reference (``{"id", "name"}``) or a plain string, as one label: the name, else the id."""
    if isinstance(ref, str):
        return ref
    ref = mapping(ref)
    return text(ref.get("name")) or text(ref.get("id"))


def labels(refs: Any) -> tuple[str, ...]:
    """The labels of a list of references, empty ones left out."""
    return tuple(x for x in (label(r) for r in items(refs)) if x)


def intent_text(record: dict[str, Any]) -> str:
    """The intent's rendered request: ours in ``metadata.intent.text``, the reference's in ``intent``."""
    ours = text(mapping(mapping(record.get("metadata")).get("intent")).get("text"))
    return ours or text(record.get("intent"))


def first_user_message(record: dict[str, Any]) -> str:
    """The text of the first user message, or ``""``."""
    for message in items(record.get("messages")):
        if mapping(message).get("role") == "user":
            return message_text(message.get("content"))
    return ""


def domains_and_tasks(record: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The intent's domains and tasks: ours in ``metadata.intent``; the reference's
    ``metadata.domains`` each with its ``selected_tasks``."""
    meta = mapping(record.get("metadata"))
    ours = mapping(meta.get("intent"))
    if ours.get("domains") or ours.get("tasks"):
        return labels(ours.get("domains")), labels(ours.get("tasks"))
    domains = items(meta.get("domains"))
    tasks = tuple(t for d in domains for t in labels(mapping(d).get("selected_tasks")))
    return labels(domains), tasks


def complexity(record: dict[str, Any]) -> str:
    """The intent's complexity (ours in ``metadata.intent``; else a top-level or metadata field)."""
    meta = mapping(record.get("metadata"))
    return (
        text(mapping(meta.get("intent")).get("complexity"))
        or text(record.get("complexity"))
        or text(meta.get("complexity"))
    )


def record_id(record: dict[str, Any]) -> str:
    """The episode id (ours), the session id (the reference's) or an ``id`` field; ``""`` if none."""
    meta = mapping(record.get("metadata"))
    return text(meta.get("episode_id")) or text(record.get("session_id")) or text(record.get("id"))
