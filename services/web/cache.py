"""The local web's on-disk cache: where it lives, building it once (atomically, under a file lock
so concurrent processes build it once between them) and opening it.

Layout, under ``$ISE_WEB_CACHE_DIR`` (default ``~/.cache/ise/web``)::

    <corpus-version>.lock          the build lock (flock)
    <corpus-version>/manifest.json what was built, from where, when, how long it took
    <corpus-version>/index/        bm25s/ (the bm25s index) and pages.json (url, title, snippet)
    <corpus-version>/git/<name>.git bare repositories ready for dumb HTTP
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.common.locks import file_lock
from services.web import corpus, gitrepos
from services.web.index import SearchIndex, build_index

log = logging.getLogger("ise.web.cache")

ENV_CACHE_DIR = "ISE_WEB_CACHE_DIR"
BUILD_LOCK_TIMEOUT_S = 1800.0


def cache_base() -> Path:
    """``$ISE_WEB_CACHE_DIR`` or ``~/.cache/ise/web``; each corpus version gets a directory in it."""
    raw = os.environ.get(ENV_CACHE_DIR, "").strip()
    return Path(raw).expanduser() if raw else Path.home() / ".cache" / "ise" / "web"


@dataclass
class WebCache:
    """A built cache directory. ``index`` loads the search index on first use."""

    root: Path
    manifest: dict[str, Any]
    built_now: bool = False  # True when this process built it, False when it was already there
    _index: SearchIndex | None = field(default=None, repr=False)

    @property
    def doc_root(self) -> Path:
        return Path(self.manifest["doc_root"])

    @property
    def git_dir(self) -> Path:
        return self.root / "git"

    @property
    def repos(self) -> list[str]:
        return list(self.manifest["repos"])

    @property
    def index(self) -> SearchIndex:
        if self._index is None:
            started = time.perf_counter()
            self._index = SearchIndex.load(self.root / "index")
            log.info("loaded search index (%d pages) in %.3fs", len(self._index), time.perf_counter() - started)
        return self._index


def _build_into(tmp: Path, doc_root: Path, version: str) -> dict[str, Any]:
    started = time.perf_counter()
    pages = corpus.extract_pages(doc_root)
    build_index(pages, tmp / "index")
    repos = gitrepos.build_repos(tmp / "git")
    manifest = {
        "version": version,
        "package": corpus.DEBIAN_PACKAGE,
        "doc_root": str(doc_root),
        "base_url": corpus.BASE_URL,
        "pages": len(pages),
        "repos": repos,
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "build_seconds": round(time.perf_counter() - started, 2),
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _read_manifest(root: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data


def ensure_cache(base: Path | None = None, lock_timeout_s: float = BUILD_LOCK_TIMEOUT_S) -> WebCache:
    """Open the cache for the installed corpus, building it first if it is missing.

    The build runs in a temporary directory beside the target and is renamed into place when
    complete, so a reader never sees half a cache; a file lock makes concurrent callers (threads or
    processes) wait for one build instead of racing.
    """
    doc_root = corpus.doc_root()
    version = corpus.corpus_version(doc_root)
    base = base or cache_base()
    root = base / version
    manifest = _read_manifest(root)
    if manifest is not None:
        return WebCache(root, manifest)
    with file_lock(base / f"{version}.lock", lock_timeout_s):
        manifest = _read_manifest(root)  # someone else may have built it while we waited
        if manifest is not None:
            log.info("local web cache %s was built by another process", root)
            return WebCache(root, manifest)
        if root.exists():  # a directory without a manifest is not ours to trust: rebuild
            shutil.rmtree(root)
        log.info("building the local web cache at %s (first use; about a minute)", root)
        tmp = Path(tempfile.mkdtemp(prefix=f".build-{version}-", dir=base))
        try:
            manifest = _build_into(tmp, doc_root, version)
            tmp.chmod(0o755)  # mkdtemp made it private; the cache is readable like any other
            os.rename(tmp, root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info(
            "built the local web cache in %.1fs: %d pages, repos %s",
            manifest["build_seconds"],
            manifest["pages"],
            ", ".join(manifest["repos"]),
        )
        return WebCache(root, manifest, built_now=True)
