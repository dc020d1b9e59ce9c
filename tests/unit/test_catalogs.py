"""The paper-scale catalogs: sizes, uniqueness, task/domain compatibility, complexity tiers, and the
persona builder (deterministic, and the committed personas.yaml is exactly its seed-0 output)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from services.intent import persona_builder as pb
from services.intent.catalog import CATALOG_DIR, OFFLINE_EXCLUDED_NEEDS, Catalog, load_catalog

DOMAIN_IDS = {
    "file-io",
    "code-runtime",
    "source-chain",
    "automation-flow",
    "web-extraction",
    "intelligence-core",
    "system-infrastructure",
    "multimedia",
    "agent-memory",
    "comms-social",
}
NEEDS = {"internet", "credentials", "device", "gui", "software"}
STARTER_TASK_IDS = {  # ids from the starter catalog; other code and stored intents may refer to them
    "t-organize-files",
    "t-convert-csv-json",
    "t-find-large-files",
    "t-write-script",
    "t-debug-script",
    "t-unit-tests",
    "t-git-init",
    "t-git-branch",
    "t-pin-deps",
    "t-cron-job",
    "t-pipeline",
    "t-parse-html",
    "t-fetch-api",
    "t-json-query",
    "t-summary-stats",
    "t-summarize-doc",
    "t-validate-schema",
    "t-disk-report",
    "t-log-analysis",
    "t-user-perms",
    "t-image-meta",
    "t-make-thumbnail",
    "t-camera-capture",
    "t-session-notes",
    "t-handoff",
    "t-recall-context",
    "t-draft-email",
    "t-status-report",
    "t-send-slack",
}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture(scope="module")
def seed0_text() -> str:
    return pb.build_text(seed=0, count=pb.DEFAULT_COUNT)


def test_paper_scale_counts(catalog: Catalog) -> None:
    personas = catalog.personas
    assert len(personas) >= 960
    assert len({p.industry for p in personas}) >= 45
    assert len({p.role for p in personas}) >= 500
    assert {p.experience_level for p in personas} == set(pb.LEVELS) and len(pb.LEVELS) == 6
    assert len({p.communication_style for p in personas}) >= 100
    assert {d.id for d in catalog.domains} == DOMAIN_IDS
    assert len(catalog.tasks) >= 130


def test_personas_are_complete(catalog: Catalog) -> None:
    for p in catalog.personas:
        assert p.id == f"p-{pb.slug(p.name)}"
        assert all((p.name, p.role, p.industry, p.experience_level, p.communication_style, p.work_context)), p.id
        assert len(p.expertise) == 3 and len({e.lower() for e in p.expertise}) == 3, p.id


def test_no_duplicate_personas(catalog: Catalog) -> None:
    personas = catalog.personas
    assert len({p.name for p in personas}) == len(personas)
    assert len({p.id for p in personas}) == len(personas)
    tuples = {(p.role, p.industry, p.work_context, p.communication_style) for p in personas}
    assert len(tuples) == len(personas)


def test_roles_sit_in_organisations_that_have_them(catalog: Catalog) -> None:
    industries = {i.name: i for i in pb.load_components().industries}
    for p in catalog.personas:
        industry = industries[p.industry]
        assert p.role in {title for title, _ in industry.roles}, p.id
        assert any(org in p.work_context for org in industry.orgs_for(p.role)), p.id


def test_tasks_name_one_to_three_known_domains(catalog: Catalog) -> None:
    assert len({t.name for t in catalog.tasks}) == len(catalog.tasks)
    for task in catalog.tasks:
        assert 1 <= len(task.domains) <= 3 and len(set(task.domains)) == len(task.domains), task.id
        assert set(task.domains) <= DOMAIN_IDS, task.id
        assert set(task.needs) <= NEEDS, task.id
    assert {t.id for t in catalog.tasks} >= STARTER_TASK_IDS


def test_every_domain_keeps_eight_usable_tasks(catalog: Catalog) -> None:
    assert OFFLINE_EXCLUDED_NEEDS == NEEDS  # every need the catalog uses is excluded by default
    for domain in catalog.domains:
        usable = catalog.usable_tasks(domain.id)
        assert len(usable) >= 8, domain.id
        assert not any(t.needs for t in usable)
    assert any(t.needs for t in catalog.tasks)


def test_domains_have_paragraph_descriptions(catalog: Catalog) -> None:
    for domain in catalog.domains:
        assert len(domain.description.split()) >= 40, domain.id


def test_complexity_tiers(catalog: Catalog) -> None:
    tiers = {t.name: t for t in catalog.tiers}
    assert {n: t.weight for n, t in tiers.items()} == {"complex": 50, "medium": 40, "simple": 10}
    for tier in tiers.values():
        assert 1 <= tier.domains[0] <= tier.domains[1] <= 3 and tier.tasks[0] <= tier.tasks[1] <= 6
        assert tier.tasks[0] >= tier.domains[1], "a task per drawn domain must fit the task bound"
        assert len(tier.meaning.split()) >= 20
    assert tiers["medium"].domains[0] >= 2 and tiers["complex"].domains[0] >= 2
    assert tiers["medium"].tasks[0] >= 3 and tiers["complex"].tasks[0] >= 3


def test_builder_is_deterministic(seed0_text: str) -> None:
    assert pb.build_text(seed=0, count=pb.DEFAULT_COUNT) == seed0_text
    assert pb.build_text(seed=1, count=pb.DEFAULT_COUNT) != seed0_text


def test_committed_personas_are_the_builder_output(seed0_text: str) -> None:
    committed = (CATALOG_DIR / "personas.yaml").read_text(encoding="utf-8")
    assert committed == seed0_text, "regenerate: python -m services.intent.persona_builder --seed 0 --count 965"
    assert len(committed.encode()) < 400_000
    assert len(yaml.safe_load(committed)) == pb.DEFAULT_COUNT


def test_builder_cli(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "services.intent.persona_builder", "--help"], capture_output=True, text=True, check=True
    )
    assert "--seed" in done.stdout and "--count" in done.stdout and "--out" in done.stdout
    out = tmp_path / "personas.yaml"
    assert pb.main(["--seed", "3", "--count", "40", "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == pb.build_text(seed=3, count=40)
    assert pb.main(["--seed", "3", "--count", "40", "--out", str(out), "--check"]) == 0
    assert pb.main(["--seed", "4", "--count", "40", "--out", str(out), "--check"]) == 1


def _tiny_components(directory: Path, family: str = "data") -> Path:
    files = {
        "families.yaml": {"data": {"levels": {"Junior": 1}, "skills": ["SQL", "Excel", "statistics"]}},
        "industries.yaml": {
            "Retail": {"companies": ["shop"], "expertise": ["pricing", "stock"], "roles": {family: ["Analyst"]}}
        },
        "names.yaml": {"x": {"given": ["Ana"], "family": ["Lima"]}},
        "places.yaml": {"Somewhere": [{"city": "Lima", "country": "Peru", "cultures": ["x"]}]},
        "styles.yaml": ["Direct"],
        "contexts.yaml": {"templates": ["{org} in {city}"], "sizes": ["small"]},
    }
    for name, data in files.items():
        (directory / name).write_text(yaml.safe_dump(data), encoding="utf-8")
    return directory


def test_builder_refuses_what_it_cannot_compose(tmp_path: Path) -> None:
    tiny = _tiny_components(tmp_path)
    assert len(pb.build_personas(pb.load_components(tiny), count=1)) == 1
    with pytest.raises(ValueError, match="distinct personas"):
        pb.build_personas(pb.load_components(tiny), count=2)  # one name only: a second persona is impossible
    with pytest.raises(ValueError, match="unknown families"):
        pb.load_components(_tiny_components(tmp_path, family="nonsense"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [("Ayşe Yılmaz", "ayse-yilmaz"), ("Callum O'Brien", "callum-o-brien"), ("Paweł Król", "pawel-krol")],
)
def test_slug(text: str, expected: str) -> None:
    assert pb.slug(text) == expected


def test_with_article() -> None:
    assert pb.with_article("freight forwarder") == "a freight forwarder"
    assert pb.with_article("oilfield services contractor") == "an oilfield services contractor"
    assert pb.with_article("university") == "a university"
    assert pb.with_article("LNG terminal operator") == "an LNG terminal operator"
    assert pb.with_article("HR software provider") == "an HR software provider"
    assert pb.with_article("SaaS startup") == "a SaaS startup"
