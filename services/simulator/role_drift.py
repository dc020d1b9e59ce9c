"""Role-drift detection: does a simulated user message read like the assistant wrote it?

Regex patterns (data file ``prompts/role_drift.yaml``) catch offers of help, reports of work
done "by me", answers to its own request and assistant boilerplate. Cheap, explainable, and
measured on a labelled sample in the tests; an LLM judge can replace it behind the same function.
"""

from __future__ import annotations

import re
from functools import cache

from services.common.resources import load_yaml


@cache
def _patterns(kind: str) -> tuple[re.Pattern[str], ...]:
    spec = load_yaml("services.simulator", "prompts/role_drift.yaml")
    return tuple(re.compile(p, re.IGNORECASE | re.MULTILINE) for p in spec[kind])


def drift_reason(message: str) -> str | None:
    """The first assistant-style pattern ``message`` matches, or None when it reads as a user."""
    for pattern in _patterns("assistant_patterns"):
        if match := pattern.search(message):
            return f"assistant-style phrase {match.group(0).strip()!r}"
    return None


_WORD = re.compile(r"[a-z0-9][a-z0-9_.-]{3,}")


def opening_reason(message: str, intent: str) -> str | None:
    """Why an opening written by the user model does not delegate ``intent`` (None when it does):
    it is not a request (a JSON fragment, a bare decision field), or it shares no content word
    with the intent."""
    for pattern in _patterns("opening_non_request_patterns"):
        if pattern.search(message):
            return f"the opening is not a request ({message.strip()[:60]!r})"
    wanted = set(_WORD.findall(intent.lower()))
    if wanted and not wanted & set(_WORD.findall(message.lower())):
        return "the opening names nothing of the intent"
    return drift_reason(message)


def asks_for_verification(message: str) -> bool:
    return any(p.search(message) for p in _patterns("verification_patterns"))
