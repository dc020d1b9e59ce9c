"""Money per trajectory: a price table per model turns each record's token usage into US dollars.

The table is ``services/common/llm/prices.yaml`` (shipped; its comments say how to read it)
overlaid with the user's own file named by ``ISE_PRICES_FILE``: USD per 1M prompt, completion
and, optionally, cached-prompt tokens. A model name finds its price exactly, else through the
longest priced name that starts it (``gpt-4o-2024-08-06`` -> ``gpt-4o``), else through the most
specific ``*``/``?`` pattern; a name found nowhere makes the record's cost unknown (``None``,
shown as ``n/a`` with a hint naming the file to edit), never 0.

What is counted: each record's ``metadata.usage`` per role with the model ``metadata.models``
names for it: the agent, the user model and the intent's rendering (``intent``: every render
attempt, with the intent's ``render_model``). Not in any record, so in no figure: the rendering
of intents the gate rejected, and attempts that ended in an infrastructure error (retried,
never written).

API: :func:`load_prices`; :func:`record_cost` (one record's metadata) and
:func:`cost_of_record` (a parsed record, as a viewer holds it); :func:`summarize_costs` (per run
and per verdict, as ``ise stats`` and ``stats.json`` carry it); :func:`describe` (its lines of
text) and :func:`usd`.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.dedup.errors import PriceFileError
from services.dedup.settings import PriceSettings

PER_MILLION = 1_000_000
COUNTED = "agent, user model and the intent's rendering (rejected intents' rendering is not in the records)"
ENTRY_SHAPE = "{prompt: N, completion: N[, cached_prompt: N]} in USD per 1M tokens"


class TokenUsage(BaseModel):
    """One role's tokens in a record (``metadata.usage.<role>``)."""

    model_config = ConfigDict(extra="ignore")

    prompt_tokens: int = Field(0, ge=0)
    completion_tokens: int = Field(0, ge=0)
    cached_prompt_tokens: int = Field(0, ge=0, description="Of prompt_tokens, those the provider's cache served.")
    llm_calls: int = Field(0, ge=0)

    @property
    def used(self) -> bool:
        return bool(self.prompt_tokens or self.completion_tokens or self.llm_calls)


class UsageMeta(BaseModel):
    """The part of a record's ``metadata`` that prices it."""

    model_config = ConfigDict(extra="ignore")

    usage: dict[str, TokenUsage] | None = None
    models: dict[str, str] = Field(default_factory=dict)


class Price(BaseModel):
    """One model's prices, USD per 1M tokens."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: float = Field(ge=0)
    completion: float = Field(ge=0)
    cached_prompt: float | None = Field(None, ge=0)

    def of(self, usage: TokenUsage) -> float:
        cached = min(usage.cached_prompt_tokens, usage.prompt_tokens)
        cached_price = self.prompt if self.cached_prompt is None else self.cached_prompt
        fresh = usage.prompt_tokens - cached
        return (fresh * self.prompt + cached * cached_price + usage.completion_tokens * self.completion) / PER_MILLION


def _is_pattern(name: str) -> bool:
    return any(c in name for c in "*?[")


@dataclass(frozen=True)
class PriceTable:
    """Prices by model name; ``files`` are the tables read (shipped first), ``user_file`` the
    user's own (empty when ``ISE_PRICES_FILE`` is unset)."""

    prices: Mapping[str, Price]
    files: tuple[str, ...]
    user_file: str = ""

    def lookup(self, model: str) -> Price | None:
        """The price of ``model``: exact name, longest priced prefix, most specific pattern; or None."""
        if model in self.prices:
            return self.prices[model]
        prefixes = [n for n in self.prices if not _is_pattern(n) and model.startswith(n)]
        if prefixes:
            return self.prices[max(prefixes, key=len)]
        patterns = [n for n in self.prices if _is_pattern(n) and fnmatchcase(model, n)]
        return self.prices[max(patterns, key=len)] if patterns else None

    def hint(self, models: Iterable[str]) -> str:
        """One line: which models lack a price and which file to add them to."""
        where = (
            f"{self.user_file} (ISE_PRICES_FILE)"
            if self.user_file
            else f"your own price file and set ISE_PRICES_FILE to it (shape: {self.files[0]})"
        )
        return f"no price for {', '.join(sorted(models))}: add it under `models:` in {where}"


def _shipped() -> tuple[str, str]:
    table = resources.files("services.common.llm").joinpath("prices.yaml")
    return str(table), table.read_text(encoding="utf-8")


def _entries(name: str, text: str) -> dict[str, Price]:
    """The ``models`` of one price file; PriceFileError naming the file and the bad entry."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise PriceFileError(f"{name}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict) or set(data) != {"models"} or not isinstance(data["models"], dict):
        keys = ", ".join(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise PriceFileError(
            f"{name}: a price file holds one mapping `models:` of model name -> {ENTRY_SHAPE} (found: {keys})"
        )
    prices: dict[str, Price] = {}
    for model, value in data["models"].items():
        if not isinstance(model, str) or not model.strip():
            raise PriceFileError(f"{name}: models: {model!r} is not a model name (quote names YAML reads otherwise)")
        try:
            prices[model] = Price.model_validate(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            field_name = ".".join(map(str, first["loc"]))
            problem = f"{field_name}: {first['msg']}" if field_name else first["msg"]
            raise PriceFileError(f"{name}: models.{model}: {problem}; each entry is {ENTRY_SHAPE}") from None
    return prices


def load_prices(user_file: str | Path | None = None) -> PriceTable:
    """The shipped table overlaid with ``user_file`` (default: ``ISE_PRICES_FILE``; empty: none)."""
    path = str(PriceSettings().file if user_file is None else user_file)
    shipped_name, shipped_text = _shipped()
    prices = _entries(shipped_name, shipped_text)
    if not path:
        return PriceTable(prices, (shipped_name,))
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise PriceFileError(f"{path}: cannot read the price file named by ISE_PRICES_FILE: {why}") from None
    return PriceTable({**prices, **_entries(path, text)}, (shipped_name, path), path)


@dataclass(frozen=True)
class RecordCost:
    """One record's cost: USD per role (None: unknown), the models without a price and the roles
    that used tokens but name no model (``metadata.models``)."""

    roles: dict[str, float | None]
    tokens: dict[str, TokenUsage] = field(default_factory=dict)
    unpriced: tuple[str, ...] = ()
    unnamed: tuple[str, ...] = ()

    @property
    def total(self) -> float | None:
        return None if None in self.roles.values() else sum(v or 0.0 for v in self.roles.values())


def record_cost(meta: UsageMeta | None, table: PriceTable) -> RecordCost | None:
    """The cost of a record from its metadata; None when it carries no token usage. A role that
    used nothing costs 0 whatever its model; one that did needs its model's price."""
    if meta is None or meta.usage is None:
        return None
    roles: dict[str, float | None] = {}
    unpriced: list[str] = []
    unnamed: list[str] = []
    for role, used in meta.usage.items():
        model = meta.models.get(role, "")
        price = table.lookup(model) if model else None
        roles[role] = 0.0 if not used.used else None if price is None else price.of(used)
        if roles[role] is None and model:
            unpriced.append(model)
        elif roles[role] is None:
            unnamed.append(role)
    return RecordCost(roles, dict(meta.usage), tuple(unpriced), tuple(unnamed))


def cost_of_record(record: Mapping[str, Any], table: PriceTable) -> RecordCost | None:
    """The cost of one parsed record (a dataset line); None without usable ``metadata.usage``."""
    meta = record.get("metadata")
    if not isinstance(meta, dict):
        return None
    try:
        return record_cost(UsageMeta.model_validate(meta), table)
    except ValidationError:
        return None


def _money(value: float) -> float:
    return round(value, 8)


def _figures(costs: list[RecordCost | None]) -> dict[str, Any]:
    known = [c.total for c in costs if c is not None and c.total is not None]
    with_usage = sum(1 for c in costs if c is not None)
    return {
        "trajectories": len(costs),
        "priced": len(known),
        "unpriced": with_usage - len(known),
        "without_usage": len(costs) - with_usage,
        "total_usd": _money(sum(known)) if len(known) == len(costs) else None,
        "priced_total_usd": _money(sum(known)),
        "mean_usd": _money(statistics.fmean(known)) if known else None,
        "median_usd": _money(statistics.median(known)) if known else None,
        "max_usd": _money(max(known)) if known else None,
    }


def summarize_costs(items: Iterable[tuple[str | None, RecordCost | None]], table: PriceTable) -> dict[str, Any]:
    """Per run and per verdict from ``(verdict, cost)`` pairs: totals (None unless every record is
    priced), the priced records' total, mean, median and max, USD per role (priced records) and
    tokens per role (every record with usage)."""
    by_verdict: dict[str, list[RecordCost | None]] = defaultdict(list)
    for verdict, cost in items:
        by_verdict[verdict or "unknown"].append(cost)
    costs = [c for group in by_verdict.values() for c in group]
    used = [c for c in costs if c is not None]
    priced = [c for c in used if c.total is not None]
    unpriced = Counter(m for c in used for m in dict.fromkeys(c.unpriced))
    unnamed = Counter(r for c in used for r in c.unnamed)
    roles = sorted({r for c in used for r in c.roles})
    return {
        "currency": "USD",
        "counted": COUNTED,
        "price_files": list(table.files),
        **_figures(costs),
        "by_role_usd": {r: _money(sum(c.roles.get(r) or 0.0 for c in priced)) for r in roles},
        "tokens": {
            r: {k: sum(getattr(c.tokens[r], k) for c in used if r in c.tokens) for k in TokenUsage.model_fields}
            for r in roles
        },
        "by_verdict": {v: _figures(g) for v, g in sorted(by_verdict.items(), key=lambda kv: (-len(kv[1]), kv[0]))},
        "unpriced_models": dict(unpriced.most_common()),
        "roles_without_model": dict(unnamed.most_common()),
        "hint": table.hint(unpriced) if unpriced else None,
    }


def usd(value: float | None) -> str:
    """Dollars for people: ``n/a`` when unknown, more digits for small amounts."""
    if value is None:
        return "n/a"
    if value == 0:
        return "$0"
    if value >= 0.01:
        return f"${value:,.2f}" if value >= 100 else f"${value:.4f}"
    small = f"{value:.6f}".rstrip("0")
    return "<$0.000001" if small.endswith(".") else f"${small}"


def describe(summary: Mapping[str, Any]) -> list[str]:
    """The cost figures as lines of text: the total, the per-verdict split, then what is unknown."""
    n, priced = summary["trajectories"], summary["priced"]
    if not n:
        return ["no trajectories"]
    if not priced and summary["without_usage"] == n:
        return ["n/a: the records carry no token usage (metadata.usage)"]
    per = f"per trajectory mean {usd(summary['mean_usd'])}, median {usd(summary['median_usd'])}"
    if summary["total_usd"] is not None:
        roles = ", ".join(f"{r} {usd(v)}" for r, v in summary["by_role_usd"].items())
        head = f"{usd(summary['total_usd'])} total over {n} trajectories ({roles}); {per}"
    else:
        head = f"n/a total: {priced} of {n} trajectories priced"
        head += f" ({usd(summary['priced_total_usd'])}; {per})" if priced else ""
    verdicts = ", ".join(
        f"{v} {usd(f['total_usd'])} ({f['trajectories']}, mean {usd(f['mean_usd'])})"
        for v, f in summary["by_verdict"].items()
    )
    lines = [head, f"by verdict: {verdicts}"]
    if summary["hint"]:
        lines.append(f"n/a: {summary['hint']}")
    if summary["roles_without_model"]:
        roles = ", ".join(f"{r} ({n})" for r, n in summary["roles_without_model"].items())
        lines.append(f"n/a: records with tokens but no model named in metadata.models for {roles}")
    if summary["without_usage"]:
        lines.append(f"n/a: {summary['without_usage']} record(s) carry no token usage (metadata.usage)")
    return lines
