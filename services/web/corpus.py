"""The local web's document corpus: Debian's ``python3.11-doc`` HTML, its published URLs, its
version, and the text of each page extracted with trafilatura (sync code, in worker processes)."""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import re
import subprocess
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from html import unescape
from pathlib import Path

from tqdm import tqdm

from services.common.errors import ConfigError

log = logging.getLogger("ise.web.corpus")

DEBIAN_PACKAGE = "python3.11-doc"
DOC_ROOT = Path("/usr/share/doc/python3.11/html")
DOCS_HOST = "docs.python.org"
DOCS_PREFIX = "/3.11/"
BASE_URL = f"https://{DOCS_HOST}{DOCS_PREFIX}"
# Bump when what the cache holds changes shape (extraction, index, repos): old caches are then ignored.
CACHE_SCHEMA = 2
# Debian's doc package points a few static files at shared JavaScript packages; these are trusted targets.
EXTRA_ROOTS = (Path("/usr/share/javascript"),)
# Pages that list every name (indexes, the table of contents, the search page) match any query;
# includes/ holds fragments that Sphinx pastes into other pages. Matched on the relative path.
SKIPPED_PAGES = re.compile(r"^(genindex.*|search|contents|py-modindex|includes/.*)\.html$")
SNIPPET_CHARS = 320


@dataclass(frozen=True)
class Page:
    """One indexed page: where it is published, its title, a snippet and the text that is indexed."""

    path: str  # relative to DOC_ROOT, with "/" separators
    url: str
    title: str
    snippet: str
    text: str

    def meta(self) -> dict[str, str]:
        """What the cache keeps per page (the full text only goes into the index)."""
        data = asdict(self)
        del data["text"]
        return data


def doc_root() -> Path:
    """The installed HTML tree, or a ConfigError saying how to install it."""
    if not (DOC_ROOT / "index.html").is_file():
        raise ConfigError(
            f"{DOC_ROOT} is missing: install Debian's {DEBIAN_PACKAGE} (apt-get install -y {DEBIAN_PACKAGE}, "
            "or run scripts/install.sh)"
        )
    return DOC_ROOT


def url_for(rel_path: str) -> str:
    return BASE_URL + rel_path


def corpus_version(root: Path | None = None) -> str:
    """A name for this corpus and cache layout: the Debian package version when dpkg knows it,
    else a fingerprint of the HTML files' names and sizes."""
    root = root or doc_root()
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", DEBIAN_PACKAGE], capture_output=True, text=True, timeout=30
        )
        version = out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.TimeoutExpired):
        version = ""
    if not version:
        digest = hashlib.sha256()
        for path in sorted(_html_files(root)):
            digest.update(f"{path.relative_to(root)}\0{path.stat().st_size}\n".encode())
        version = "fp" + digest.hexdigest()[:12]
    safe = re.sub(r"[^A-Za-z0-9.+_-]", "_", version)
    return f"{DEBIAN_PACKAGE}_{safe}_s{CACHE_SCHEMA}"


def _html_files(root: Path) -> Iterator[Path]:
    for path in root.rglob("*.html"):
        rel = path.relative_to(root)
        if not rel.parts[0].startswith("_") and path.is_file():
            yield path


def page_paths(root: Path | None = None) -> list[str]:
    """The relative paths of the pages to index, sorted (so document ids are stable)."""
    root = root or doc_root()
    rel_paths = (str(p.relative_to(root)).replace(os.sep, "/") for p in _html_files(root))
    return sorted(rel for rel in rel_paths if not SKIPPED_PAGES.match(rel))


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("\u00b6", "")).strip()


def _heading(html: str) -> str:
    """The page's title: its first ``<h1>`` (Sphinx gives each page one), else its ``<title>``."""
    for pattern in (r"<h1[^>]*>(.*?)</h1>", r"<title>(.*?)</title>"):
        match = re.search(pattern, html, re.S | re.I)
        if match:
            title = _clean(unescape(re.sub(r"<[^>]+>", "", match.group(1))))
            title = re.sub(r"\s+—\s+Python [\d.]+ documentation$", "", title)
            if title:
                return title
    return ""


def extract_page(root: str, rel_path: str) -> Page:
    """Title and main text of one page (trafilatura; metadata extraction is skipped: it doubles the
    time and the ``<h1>`` is the title)."""
    import trafilatura  # imported here: worker processes pay for it once each

    html = Path(root, rel_path).read_text(encoding="utf-8", errors="replace")
    doc = trafilatura.bare_extraction(html, with_metadata=False, include_comments=False, favor_recall=True)
    text = (getattr(doc, "text", None) or "") if doc is not None else ""
    title = _heading(html) or rel_path
    body = _clean(text)
    if body.startswith(title):
        body = body[len(title) :].lstrip()
    snippet = body[:SNIPPET_CHARS].rsplit(" ", 1)[0] + "…" if len(body) > SNIPPET_CHARS else body
    return Page(path=rel_path, url=url_for(rel_path), title=title, snippet=snippet, text=text)


def _extract_star(args: tuple[str, str]) -> Page:
    return extract_page(*args)


def extract_pages(root: Path | None = None, workers: int | None = None) -> list[Page]:
    """Extract every indexed page, in parallel worker processes, with a progress bar."""
    root = root or doc_root()
    paths = page_paths(root)
    workers = workers or max(1, min(len(paths), os.cpu_count() or 1))
    log.info("extracting %d pages of %s with trafilatura (%d workers)", len(paths), root, workers)
    jobs = [(str(root), p) for p in paths]
    bar = tqdm(total=len(jobs), desc=f"extract {DEBIAN_PACKAGE}", unit="page")
    pages: list[Page] = []
    try:
        if workers > 1:
            # forkserver, not fork: the caller may have threads (a server, a test runner)
            ctx = multiprocessing.get_context("forkserver")
            try:
                with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                    for page in pool.map(_extract_star, jobs, chunksize=4):
                        pages.append(page)
                        bar.update()
                return pages
            except BrokenProcessPool:  # e.g. a __main__ that workers cannot re-import (python - < script)
                log.warning("worker processes failed to start; extracting in this process instead")
                pages.clear()
                bar.reset()
        for job in jobs:
            pages.append(_extract_star(job))
            bar.update()
        return pages
    finally:
        bar.close()
