"""The viewer's in-memory index of a dataset, built once at start with a progress bar.

One compact :class:`Entry` per record: where it lies (file, byte offset, line), what the list shows
and filters on (verdict, domains, complexity, tools called, user turns and the other counts of
``record_reader.summarize``) and its lowercase search text (the intent's request, the first user
message, the intent's fields and persona). List pages are computed from the entries alone
(:meth:`DatasetIndex.select`: filters, search, facet counts, paging); a full record is read back
from its file by offset only when it is opened (:meth:`DatasetIndex.record`). A line that is not a
record is skipped and kept in :attr:`DatasetIndex.skipped`, so the page can say so.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from tqdm import tqdm

from services.dedup.cost import PriceTable, load_prices, record_cost, usd
from services.dedup.record_reader import file_lines, read_record_at, summarize
from services.viewer import fields

FACETS = ("verdict", "domain", "complexity", "tool", "turns")
"""What the list filters and counts by, in the order of :attr:`Entry.facets`."""
PAGE_SIZE = 50
SEARCH_CHARS = 4000
"""Each searched text field is cut to this many characters (a pasted log must not bloat the index)."""
TITLE_CHARS = 200
CACHED_QUERIES = 32
UNKNOWN = "unknown"
COMPLEXITY_ORDER = ("simple", "medium", "complex")


@dataclass(frozen=True, slots=True)
class Entry:
    """One record as the list knows it."""

    file: int
    offset: int
    line: int
    ident: str
    title: str
    verdict: str
    complexity: str
    domains: tuple[str, ...]
    tools: tuple[str, ...]
    user_turns: int
    messages: int
    tool_calls: int
    nonzero_exits: int
    tool_failures: int
    search: str
    facets: tuple[tuple[str, ...], ...]
    """Its values for each of :data:`FACETS` (one for most, several for domains and tools)."""
    cost_usd: float | None = None
    """Its cost from the price table (``services.dedup.cost``); None: no usage or an unpriced model."""


@dataclass(frozen=True)
class Skipped:
    """A line that is not a record, and why."""

    path: str
    line: int
    problem: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.problem}" if self.line else f"{self.path}: {self.problem}"


@dataclass(frozen=True)
class Query:
    """What a list page asks for: one value per facet (or none), search words and a page."""

    filters: tuple[str | None, ...] = (None,) * len(FACETS)
    text: str = ""
    page: int = 1

    @classmethod
    def parse(cls, params: Mapping[str, Sequence[str]]) -> Query:
        """From a parsed query string (``parse_qs``); unknown names are ignored, a bad page is page 1."""

        def first(name: str) -> str:
            values = params.get(name) or [""]
            return values[0].strip()

        page = first("page")
        return cls(
            filters=tuple(first(f) or None for f in FACETS),
            text=first("q"),
            page=int(page) if page.isdigit() and int(page) > 0 else 1,
        )

    def terms(self) -> list[str]:
        """The lowercase search words; a record matches when it contains every one."""
        return self.text.lower().split()

    def url(self, facet: str | None = None, value: str | None = None, page: int = 1) -> str:
        """The list URL of this query with ``facet`` set to ``value`` (``None``: cleared) and ``page``."""
        filters = list(self.filters)
        if facet is not None:
            filters[FACETS.index(facet)] = value
        params = [(f, v) for f, v in zip(FACETS, filters, strict=True) if v is not None]
        params += [("q", self.text)] if self.text else []
        params += [("page", str(page))] if page > 1 else []
        return "/?" + urlencode(params) if params else "/"

    def active(self, facet: str) -> str | None:
        return self.filters[FACETS.index(facet)]


@dataclass(frozen=True)
class Selection:
    """One list page: the matching entries on it (with their positions) and the facet counts."""

    query: Query
    total: int
    page: int
    pages: int
    rows: list[tuple[int, Entry]]
    counts: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    """Per facet, (value, records): the records matching the search and every other filter."""
    cost: str = ""
    """The matching records' cost: total and mean, or how many are priced."""


class DatasetIndex:
    """The entries of every record of ``files``, in file order."""

    def __init__(
        self,
        files: Sequence[Path],
        entries: Sequence[Entry],
        skipped: Sequence[Skipped],
        prices: PriceTable | None = None,
    ) -> None:
        self.prices = prices or load_prices()
        self.files = list(files)
        self.entries = list(entries)
        self.skipped = list(skipped)
        # entries with the same facet values share a group number: counting numbers is cheaper
        groups: dict[tuple[tuple[str, ...], ...], int] = {}
        self._group = [groups.setdefault(e.facets, len(groups)) for e in self.entries]
        self._group_facets = list(groups)
        self._matches = functools.lru_cache(maxsize=CACHED_QUERIES)(self._match)

    @classmethod
    def build(
        cls, files: Sequence[Path], progress: bool | None = None, prices: PriceTable | None = None
    ) -> DatasetIndex:
        """Read every line of ``files`` once. ``progress``: show a tqdm bar on stderr (``None``:
        when stderr is a terminal); ``prices``: default the shipped table and ``ISE_PRICES_FILE``."""
        table = prices or load_prices()
        entries: list[Entry] = []
        skipped: list[Skipped] = []
        sizes = [_size(p) for p in files]
        with tqdm(
            total=sum(sizes), unit="B", unit_scale=True, desc="ise view: indexing", disable=_disabled(progress)
        ) as bar:
            for number, (path, size) in enumerate(zip(files, sizes, strict=True)):
                done = 0
                for line in file_lines(path):
                    if line.offset > done:
                        bar.update(line.offset - done)
                        done = line.offset
                    if line.problem:
                        cut = " (the last line has no newline: cut off mid-write)" if line.torn else ""
                        skipped.append(Skipped(str(path), line.number, line.problem + cut))
                        continue
                    try:
                        entries.append(make_entry(number, line.offset, line.number, line.value, table))
                    except ValueError as exc:
                        skipped.append(Skipped(str(path), line.number, str(exc)))
                bar.update(max(0, size - done))
        return cls(files, entries, skipped, table)

    def select(self, query: Query) -> Selection:
        """The page ``query`` asks for, with facet counts (each facet counted over the records that
        pass the search and every *other* filter, so a chosen value's alternatives stay visible).
        The last :data:`CACHED_QUERIES` filter and search combinations are kept, so paging is free."""
        matched, counts = self._matches(query.filters, query.text)
        pages = max(1, math.ceil(len(matched) / PAGE_SIZE))
        page = min(query.page, pages)
        shown = matched[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
        rows = [(n, self.entries[n]) for n in shown]
        cost = cost_text([self.entries[n].cost_usd for n in matched])
        return Selection(replace(query, page=page), len(matched), page, pages, rows, counts, cost)

    def _match(self, filters: tuple[str | None, ...], text: str) -> tuple[list[int], dict[str, list[tuple[str, int]]]]:
        """The positions of the matching records and the facet counts."""
        wanted = [(i, v) for i, v in enumerate(filters) if v is not None]
        terms = Query(text=text).terms()
        whole: Counter[int] = Counter()  # the matching records, by their facet values' group
        combos: list[Counter[tuple[str, ...]]] = [Counter() for _ in FACETS]
        matched: list[int] = []
        for n, (entry, group) in enumerate(zip(self.entries, self._group, strict=True)):
            if terms and not all(t in entry.search for t in terms):
                continue
            missed = [i for i, v in wanted if v not in entry.facets[i]] if wanted else ()
            if not missed:
                matched.append(n)
                whole[group] += 1
            elif len(missed) == 1:
                combos[missed[0]][entry.facets[missed[0]]] += 1
        for group, count in whole.items():
            for counter, values in zip(combos, self._group_facets[group], strict=True):
                counter[values] += count
        counts = {facet: _ordered(facet, _expand(combos[i]), filters[i]) for i, facet in enumerate(FACETS)}
        return matched, counts

    def record(self, n: int) -> dict[str, Any]:
        """Record ``n``, read again from its file; IndexError for no such record, ValueError or
        OSError if the file changed since the index was built."""
        if not 0 <= n < len(self.entries):
            raise IndexError(f"no record {n}: the dataset has {len(self.entries)}")
        entry = self.entries[n]
        value = read_record_at(self.files[entry.file], entry.offset, entry.line)
        if not isinstance(value, dict):
            raise ValueError(f"{self.where(n)}: no longer a record")
        return value

    def where(self, n: int) -> str:
        """``file:line`` of record ``n``."""
        entry = self.entries[n]
        return f"{self.files[entry.file]}:{entry.line}"


def make_entry(file: int, offset: int, line: int, value: Any, prices: PriceTable) -> Entry:
    """The entry of one parsed line; ValueError (saying why) if it is not a trajectory record."""
    summary = summarize(value)
    cost = record_cost(summary.meta, prices)
    intent = fields.intent_text(value)
    first_user = fields.first_user_message(value)
    domains, tasks = fields.domains_and_tasks(value)
    complexity = fields.complexity(value) or UNKNOWN
    meta = fields.mapping(value.get("metadata"))
    ours = fields.mapping(meta.get("intent"))
    ident = fields.record_id(value)
    persona = fields.mapping(meta.get("persona"))
    searched: Iterable[str] = (
        intent[:SEARCH_CHARS],
        first_user[:SEARCH_CHARS] if first_user != intent else "",
        ident,
        complexity,
        *domains,
        *tasks,
        *(fields.text(v) for v in persona.values()),
        *(
            x
            for x in fields.items(ours.get("tools_used")) + fields.items(ours.get("skills_used"))
            if isinstance(x, str)
        ),
    )
    tools = tuple(dict.fromkeys(summary.called))
    verdict = summary.verdict or UNKNOWN
    return Entry(
        file=file,
        offset=offset,
        line=line,
        ident=ident,
        title=" ".join((intent or first_user).split())[:TITLE_CHARS] or "(no user message)",
        verdict=verdict,
        complexity=complexity,
        domains=domains,
        tools=tools,
        user_turns=summary.user_turns,
        messages=summary.messages,
        tool_calls=summary.tool_calls,
        nonzero_exits=sum(1 for code in summary.exit_codes if code != 0),
        tool_failures=summary.tool_failures,
        search="\n".join(s for s in searched if s).lower(),
        facets=((verdict,), domains, (complexity,), tools, (str(summary.user_turns),)),
        cost_usd=None if cost is None else cost.total,
    )


def cost_text(costs: Sequence[float | None]) -> str:
    """``$1.20 (mean $0.30)`` over records that are all priced, else how many are."""
    known = [c for c in costs if c is not None]
    if not costs:
        return ""
    if len(known) < len(costs):
        return f"n/a: {len(known)} of {len(costs)} priced (price their models in ISE_PRICES_FILE)"
    return f"{usd(sum(known))} (mean {usd(sum(known) / len(known))})"


def _expand(combos: Counter[tuple[str, ...]]) -> Counter[str]:
    """Counts per value from counts per combination of values (a record counts once per value)."""
    out: Counter[str] = Counter()
    for values, count in combos.items():
        for value in set(values):
            out[value] += count
    return out


def _ordered(facet: str, counts: Counter[str], active: str | None) -> list[tuple[str, int]]:
    """Most frequent first; complexity in its own order, user turns by number. A chosen value
    stays listed with 0, so it can be cleared."""
    if active is not None and active not in counts:
        counts[active] = 0
    if facet == "turns":
        return sorted(counts.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else math.inf)
    if facet == "complexity":
        rank = {c: i for i, c in enumerate(COMPLEXITY_ORDER)}
        return sorted(counts.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0]))
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _disabled(progress: bool | None) -> bool | None:
    return None if progress is None else not progress
