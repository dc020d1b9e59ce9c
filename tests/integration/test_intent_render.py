"""Stage 1 as the paper renders it, through the scripted LLM over HTTP: every tier a multi-part,
first-person request of about 80-200 words with concrete data that names each sampled tool and
skill reference; the validation rejects a render that leaves one out."""

from __future__ import annotations

from collections import defaultdict

from services.common.llm.client import LLMClient
from services.common.settings import LLMSettings
from services.intent.catalog import load_catalog
from services.intent.renderer import RenderLimits, missing_references, render, validate_text
from services.intent.sampler import sample_tuple


async def test_every_tier_renders_80_to_200_words_naming_its_references(scripted_llm) -> None:
    llm = LLMClient(LLMSettings(base_url=scripted_llm.base_url, model="default:intent", max_retries=0), "intent")
    catalog = load_catalog()
    limits = RenderLimits(attempts=1)
    lengths: dict[str, list[int]] = defaultdict(list)
    for seed in range(90):
        tup = sample_tuple(catalog, seed)
        text, _, attempts = await render(llm, tup, limits)
        assert attempts == 1 and missing_references(text, tup) == []
        assert validate_text(text, limits, tup) is None
        lengths[tup.complexity].append(len(text.split()))
        if tup.tools and tup.skills:
            without = text.replace(tup.skills[0].name, "a playbook")
            assert "does not name the tool/skill references" in (validate_text(without, limits, tup) or "")
    assert set(lengths) == {"simple", "medium", "complex"}
    for tier, words in lengths.items():
        assert min(words) >= 80 and max(words) <= 200, (tier, min(words), max(words))
