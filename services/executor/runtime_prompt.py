"""The agent's runtime system prompt, and the episode set-up it describes (skills in the workspace).

Like the reference runtime, the prompt is built per episode once its workspace exists: the
template ``prompts/agent_runtime.md`` filled with the tools offered (name and first sentence of
their description), the workspace's rules and network situation, the files in ``/workspace``,
and the skills installed under ``/workspace/skills`` (name, description, path of their
SKILL.md). The exact prompt is the conversation's system message, so every record holds it, with
the tool schemas and the skills (``{name, description, filePath}``) next to it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.resources import load_text
from services.executor.skills import DEFAULT_DEST, Skill, load_skills, skill_entries, starter_skills_dir
from services.executor.workspace.base import WorkspaceBackend

MAX_LISTED_FILES = 60
_SENTENCE_END = re.compile(r"\.\s+(?=[A-Z])")
_LIST_FILES = (
    "cd /workspace 2>/dev/null && find . -mindepth 1 -maxdepth 2 -not -path './skills/*' "
    "-not -path './.*' -printf '%y %P\\n' 2>/dev/null | sort -k2 | head -n " + str(MAX_LISTED_FILES + 1)
)
_NETWORK = {
    "egress": "The workspace reaches the web only through a recording proxy, and only the sites it allows; "
    "web_search and web_fetch are the easy way to look things up.",
    "tools": "The workspace itself has no network; use web_search and web_fetch to look things up.",
    "off": "There is no web access in this session: work with what is in the workspace.",
}


@dataclass(frozen=True)
class AgentWorld:
    """What one episode's agent is offered: tools, skills and how it reaches the web."""

    tools: tuple[dict[str, Any], ...]
    skills: tuple[Skill, ...]
    skills_root: Path
    network: str  # egress | tools | off

    @classmethod
    def load(cls, tools: Sequence[dict[str, Any]], skills_dir: str, network: str) -> AgentWorld:
        root = Path(skills_dir) if skills_dir else starter_skills_dir()
        return cls(tuple(tools), tuple(load_skills(root)), root, network)

    def skill_entries(self) -> list[dict[str, str]]:
        return skill_entries(self.skills, DEFAULT_DEST)

    def install(self, backend: WorkspaceBackend, episode_id: str) -> None:
        """Copy every skill's files into the workspace (as the agent user: it may read and edit them)."""
        for skill in self.skills:
            folder = self.skills_root / skill.name
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                rel = path.relative_to(self.skills_root).as_posix()
                backend.write_file(episode_id, f"{DEFAULT_DEST}/{rel}", path.read_bytes())

    def prompt(self, backend: WorkspaceBackend, episode_id: str, today: dt.date | None = None) -> str:
        listing = backend.exec(episode_id, _LIST_FILES, workdir=None, timeout_s=15.0, record=False)
        return render(self, listing.stdout, today or dt.date.today())


def render(world: AgentWorld, find_output: str, today: dt.date) -> str:
    """The template filled in (pure: tested without a workspace)."""
    tools = "\n".join(
        f"- {t['function']['name']}: {_first_sentence(t['function'].get('description', ''))}" for t in world.tools
    )
    skills = (
        "\n".join(f"- {e['name']}: {e['description']} ({e['filePath']})" for e in world.skill_entries())
        or "(no skills are installed)"
    )
    return load_text("services.executor", "prompts/agent_runtime.md").format_map(
        {
            "tools": tools,
            "network": _NETWORK[world.network],
            "workspace_files": _files(find_output),
            "skills": skills,
            "date": today.isoformat(),
        }
    )


def _files(find_output: str) -> str:
    rows = [line.split(" ", 1) for line in find_output.splitlines() if " " in line]
    shown = [f"- {path}/" if kind == "d" else f"- {path}" for kind, path in rows[:MAX_LISTED_FILES]]
    if not shown:
        return "(empty apart from skills/)"
    if len(rows) > MAX_LISTED_FILES:
        shown.append("- ... (more files: list them with exec)")
    return "\n".join(shown)


def _first_sentence(text: str) -> str:
    """Up to the first full stop that ends a sentence (one followed by a capital letter)."""
    found = _SENTENCE_END.search(text)
    return text[: found.start() + 1] if found else text
