"""HTML pages of the viewer, from the templates in ``templates/`` (Jinja2 with autoescaping on:
every piece of record text is escaped, a tool result holding ``<script>`` shows as text)."""

from __future__ import annotations

from functools import cache

import jinja2

from services.viewer.conversation import trajectory
from services.viewer.index import FACETS, DatasetIndex, Query

SKIPPED_LISTED = 20
"""How many skipped lines the list page names (the count covers them all)."""
FACET_TITLES = {
    "verdict": "verdict",
    "domain": "domain",
    "complexity": "complexity",
    "tool": "tool called",
    "turns": "user turns",
}


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("services.viewer", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _page(template: str, **context: object) -> str:
    return _environment().get_template(template).render(**context)


def list_page(index: DatasetIndex, query: Query, source: str) -> str:
    """The list of records ``query`` selects, with filters, counts, search and paging."""
    selection = index.select(query)
    return _page(
        "list.html",
        title=f"{source} - ise view",
        source=source,
        selection=selection,
        query=selection.query,
        facets=[(f, FACET_TITLES[f]) for f in FACETS],
        files=index.files,
        records=len(index.entries),
        skipped=index.skipped[:SKIPPED_LISTED],
        skipped_total=len(index.skipped),
    )


def trajectory_page(index: DatasetIndex, n: int, source: str) -> str:
    """One record as a conversation with its metadata; IndexError, ValueError or OSError as
    :meth:`DatasetIndex.record` raises them."""
    record = index.record(n)
    entry = index.entries[n]
    return _page(
        "trajectory.html",
        title=f"{entry.ident or index.where(n)} - ise view",
        source=source,
        n=n,
        total=len(index.entries),
        where=index.where(n),
        entry=entry,
        t=trajectory(record, index.prices),
    )


def error_page(status: int, message: str, source: str) -> str:
    """A page that says what went wrong and links back to the list."""
    return _page("error.html", title=f"{status} - ise view", source=source, status=status, message=message)
