"""A turn's web recording travels in a Kafka event: over the budget, the largest bodies go first."""

from __future__ import annotations

import json

from services.executor.web_recording import within_budget


def _exchange(url: str, body_chars: int) -> dict:
    return {"method": "GET", "url": url, "status": 200, "response_body": "A" * body_chars, "response_body_sha256": url}


def test_the_largest_bodies_are_dropped_until_the_turn_fits() -> None:
    exchanges = [
        _exchange("http://a/small", 1_000),
        _exchange("http://a/huge", 50_000),
        _exchange("http://a/mid", 9_000),
    ]
    kept = within_budget([dict(x) for x in exchanges], budget=15_000)
    assert sum(len(json.dumps(x)) for x in kept) <= 15_000
    by_url = {x["url"]: x for x in kept}
    assert by_url["http://a/huge"]["body_dropped"] and by_url["http://a/huge"]["response_body"] == ""
    assert by_url["http://a/huge"]["response_body_truncated"], "the proxy refuses to replay it, never replays it empty"
    assert by_url["http://a/small"]["response_body"] == "A" * 1_000 and "body_dropped" not in by_url["http://a/mid"]
    assert [x["url"] for x in kept] == [x["url"] for x in exchanges], "order and hashes are kept"


def test_a_turn_within_the_budget_is_untouched() -> None:
    exchanges = [_exchange("http://a/one", 100)]
    assert within_budget([dict(x) for x in exchanges], budget=10_000) == exchanges
