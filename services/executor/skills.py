"""Agent skills: loading ``<root>/<name>/SKILL.md`` folders, and shipping them into a workspace.

A skill is a folder whose ``SKILL.md`` opens with YAML front matter (``name``, ``description``,
other keys allowed and ignored) followed by Markdown instructions. The runtime lists each skill's
name, description and in-workspace path to the agent (``skill_entries``); the agent reads the file
with its ``read`` tool when a task fits. ``skills_archive`` packs the folders as a tar for Docker's
``put_archive``: entry paths are ``dest`` without its leading slash, so extract it at ``/``.
The starter set shipped with the package (``starter_skills_dir``) has one skill per entry of
``services/intent/catalogs/skills.yaml``.
"""

from __future__ import annotations

import io
import os
import posixpath
import re
import stat
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from services.executor.errors import SkillError

SKILL_FILE = "SKILL.md"
DEFAULT_DEST = "/workspace/skills"
MAX_SKILL_BYTES = 64 * 1024
MAX_DESCRIPTION_CHARS = 1024
NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
# Fixed mtime of every archive entry (2024-01-01T00:00:00Z): the same skills give the same bytes.
ARCHIVE_MTIME = 1_704_067_200
DIR_MODE = 0o755
FILE_MODE = 0o644


@dataclass(frozen=True)
class Skill:
    """One loaded skill; ``path`` is ``<folder>/SKILL.md`` relative to the root it was loaded from."""

    name: str
    description: str
    path: str
    body: str


def starter_skills_dir() -> Path:
    """The starter skills shipped with the package (``services/executor/skills/``)."""
    return Path(__file__).resolve().parent / "skills"


def _split_front_matter(text: str, where: str) -> tuple[str, str]:
    """The YAML between the opening and closing ``---`` lines, and the Markdown after them."""
    lines = text.removeprefix("\ufeff").splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        raise SkillError(where, "no front matter: the file must start with a '---' line, then YAML, then '---'")
    for i in range(1, len(lines)):
        if lines[i].strip() == "---":
            return "".join(lines[1:i]), "".join(lines[i + 1 :]).lstrip("\r\n")
    raise SkillError(where, "front matter is not closed: add a '---' line after the YAML")


def _parse_meta(yaml_text: str, where: str) -> dict[str, Any]:
    try:
        meta = yaml.safe_load(yaml_text)
    except yaml.YAMLError as exc:
        raise SkillError(where, f"front matter is not valid YAML ({exc}); quote values that contain ': '") from exc
    if not isinstance(meta, dict):
        raise SkillError(where, "front matter must be a YAML mapping with 'name' and 'description'")
    return meta


def _check_name(meta: dict[str, Any], where: str) -> str:
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise SkillError(where, "front matter has no 'name': add 'name: <folder-name>'")
    if not NAME_RE.fullmatch(name):
        raise SkillError(
            where,
            f"name {name!r} is invalid: use 1-64 characters of lowercase letters, digits and '-', "
            "starting with a letter or digit",
        )
    return name


def _check_description(meta: dict[str, Any], where: str) -> str:
    description = meta.get("description")
    if not isinstance(description, str) or not description.strip():
        raise SkillError(where, "front matter has no 'description': add one sentence saying when to use the skill")
    description = " ".join(description.split())
    if len(description) > MAX_DESCRIPTION_CHARS:
        raise SkillError(where, f"description is {len(description)} characters; keep it under {MAX_DESCRIPTION_CHARS}")
    return description


def load_skill(root: Path, folder: str) -> Skill:
    """The skill in ``root/folder/SKILL.md``; raises ``SkillError`` if the file is unusable."""
    file = root / folder / SKILL_FILE
    where = str(file)
    size = file.stat().st_size
    if size > MAX_SKILL_BYTES:
        raise SkillError(
            where, f"file is {size} bytes, over the {MAX_SKILL_BYTES}-byte limit: move detail to other files"
        )
    try:
        text = file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SkillError(where, f"file is not UTF-8 ({exc}): re-save it as UTF-8") from exc
    yaml_text, body = _split_front_matter(text, where)
    meta = _parse_meta(yaml_text, where)
    name = _check_name(meta, where)
    description = _check_description(meta, where)
    return Skill(name=name, description=description, path=f"{folder}/{SKILL_FILE}", body=body)


def load_skills(root: Path) -> list[Skill]:
    """Every skill in the folders directly under ``root``, sorted by name.

    A folder without a SKILL.md is skipped; an unusable SKILL.md or two skills with the same
    name raise ``SkillError`` naming the file and what to fix.
    """
    by_name: dict[str, Skill] = {}
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if not entry.is_dir() or not (entry / SKILL_FILE).is_file():
            continue
        skill = load_skill(root, entry.name)
        if skill.name in by_name:
            first = root / by_name[skill.name].path
            raise SkillError(
                str(root / skill.path), f"duplicate skill name {skill.name!r} (also in {first}): rename one of them"
            )
        by_name[skill.name] = skill
    return [by_name[name] for name in sorted(by_name)]


def _normalise_dest(dest: str) -> str:
    clean = posixpath.normpath(dest)
    if not dest.startswith("/") or clean == "/" or ".." in clean.split("/"):
        raise ValueError(f"skills destination must be an absolute folder below '/', got {dest!r}")
    return clean


def _tar_entry(name: str, *, is_dir: bool, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
    info.mode = DIR_MODE if is_dir else FILE_MODE
    info.size = size
    info.mtime = ARCHIVE_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _skill_files(folder: Path) -> list[tuple[str, Path | None]]:
    """(posix path relative to ``folder``, file or None for a directory), sorted; no symlinks.

    ``__pycache__`` folders (bytecode left by running a skill's scripts) are left out.
    """
    found: list[tuple[str, Path | None]] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        here = Path(dirpath)
        rel_dir = here.relative_to(folder).as_posix()
        for name in sorted(dirnames + filenames):
            path = here / name
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            mode = path.lstat().st_mode
            if stat.S_ISDIR(mode):
                found.append((rel, None))
            elif stat.S_ISREG(mode):
                found.append((rel, path))
            else:
                raise SkillError(str(path), "only plain files and folders can ship in a skill: replace the link")
        dirnames.sort()
    return sorted(found, key=lambda item: item[0])


def skills_archive(skills: Sequence[Skill], root: Path, dest: str = DEFAULT_DEST) -> bytes:
    """An uncompressed tar of every file under each skill's folder, placed at ``dest/<name>/``.

    Entry paths are ``dest`` without its leading slash (``workspace/skills/<name>/...``): give it
    to ``container.put_archive("/", data)``. Folders are 0755, files 0644, all owned by root and
    dated ``ARCHIVE_MTIME``, so the same skills always give the same bytes. Parents of ``dest``
    get no entries, so their owner and mode in the container stay as they are.
    """
    prefix = _normalise_dest(dest).lstrip("/")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_tar_entry(prefix, is_dir=True))
        for skill in sorted(skills, key=lambda s: s.name):
            folder = root / Path(skill.path).parent
            base = f"{prefix}/{skill.name}"
            tar.addfile(_tar_entry(base, is_dir=True))
            for rel, file in _skill_files(folder):
                if file is None:
                    tar.addfile(_tar_entry(f"{base}/{rel}", is_dir=True))
                    continue
                data = file.read_bytes()
                tar.addfile(_tar_entry(f"{base}/{rel}", is_dir=False, size=len(data)), io.BytesIO(data))
    return buf.getvalue()


def skill_entries(skills: Sequence[Skill], dest: str = DEFAULT_DEST) -> list[dict[str, str]]:
    """The records the runtime lists to the agent: name, description and the in-workspace SKILL.md path."""
    base = _normalise_dest(dest)
    return [{"name": s.name, "description": s.description, "filePath": f"{base}/{s.name}/{SKILL_FILE}"} for s in skills]
