"""intents.jsonl in the reference layout: import, export, round trips and line-level errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from services.common.contracts.intent import DomainRef, Intent, Persona, TaskRef
from services.common.errors import ConfigError
from services.common.ids import derive_seed
from services.intent.catalog import load_catalog
from services.intent.jsonl_io import (
    IntentFileError,
    intent_from_reference,
    intent_to_reference,
    read_intents,
    write_intents,
)
from services.intent.sampler import sample_tuple

TOP_FIELDS = [
    "id",
    "natural_language_intent",
    "domains",
    "tasks",
    "persona_id",
    "tools_used",
    "skills_used",
    "complexity",
    "metadata",
]
PERSONA_FIELDS = ["name", "role", "industry", "expertise", "experience_level", "communication_style", "work_context"]


def _persona(name: str, role: str, industry: str, level: str, style: str, where: str) -> dict:
    return {
        "name": name,
        "role": role,
        "industry": industry,
        "expertise": ["A", "B", "C"],
        "experience_level": level,
        "communication_style": style,
        "work_context": where,
    }


def _domain(name: str, *tasks: str) -> dict:
    return {
        "name": name,
        "description": f"What {name} covers.",
        "selected_tasks": [{"name": t, "description": f"Do {t.lower()}."} for t in tasks],
    }


def _uuid(n: int) -> str:
    return f"{n:08x}-0000-4000-8000-{n:012x}"


def reference_records() -> list[dict]:
    """Four records shaped like the reference's sample intents (1-3 domains, 2-3 tasks, 0-1 tools)."""
    shapes = [
        (
            "intent_58f206b3",
            "medium",
            [("intelligence-core", "Simulate Models"), ("web-extraction", "Search Info"), ("source-chain", "Debug CI")],
            1,
            _persona("Amara Okafor", "Chief Medical Officer", "Healthcare", "Executive", "Formal", "Lagos"),
        ),
        (
            "intent_b7af9ad7",
            "medium",
            [("automation-flow", "Make PDFs"), ("multimedia", "Update Diagram", "Watch Camera")],
            1,
            _persona("Tarek Mahmoud", "E-commerce Manager", "Retail", "Mid-level", "Collaborative", "Cairo"),
        ),
        (
            "intent_020a7899",
            "simple",
            [("agent-memory", "Manage Graph", "Reflect", "Investigate Failures")],
            1,
            _persona("Kwasi Boateng", "Hospital Administrator", "Healthcare", "Executive", "Collaborative", "Accra"),
        ),
        (
            "intent_20d09b43",
            "simple",
            [("intelligence-core", "Track Assets", "Design Architecture")],
            0,
            _persona("Piotr Kowalski", "IT Security Consultant", "Technology", "Expert", "Direct", "Warsaw"),
        ),
    ]
    records, n = [], 0
    for intent_id, complexity, domains, tools, persona in shapes:
        n += 10
        meta_domains = [_domain(name, *tasks) for name, *tasks in domains]
        task_count = sum(len(d["selected_tasks"]) for d in meta_domains)
        records.append(
            {
                "id": intent_id,
                "natural_language_intent": f'I need help with {intent_id}: figures 312, 345 and 330, "quoted" — ünïcode.',
                "domains": [_uuid(n + i) for i in range(len(domains))],
                "tasks": [_uuid(n + 100 + i) for i in range(task_count)],
                "persona_id": _uuid(n + 200),
                "tools_used": [_uuid(n + 300)] * tools,
                "skills_used": [_uuid(n + 400), _uuid(n + 401)],
                "complexity": complexity,
                "metadata": {"persona": persona, "domains": meta_domains},
            }
        )
    return records


def write_lines(path: Path, lines: list[object]) -> Path:
    path.write_text(
        "".join((x if isinstance(x, str) else json.dumps(x, ensure_ascii=False)) + "\n" for x in lines),
        encoding="utf-8",
    )
    return path


def sampled_intents(count: int = 30) -> list[Intent]:
    catalog = load_catalog()
    intents = []
    for i in range(count):
        tup = sample_tuple(catalog, 1000 + i)
        intents.append(
            Intent(
                intent_id=f"intent_{i:06x}",
                text=f'I need task {i} done — with ünïcode and "quotes".',
                persona=tup.persona,
                domains=list(tup.domains),
                tasks=list(tup.tasks),
                complexity=tup.complexity,
                seed=tup.seed,
                render_model="m-1",  # type: ignore[arg-type]
                tools_used=["exec"] * (i % 2),
                skills_used=["s1", "s2"],
            )
        )
    return intents


def test_reference_file_imports_with_the_reference_ids(tmp_path: Path) -> None:
    records = reference_records()
    intents, errors = read_intents(write_lines(tmp_path / "ref.jsonl", records))
    assert errors == []
    assert [i.intent_id for i in intents] == [r["id"] for r in records]
    for intent, record in zip(intents, records, strict=True):
        assert intent.text == record["natural_language_intent"]
        assert intent.source == "imported" and intent.seed == derive_seed(record["id"])
        assert intent.complexity == record["complexity"]
        assert intent.persona.id == record["persona_id"]
        assert intent.persona.model_dump(exclude={"id"}) == record["metadata"]["persona"]
        assert [d.id for d in intent.domains] == record["domains"]
        assert [d.name for d in intent.domains] == [d["name"] for d in record["metadata"]["domains"]]
        assert [t.id for t in intent.tasks] == record["tasks"]
        assert intent.tools_used == record["tools_used"] and intent.skills_used == record["skills_used"]
    multimedia = intents[1]  # its second domain holds two tasks: both belong to that domain
    assert [t.domain for t in multimedia.tasks] == [multimedia.domains[0].id] + [multimedia.domains[1].id] * 2
    assert [len(i.domains) for i in intents] == [3, 2, 1, 1] and [len(i.tasks) for i in intents] == [3, 3, 3, 2]


def test_reference_file_round_trips_unchanged(tmp_path: Path) -> None:
    records = reference_records()
    intents, _ = read_intents(write_lines(tmp_path / "ref.jsonl", records))
    assert write_intents(tmp_path / "out.jsonl", intents) == 4
    lines = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == records
    assert "ünïcode" in lines[0]  # UTF-8, not \\u escapes


def test_our_intents_round_trip_and_read_as_the_reference_layout(tmp_path: Path) -> None:
    intents = sampled_intents()
    write_intents(tmp_path / "ours.jsonl", intents)
    back, errors = read_intents(tmp_path / "ours.jsonl")
    assert errors == []
    assert back == [i.model_copy(update={"source": "imported"}) for i in intents]
    for intent, line in zip(intents, (tmp_path / "ours.jsonl").read_text(encoding="utf-8").splitlines(), strict=True):
        record = json.loads(line)
        assert list(record)[: len(TOP_FIELDS)] == TOP_FIELDS and record["id"] == intent.intent_id
        assert list(record["metadata"]["persona"]) == PERSONA_FIELDS
        flat = [t for d in record["metadata"]["domains"] for t in d["selected_tasks"]]
        assert len(flat) == len(record["tasks"]) and set(flat[0]) == {"name", "description"}
        names = {t.id: t.name for t in intent.tasks}
        assert [names[t] for t in record["tasks"]] == [t["name"] for t in flat]  # i-th id names i-th task
    assert any("task_order" in json.loads(line).get("ise", {}) for line in (tmp_path / "ours.jsonl").open())


def test_mismatched_id_lists_get_stable_content_ids() -> None:
    record = reference_records()[1]
    record["domains"] = record["domains"][:1]
    record["tasks"] = []
    a = intent_from_reference(record, line=1)
    b = intent_from_reference(copy.deepcopy(record), line=9)
    assert a == b and all(d.id.startswith("domain-") for d in a.domains)
    assert all(t.id.startswith("task-") for t in a.tasks) and a.tasks[2].domain == a.domains[1].id
    assert len({t.id for t in a.tasks}) == 3


def test_minimal_and_lenient_records() -> None:
    minimal = intent_from_reference({"natural_language_intent": "Please tidy my notes."}, line=1)
    assert minimal.complexity == "medium" and minimal.intent_id.startswith("intent_")
    assert minimal.domains == [] and minimal.tasks == [] and minimal.persona.id.startswith("persona-")
    assert (
        intent_from_reference({"natural_language_intent": "x", "complexity": " Complex "}, line=1).complexity
        == "complex"
    )
    ids_only = intent_from_reference({"natural_language_intent": "x", "intent_id": "i9", "domains": ["d1"]}, line=1)
    assert ids_only.intent_id == "i9" and ids_only.domains == [DomainRef(id="d1", name="d1")]


def test_bad_lines_are_reported_and_good_lines_kept(tmp_path: Path) -> None:
    good = reference_records()
    wrong_domains = {**good[2], "id": "intent_w1", "domains": "528096a3"}
    wrong_expertise = copy.deepcopy({**good[3], "id": "intent_w2"})
    wrong_expertise["metadata"]["persona"]["expertise"] = "Network Defense"
    no_text = {k: v for k, v in good[1].items() if k != "natural_language_intent"}
    path = write_lines(
        tmp_path / "mixed.jsonl",
        [
            good[0],  # 1
            '{"id": "intent_x", "natural_language_intent": ',  # 2 bad JSON
            no_text,  # 3
            {**good[2], "id": "intent_c", "complexity": "extreme"},  # 4
            "",  # 5 blank: skipped
            wrong_domains,  # 6
            wrong_expertise,  # 7
            good[1],  # 8
            {**good[2], "natural_language_intent": "another text"},  # 9
            {**good[3], "id": good[0]["id"]},  # 10 duplicate id
            [1, 2],  # 11 not an object
            {**good[3], "id": "intent_t", "tools_used": [3]},  # 12
        ],
    )
    intents, errors = read_intents(path)
    assert [i.intent_id for i in intents] == [good[0]["id"], good[1]["id"], good[2]["id"]]
    found = {e.line: e for e in errors}
    assert sorted(found) == [2, 3, 4, 6, 7, 10, 11, 12]
    assert "not valid JSON" in str(found[2])
    assert found[3].field == "natural_language_intent"
    assert found[4].field == "complexity" and "simple, medium, complex" in found[4].problem
    assert found[6].field == "domains" and "expected a list" in found[6].problem
    assert found[7].field == "metadata.persona.expertise"
    assert found[10].field == "id" and "line 1" in found[10].problem
    assert "expected a JSON object" in found[11].problem
    assert found[12].field == "tools_used[0]"
    for error in errors:
        assert isinstance(error, ConfigError) and error.path == str(path)
        assert str(error).startswith(f"{path}:{error.line}: ")


def test_invalid_utf8_line_is_one_error(tmp_path: Path) -> None:
    path = tmp_path / "bytes.jsonl"
    path.write_bytes(
        b"\xef\xbb\xbf" + json.dumps(reference_records()[0]).encode() + b'\n{"natural_language_intent": "\xff"}\n'
    )
    intents, errors = read_intents(path)
    assert len(intents) == 1 and [e.line for e in errors] == [2] and "UTF-8" in str(errors[0])


def test_missing_file_is_a_file_error(tmp_path: Path) -> None:
    with pytest.raises(IntentFileError) as info:
        read_intents(tmp_path / "absent.jsonl")
    assert info.value.line is None and "absent.jsonl" in str(info.value)


def test_write_is_atomic_and_refuses_unplaceable_tasks(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "intents.jsonl"
    intents = sampled_intents(3)
    write_intents(target, intents)
    before = target.read_bytes()
    orphan = intents[0].model_copy(update={"tasks": [TaskRef(id="t", name="T", domain="elsewhere")]})
    with pytest.raises(ConfigError, match="not among its domains"):
        write_intents(target, [intents[1], orphan])
    assert target.read_bytes() == before
    assert [p.name for p in target.parent.iterdir()] == ["intents.jsonl"]


def test_export_keeps_only_what_the_layout_cannot_hold_in_the_extension() -> None:
    persona = Persona(id="p", name="N", role="R", industry="I")
    domains = [DomainRef(id="a", name="A"), DomainRef(id="b", name="B")]
    tasks = [TaskRef(id="t1", name="T1", domain="b"), TaskRef(id="t2", name="T2", domain="a")]
    intent = Intent(
        intent_id="i1",
        text="x",
        persona=persona,
        domains=domains,
        tasks=tasks,
        complexity="simple",
        seed=derive_seed("i1"),
    )
    record = intent_to_reference(intent)
    assert record["tasks"] == ["t2", "t1"] and record["ise"] == {"task_order": [1, 0]}
    assert intent_from_reference(record, line=1).tasks == tasks
    assert "ise" not in intent_to_reference(intent.model_copy(update={"tasks": [tasks[1], tasks[0]]}))
    assert intent_to_reference(intent.model_copy(update={"seed": 7, "render_model": "m"}))["ise"] == {
        "seed": 7,
        "render_model": "m",
        "task_order": [1, 0],
    }
