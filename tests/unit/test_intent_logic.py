"""Catalog integrity, seeded sampling, and the renderer's validation of LLM output."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest

from services.common.errors import ConfigError
from services.common.ids import derive_seed
from services.intent.catalog import Catalog, check_catalog, load_catalog
from services.intent.renderer import RenderLimits, extract_intent, validate_text
from services.intent.sampler import sample_tuple


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def test_catalog_has_ten_domains_and_valid_tasks(catalog: Catalog) -> None:
    assert len(catalog.domains) == 10
    assert {t.name for t in catalog.tiers} == {"simple", "medium", "complex"}
    assert all(catalog.usable_tasks(d.id) for d in catalog.domains)


def test_excluded_needs_are_never_sampled(catalog: Catalog) -> None:
    needy = {t.id for t in catalog.tasks if t.needs}
    assert needy, "the starter catalog marks tasks that need the internet or a device"
    for seed in range(300):
        assert not {t.id for t in sample_tuple(catalog, seed).tasks} & needy


def test_sampling_respects_tiers_and_compatibility(catalog: Catalog) -> None:
    tiers = {t.name: t for t in catalog.tiers}
    tasks = {t.id: t for t in catalog.tasks}
    for seed in range(300):
        tup = sample_tuple(catalog, seed)
        tier = tiers[tup.complexity]
        assert tier.domains[0] <= len(tup.domains) <= tier.domains[1]
        assert len(tup.tasks) <= tier.tasks[1]
        domain_ids = {d.id for d in tup.domains}
        assert {t.domain for t in tup.tasks} == domain_ids  # every domain has a task, no stray one
        assert all(t.domain in tasks[t.id].domains for t in tup.tasks)


def test_same_seed_same_tuple_in_another_process(catalog: Catalog) -> None:
    code = "from services.intent.catalog import load_catalog; from services.intent.sampler import sample_tuple; print(sample_tuple(load_catalog(), 42))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other == str(sample_tuple(catalog, 42))
    assert sample_tuple(catalog, 42) != sample_tuple(catalog, 43)


def test_catalog_check_names_the_problem(catalog: Catalog) -> None:
    broken = Catalog(catalog.personas + catalog.personas[:1], catalog.domains, catalog.tasks, catalog.tiers)
    with pytest.raises(ConfigError, match="duplicate persona ids"):
        check_catalog(broken)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("I need you to sort my 40 quarterly invoices by vendor and total them for the audit.", None),
        ("Sort invoices.", "too short"),
        ("Sort the quarterly invoices by vendor and total them for the audit next week please.", "first person"),
    ],
)
def test_validate_text(text: str, problem: str | None) -> None:
    found = validate_text(text, RenderLimits(min_words=12))
    assert (found is None) if problem is None else (problem in found)


def test_extract_intent_tolerates_fences() -> None:
    assert extract_intent('```json\n{"intent": " I want X "}\n```') == "I want X"
    assert extract_intent("  I want plain prose  ") == "I want plain prose"
    with pytest.raises(ValueError):
        extract_intent('{"intent": 3}')


def test_complexity_prior_chi_square(catalog: Catalog) -> None:
    """10k seeded draws follow the 50/40/10 prior (chi-square, 2 dof, p > 0.001 -> stat < 13.82)."""
    draws = 10_000
    counts = {t.name: 0 for t in catalog.tiers}
    for seed in range(draws):
        counts[sample_tuple(catalog, derive_seed(0, seed)).complexity] += 1
    total_weight = sum(t.weight for t in catalog.tiers)
    expected = {t.name: draws * t.weight / total_weight for t in catalog.tiers}
    assert expected == {"simple": 1000, "medium": 4000, "complex": 5000}
    chi2 = sum((counts[k] - expected[k]) ** 2 / expected[k] for k in counts)
    assert chi2 < 13.82, (counts, chi2)


def test_validation_checks_coverage_data_and_register(catalog: Catalog) -> None:
    tup = sample_tuple(catalog, 5)
    named = ", ".join(t.name.lower() for t in tup.tasks)
    refs = " and ".join(r.name for r in (*tup.tools, *tup.skills))
    good = f"I need your help this week: {named}. Use the numbers in budget.csv, 1200 rows, threshold 15%. Use {refs}."
    limits = RenderLimits(min_words=12)
    assert validate_text(good, limits, tup) is None
    assert tup.tools or tup.skills  # every tier draws at least one reference
    assert "does not name the tool/skill references" in validate_text(good.replace(refs, "the usual"), limits, tup)
    vague = "I need your help this week with a few things around the office, please sort it out soon, 3 items."
    assert "covers" in validate_text(vague, limits, tup)
    no_data = f"I need your help this week: {named}. Please do it carefully and tell me when it is ready."
    assert "concrete" in validate_text(no_data, limits, tup)
    formal = replace(tup, persona=tup.persona.model_copy(update={"communication_style": "Formal"}))
    assert "casual" in validate_text("hey " + good + " lol", limits, formal)


def test_excluded_needs_come_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.intent.catalog import CATALOG_DIR
    from services.intent.settings import IntentSettings

    monkeypatch.setenv("ISE_INTENT_EXCLUDE_NEEDS", "[]")
    settings = IntentSettings()
    assert settings.exclude_needs == []
    everything = load_catalog(CATALOG_DIR, excluded_needs=frozenset(settings.exclude_needs))
    offline = load_catalog()
    some_domain = next(
        d.id for d in offline.domains if len(everything.usable_tasks(d.id)) > len(offline.usable_tasks(d.id))
    )
    assert any(t.needs for t in everything.usable_tasks(some_domain))


def test_references_are_drawn_per_tier_and_average_like_the_paper(catalog: Catalog) -> None:
    """Domains x tasks x (tools + skills) over 3,000 tuples near the reference's 2.35 x 4.40 x 3.18,
    each tier within its bounds, references at home in the intent's domains, never a web one offline."""
    tuples = [sample_tuple(catalog, derive_seed(0, seed)) for seed in range(3000)]
    tiers = {t.name: t for t in catalog.tiers}
    for tup in tuples:
        tier = tiers[tup.complexity]
        assert tier.tools[0] <= len(tup.tools) <= tier.tools[1] and tier.skills[0] <= len(tup.skills) <= tier.skills[1]
        domains = {d.id for d in tup.domains}
        assert all(set(r.domains) & domains and not r.needs for r in (*tup.tools, *tup.skills))
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    assert abs(mean([len(t.domains) for t in tuples]) - 2.35) < 0.15
    assert abs(mean([len(t.tasks) for t in tuples]) - 4.40) < 0.2
    assert abs(mean([len(t.tools) + len(t.skills) for t in tuples]) - 3.18) < 0.25
    online = load_catalog(excluded_needs=frozenset())
    drawn = {r.id for seed in range(3000) for r in sample_tuple(online, seed).tools}
    assert "tool-web-search" in drawn  # allowed when the workspace has the web
    assert sample_tuple(catalog, 11) == sample_tuple(catalog, 11)  # seeded
