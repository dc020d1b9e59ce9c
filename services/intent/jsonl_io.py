"""``intents.jsonl`` in the reference layout (ise-reference.md §1.3): convert, read, write.

One JSON object per line::

    {"id", "natural_language_intent", "domains": [domain ids], "tasks": [task ids], "persona_id",
     "tools_used", "skills_used", "complexity",
     "metadata": {"persona": {name, role, industry, expertise, experience_level,
                              communication_style, work_context},
                  "domains": [{"name", "description", "selected_tasks": [{"name", "description"}]}]}}

The top-level ``tasks`` list runs in the order of the flattened ``selected_tasks`` (domain by
domain), so the i-th id names the i-th selected task. What the layout cannot hold goes in one
optional top-level ``"ise"`` object, written only when it carries something: ``seed`` (when it is
not ``derive_seed(id)``), ``render_model`` and ``task_order`` (our task order as positions in the
flattened list). Readers of the reference layout ignore it; Stage 2 copies only ``metadata``.

Import: ids come from the top-level lists when their lengths match the named entries, else they
are derived from the content. Only ``natural_language_intent`` is required (as in the reference);
``complexity`` defaults to "medium"; unknown keys are ignored. Every problem is an
``IntentFileError`` naming file, line and field; ``read_intents`` collects them, keeps good lines.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, get_args

from pydantic import ValidationError

from services.common.contracts.intent import Complexity, DomainRef, Intent, Persona, TaskRef
from services.common.errors import ConfigError
from services.common.ids import derive_seed, digest
from services.common.json_lines import JsonLine, read_json_lines
from services.intent.errors import IntentFileError

TIERS: tuple[str, ...] = get_args(Complexity)
DEFAULT_COMPLEXITY = "medium"
PERSONA_TEXT_FIELDS = ("name", "role", "industry", "experience_level", "communication_style", "work_context")
EXTENSION_KEY = "ise"
MAX_LINE_BYTES = 1 << 20
"""One intent line at most (a reference-layout intent is a few KiB; the bus carries 16 MiB an event)."""


class _FieldError(Exception):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field, self.problem = field, problem


# ---------------------------------------------------------------- export


def intent_to_reference(intent: Intent) -> dict[str, Any]:
    """The reference-layout record of ``intent`` (``id`` is our ``intent_id``).

    Raises ConfigError for a task whose ``domain`` is not among the intent's domains: the layout
    lists tasks only under their domain, so such a task could not be written without loss.
    """
    first: dict[str, int] = {}
    for i, d in enumerate(intent.domains):
        first.setdefault(d.id, i)
    groups: list[list[int]] = [[] for _ in intent.domains]
    for k, t in enumerate(intent.tasks):
        if t.domain not in first:
            raise ConfigError(
                f"intent {intent.intent_id}: task {t.id!r} belongs to domain {t.domain!r}, which is not "
                "among its domains; the reference layout lists tasks under their domain"
            )
        groups[first[t.domain]].append(k)
    flat = [k for group in groups for k in group]
    record: dict[str, Any] = {
        "id": intent.intent_id,
        "natural_language_intent": intent.text,
        "domains": [d.id for d in intent.domains],
        "tasks": [intent.tasks[k].id for k in flat],
        "persona_id": intent.persona.id,
        "tools_used": list(intent.tools_used),
        "skills_used": list(intent.skills_used),
        "complexity": intent.complexity,
        "metadata": {
            "persona": intent.persona.model_dump(exclude={"id"}),
            "domains": [
                {
                    "name": d.name,
                    "description": d.description,
                    "selected_tasks": [
                        {"name": intent.tasks[k].name, "description": intent.tasks[k].description} for k in group
                    ],
                }
                for d, group in zip(intent.domains, groups, strict=True)
            ],
        },
    }
    extension: dict[str, Any] = {}
    if intent.seed != derive_seed(intent.intent_id):
        extension["seed"] = intent.seed
    if intent.render_model:
        extension["render_model"] = intent.render_model
    if flat != list(range(len(flat))):
        extension["task_order"] = [flat.index(k) for k in range(len(flat))]
    if extension:
        record[EXTENSION_KEY] = extension
    return record


# ---------------------------------------------------------------- import


def _str(value: Any, field: str, *, required: bool = False) -> str:
    if value is None:
        if required:
            raise _FieldError(field, "missing")
        return ""
    if not isinstance(value, str):
        raise _FieldError(field, f"expected a string, got {_kind(value)}")
    if required and not value.strip():
        raise _FieldError(field, "must not be empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _FieldError(field, "contains an unpaired surrogate (not valid Unicode text)") from None
    return value


def _kind(value: Any) -> str:
    names = {type(None): "null", dict: "an object", list: "a list", bool: "a boolean"}
    return names.get(type(value), type(value).__name__)


def _list(value: Any, field: str) -> list[Any]:
    return _of(list, value, field)


def _obj(value: Any, field: str) -> dict[str, Any]:
    return _of(dict, value, field)


def _of(cls: type, value: Any, field: str) -> Any:
    """``value`` if it is a ``cls`` (list or dict), empty when null or absent, else a field error."""
    if value is not None and not isinstance(value, cls):
        raise _FieldError(field, f"expected {_kind(cls())}, got {_kind(value)}")
    return cls() if value is None else value


def _strs(value: Any, field: str) -> list[str]:
    return [_str(v, f"{field}[{i}]", required=True) for i, v in enumerate(_list(value, field))]


def _persona(record: dict[str, Any], meta: dict[str, Any]) -> Persona:
    raw = _obj(meta.get("persona"), "metadata.persona")
    fields: dict[str, Any] = {k: _str(raw.get(k), f"metadata.persona.{k}") for k in PERSONA_TEXT_FIELDS}
    fields["expertise"] = _strs(raw.get("expertise"), "metadata.persona.expertise")
    pid = _str(record.get("persona_id"), "persona_id") or _str(raw.get("id"), "metadata.persona.id")
    return Persona(id=pid or "persona-" + digest("persona", fields), **fields)


def _domains_and_tasks(record: dict[str, Any], meta: dict[str, Any]) -> tuple[list[DomainRef], list[TaskRef]]:
    domain_ids = _strs(record.get("domains"), "domains")
    task_ids = _strs(record.get("tasks"), "tasks")
    if meta.get("domains") is None:  # ids only: nothing says which domain a task belongs to
        if task_ids:
            raise _FieldError("metadata.domains", f"missing, so the {len(task_ids)} task ids cannot be placed")
        return [DomainRef(id=d, name=d) for d in domain_ids], []
    named = [
        _named_domain(raw, f"metadata.domains[{i}]") for i, raw in enumerate(_list(meta["domains"], "metadata.domains"))
    ]
    if len(domain_ids) != len(named):
        domain_ids = ["domain-" + digest("domain", name, desc) for name, desc, _ in named]
    domains = [
        DomainRef(id=d, name=name, description=desc) for d, (name, desc, _) in zip(domain_ids, named, strict=True)
    ]
    flat = [(d, name, desc) for d, (_, _, tasks) in zip(domain_ids, named, strict=True) for name, desc in tasks]
    if len(task_ids) != len(flat):
        task_ids = ["task-" + digest("task", name, desc) for _, name, desc in flat]
    tasks = [
        TaskRef(id=t, name=name, description=desc, domain=d) for t, (d, name, desc) in zip(task_ids, flat, strict=True)
    ]
    return domains, tasks


def _named_domain(raw: Any, at: str) -> tuple[str, str, list[tuple[str, str]]]:
    """(name, description, [(task name, task description)]) of one ``metadata.domains`` entry."""
    if not isinstance(raw, dict):
        raise _FieldError(at, f"expected an object, got {_kind(raw)}")
    tasks = []
    for j, task in enumerate(_list(raw.get("selected_tasks"), f"{at}.selected_tasks")):
        t_at = f"{at}.selected_tasks[{j}]"
        if not isinstance(task, dict):
            raise _FieldError(t_at, f"expected an object, got {_kind(task)}")
        tasks.append(
            (
                _str(task.get("name"), f"{t_at}.name", required=True),
                _str(task.get("description"), f"{t_at}.description"),
            )
        )
    return _str(raw.get("name"), f"{at}.name", required=True), _str(raw.get("description"), f"{at}.description"), tasks


def _complexity(value: Any) -> str:
    if value is None:
        return DEFAULT_COMPLEXITY
    tier = _str(value, "complexity").strip().lower()
    if tier not in TIERS:
        raise _FieldError("complexity", f"{value!r} is not one of {', '.join(TIERS)}")
    return tier


def _extension(value: Any, intent_id: str, n_tasks: int) -> tuple[int, str, list[int] | None]:
    ext = _obj(value, EXTENSION_KEY)
    seed = ext.get("seed")
    if seed is None:
        seed = derive_seed(intent_id)
    elif not isinstance(seed, int) or isinstance(seed, bool):
        raise _FieldError(f"{EXTENSION_KEY}.seed", f"expected an integer, got {_kind(seed)}")
    order = ext.get("task_order")
    if order is not None and not (
        isinstance(order, list) and all(type(k) is int for k in order) and sorted(order) == list(range(n_tasks))
    ):
        want = f"the {n_tasks} task positions 0-{n_tasks - 1}, each once" if n_tasks else "[] (there are no tasks)"
        raise _FieldError(f"{EXTENSION_KEY}.task_order", f"expected {want}")
    return seed, _str(ext.get("render_model"), f"{EXTENSION_KEY}.render_model"), order


def _intent_id(record: dict[str, Any]) -> str:
    for key in ("id", "intent_id", "task_id"):  # the ids Stage 2 accepts, in its order
        if record.get(key) is not None:
            return _str(record[key], key, required=True)
    return "intent_" + digest("import", record, length=12)


def intent_from_reference(record: dict[str, Any], *, line: int, path: str | os.PathLike[str] = "<record>") -> Intent:
    """Our Intent (``source="imported"``) from one reference-layout record; IntentFileError if not."""
    try:
        if not isinstance(record, dict):
            raise _FieldError("", f"expected a JSON object, got {_kind(record)}")
        if record.get("natural_language_intent") is None:
            raise _FieldError("natural_language_intent", "missing (the one field every intent needs)")
        text = _str(record["natural_language_intent"], "natural_language_intent", required=True)
        intent_id = _intent_id(record)
        meta = _obj(record.get("metadata"), "metadata")
        persona = _persona(record, meta)
        domains, tasks = _domains_and_tasks(record, meta)
        seed, render_model, order = _extension(record.get(EXTENSION_KEY), intent_id, len(tasks))
        return Intent(
            intent_id=intent_id,
            text=text,
            persona=persona,
            domains=domains,
            tasks=[tasks[k] for k in order] if order is not None else tasks,
            complexity=_complexity(record.get("complexity")),
            seed=seed,
            source="imported",
            render_model=render_model,
            tools_used=_strs(record.get("tools_used"), "tools_used"),
            skills_used=_strs(record.get("skills_used"), "skills_used"),
        )
    except _FieldError as exc:
        raise IntentFileError(path, line, exc.field, exc.problem) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        raise IntentFileError(path, line, ".".join(str(p) for p in first["loc"]), first["msg"]) from None


def read_intents(path: str | os.PathLike[str]) -> tuple[list[Intent], list[IntentFileError]]:
    """Every importable intent of ``path`` and an error for each line that is not (blank lines skip).

    The whole file is checked before anything is returned, so a caller can refuse it as a whole.
    A line over ``MAX_LINE_BYTES`` is an error without being read into memory, and a later line
    reusing an earlier line's id is an error too (downstream it would overwrite it). Raises
    IntentFileError (line None) only when the file itself cannot be read.
    """
    intents: list[Intent] = []
    errors: list[IntentFileError] = []
    seen: dict[str, int] = {}
    try:
        with open(path, "rb") as handle:  # bytes: a line that is not UTF-8 is that line's error only
            lines = list(_checked_lines(path, handle, errors))
    except OSError as exc:
        raise IntentFileError(path, None, "", f"cannot read the file: {exc.strerror or exc}") from None
    for line in lines:
        try:
            intent = intent_from_reference(line.value, line=line.number, path=path)
        except IntentFileError as exc:
            errors.append(exc)
            continue
        except Exception as exc:  # a checker gap must not cost the rest of the file
            errors.append(IntentFileError(path, line.number, "", f"cannot import ({type(exc).__name__}: {exc})"))
            continue
        if intent.intent_id in seen:
            errors.append(
                IntentFileError(
                    path, line.number, "id", f"{intent.intent_id!r} already used on line {seen[intent.intent_id]}"
                )
            )
            continue
        seen[intent.intent_id] = line.number
        intents.append(intent)
    errors.sort(key=lambda e: e.line or 0)
    return intents, errors


def _checked_lines(path: str | os.PathLike[str], handle: BinaryIO, errors: list[IntentFileError]) -> Iterator[JsonLine]:
    for line in read_json_lines(handle, MAX_LINE_BYTES):
        if line.problem:
            cut = " (the last line has no newline: was the file cut off?)" if line.torn else ""
            errors.append(IntentFileError(path, line.number, "", line.problem + cut))
        else:
            yield line


def write_intents(path: str | os.PathLike[str], intents: Iterable[Intent]) -> int:
    """Write ``intents`` to ``path`` in the reference layout; returns how many. Atomic: a temporary
    file next to ``path`` replaces it, so readers see the old file or the whole new one."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    count = 0
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with open(fd, "w", encoding="utf-8", newline="\n") as out:
            for intent in intents:
                out.write(json.dumps(intent_to_reference(intent), ensure_ascii=False) + "\n")
                count += 1
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return count
