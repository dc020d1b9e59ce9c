"""Agent skills: the starter set matches the catalog, the loader rejects bad SKILL.md files, and
the workspace archive and the skill records have the right shape."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
import yaml

from services.common.errors import ConfigError
from services.executor.errors import ExecutorError, SkillError
from services.executor.skills import (
    MAX_SKILL_BYTES,
    Skill,
    load_skills,
    skill_entries,
    skills_archive,
    starter_skills_dir,
)

pytestmark = pytest.mark.unit

CATALOG = Path(__file__).resolve().parents[2] / "services/intent/catalogs/skills.yaml"


def write_skill(root: Path, folder: str, text: str) -> Path:
    path = root / folder / "SKILL.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def skill_md(name: str, description: str = "Use when testing.", body: str = "# Body\n\nDo it.\n") -> str:
    return f"---\nname: {name}\ndescription: {description}\n---\n{body}"


# --- the starter set ---------------------------------------------------------------------------


def test_every_starter_skill_loads_and_matches_its_folder_and_the_catalog() -> None:
    catalog = {entry["name"] for entry in yaml.safe_load(CATALOG.read_text(encoding="utf-8"))}
    skills = load_skills(starter_skills_dir())
    names = [s.name for s in skills]
    assert names == sorted(names)
    assert len(names) == len(set(names))
    for skill in skills:
        assert skill.path == f"{skill.name}/SKILL.md"
        assert skill.name in catalog, f"{skill.name} is not in the catalog"
        assert skill.description.startswith("Use when"), skill.name
        body_lines = skill.body.strip().splitlines()
        assert 15 <= len(body_lines) <= 50, f"{skill.name}: {len(body_lines)} body lines"
    assert set(names) == catalog, f"catalog skills without a starter skill: {sorted(catalog - set(names))}"


def test_starter_skill_files_reference_only_scripts_that_exist() -> None:
    root = starter_skills_dir()
    for skill in load_skills(root):
        folder = root / skill.name
        for line in skill.body.splitlines():
            if f"/workspace/skills/{skill.name}/" in line:
                rel = line.split(f"/workspace/skills/{skill.name}/", 1)[1].split()[0].strip("`\"'")
                assert (folder / rel).is_file(), f"{skill.name}: {rel} is referenced but missing"


# --- the loader ------------------------------------------------------------------------------------


def test_load_skills_sorts_and_skips_folders_without_skill_md(tmp_path: Path) -> None:
    write_skill(tmp_path, "zeta", skill_md("zeta"))
    write_skill(tmp_path, "alpha", skill_md("alpha", description="Use when\n  folded text."))
    (tmp_path / "empty-folder").mkdir()
    (tmp_path / "README.md").write_text("not a skill", encoding="utf-8")
    skills = load_skills(tmp_path)
    assert [s.name for s in skills] == ["alpha", "zeta"]
    assert skills[0] == Skill(
        name="alpha", description="Use when folded text.", path="alpha/SKILL.md", body="# Body\n\nDo it.\n"
    )


def test_extra_front_matter_keys_are_allowed(tmp_path: Path) -> None:
    write_skill(tmp_path, "tool", "---\nname: tool\ndescription: Use when.\nlicense: MIT\nmetadata: {a: 1}\n---\nx\n")
    assert load_skills(tmp_path)[0].name == "tool"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("# Just markdown\n", "no front matter"),
        ("---\nname: x\ndescription: y\n", "not closed"),
        ("---\nname: [unclosed\n---\nbody\n", "not valid YAML"),
        ("---\n- a list\n---\nbody\n", "mapping"),
        ("---\ndescription: Use when.\n---\nbody\n", "no 'name'"),
        ("---\nname: Bad_Name\ndescription: Use when.\n---\nbody\n", "invalid"),
        ("---\nname: -leading\ndescription: Use when.\n---\nbody\n", "invalid"),
        (f"---\nname: {'a' * 65}\ndescription: Use when.\n---\nbody\n", "invalid"),
        ("---\nname: ok\n---\nbody\n", "no 'description'"),
        ("---\nname: ok\ndescription: '   '\n---\nbody\n", "no 'description'"),
        ("---\nname: ok\ndescription: 12\n---\nbody\n", "no 'description'"),
    ],
)
def test_bad_skill_md_raises_skill_error_naming_the_file(tmp_path: Path, text: str, problem: str) -> None:
    path = write_skill(tmp_path, "broken", text)
    with pytest.raises(SkillError) as info:
        load_skills(tmp_path)
    assert str(path) in str(info.value)
    assert info.value.path == str(path)
    assert problem in str(info.value)


def test_skill_error_is_an_executor_and_config_error() -> None:
    assert issubclass(SkillError, ExecutorError)
    assert issubclass(SkillError, ConfigError)


def test_duplicate_names_raise(tmp_path: Path) -> None:
    first = write_skill(tmp_path, "a-one", skill_md("same"))
    second = write_skill(tmp_path, "b-two", skill_md("same"))
    with pytest.raises(SkillError, match="duplicate skill name 'same'") as info:
        load_skills(tmp_path)
    assert str(second) in str(info.value) and str(first) in str(info.value)


def test_too_large_file_raises(tmp_path: Path) -> None:
    path = write_skill(tmp_path, "big", skill_md("big", body="x" * MAX_SKILL_BYTES))
    with pytest.raises(SkillError, match="limit") as info:
        load_skills(tmp_path)
    assert str(path) in str(info.value)
    write_skill(tmp_path, "big", skill_md("big", body="x" * (MAX_SKILL_BYTES - 200)))
    assert load_skills(tmp_path)[0].name == "big"


def test_non_utf8_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "latin" / "SKILL.md"
    path.parent.mkdir()
    path.write_bytes(b"---\nname: latin\ndescription: caf\xe9\n---\nbody\n")
    with pytest.raises(SkillError, match="UTF-8"):
        load_skills(tmp_path)


# --- archive and records -----------------------------------------------------------------------------


def test_archive_round_trips_with_paths_and_modes(tmp_path: Path) -> None:
    write_skill(tmp_path, "beta", skill_md("beta"))
    write_skill(tmp_path, "alpha", skill_md("alpha"))
    scripts = tmp_path / "alpha" / "scripts"
    scripts.mkdir()
    (scripts / "run.py").write_text("print('hi')\n", encoding="utf-8")
    (scripts / "run.py").chmod(0o700)
    (scripts / "__pycache__").mkdir()
    (scripts / "__pycache__" / "run.cpython-311.pyc").write_bytes(b"\0")
    skills = load_skills(tmp_path)

    data = skills_archive(skills, tmp_path)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert sorted(members) == [
            "workspace/skills",
            "workspace/skills/alpha",
            "workspace/skills/alpha/SKILL.md",
            "workspace/skills/alpha/scripts",
            "workspace/skills/alpha/scripts/run.py",
            "workspace/skills/beta",
            "workspace/skills/beta/SKILL.md",
        ]
        for member in members.values():
            assert member.mode == (0o755 if member.isdir() else 0o644), member.name
            assert member.isdir() or member.isfile()
            assert (member.uid, member.gid, member.mtime) == (0, 0, members["workspace/skills"].mtime)
        extracted = tar.extractfile("workspace/skills/alpha/scripts/run.py")
        assert extracted is not None and extracted.read() == b"print('hi')\n"
        md = tar.extractfile("workspace/skills/beta/SKILL.md")
        assert md is not None and md.read() == (tmp_path / "beta" / "SKILL.md").read_bytes()
    assert skills_archive(skills, tmp_path) == data  # deterministic


def test_archive_uses_the_skill_name_and_a_custom_dest(tmp_path: Path) -> None:
    write_skill(tmp_path, "Folder Name", skill_md("real-name"))
    data = skills_archive(load_skills(tmp_path), tmp_path, dest="/opt/agent/skills/")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert "opt/agent/skills/real-name/SKILL.md" in tar.getnames()
    with pytest.raises(ValueError):
        skills_archive([], tmp_path, dest="relative/path")
    with pytest.raises(ValueError):
        skills_archive([], tmp_path, dest="/")


def test_archive_rejects_symlinks(tmp_path: Path) -> None:
    write_skill(tmp_path, "linked", skill_md("linked"))
    (tmp_path / "linked" / "secret").symlink_to("/etc/hostname")
    with pytest.raises(SkillError, match="link"):
        skills_archive(load_skills(tmp_path), tmp_path)


def test_starter_archive_contains_every_skill() -> None:
    skills = load_skills(starter_skills_dir())
    with tarfile.open(fileobj=io.BytesIO(skills_archive(skills, starter_skills_dir()))) as tar:
        names = set(tar.getnames())
    assert all(f"workspace/skills/{s.name}/SKILL.md" in names for s in skills)


def test_skill_entries_shape(tmp_path: Path) -> None:
    write_skill(tmp_path, "csv-cleaning", skill_md("csv-cleaning", description="Use when cleaning CSV."))
    skills = load_skills(tmp_path)
    assert skill_entries(skills) == [
        {
            "name": "csv-cleaning",
            "description": "Use when cleaning CSV.",
            "filePath": "/workspace/skills/csv-cleaning/SKILL.md",
        }
    ]
    assert skill_entries(skills, dest="/srv/skills/")[0]["filePath"] == "/srv/skills/csv-cleaning/SKILL.md"
