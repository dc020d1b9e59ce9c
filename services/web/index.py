"""The local web's search index: a bm25s index over the corpus pages, saved beside the pages'
metadata (url, title, snippet) and loaded from the cache; ``SearchIndex.search`` answers queries."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import bm25s

from services.web.corpus import Page

STOPWORDS = "en"
MAX_COUNT = 10


@dataclass(frozen=True)
class SearchResult:
    title: str
    url: str
    description: str
    score: float

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _document(page: Page) -> str:
    """What is indexed for a page: the title twice (a light boost), the path's words, the text."""
    path_words = page.path.removesuffix(".html").replace("/", " ").replace("-", " ")
    return f"{page.title}\n{page.title}\n{path_words}\n{page.text}"


def _tokenize(texts: list[str]) -> list[list[str]]:
    tokens = bm25s.tokenize(texts, stopwords=STOPWORDS, return_ids=False, show_progress=False)
    return [list(t) for t in tokens]


def build_index(pages: Sequence[Page], directory: Path) -> None:
    """Index ``pages`` with bm25s and save the index (``bm25s/``) and metadata (``pages.json``)."""
    if not pages:
        raise ValueError("no pages to index")
    directory.mkdir(parents=True, exist_ok=True)
    retriever = bm25s.BM25()
    retriever.index(
        bm25s.tokenize([_document(p) for p in pages], stopwords=STOPWORDS, show_progress=False), show_progress=False
    )
    retriever.save(str(directory / "bm25s"))
    meta = [p.meta() for p in pages]
    (directory / "pages.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")


class SearchIndex:
    """A loaded index; ``search`` is safe to call from many threads."""

    def __init__(self, retriever: bm25s.BM25, pages: list[dict[str, str]]) -> None:
        self._retriever = retriever
        self._pages = pages
        self._vocab: dict[str, int] = dict(retriever.vocab_dict)
        self._lock = threading.Lock()

    @classmethod
    def load(cls, directory: Path) -> SearchIndex:
        pages = json.loads((directory / "pages.json").read_text(encoding="utf-8"))
        retriever = bm25s.BM25.load(str(directory / "bm25s"))
        return cls(retriever, pages)

    def __len__(self) -> int:
        return len(self._pages)

    def search(self, query: str, count: int = 5) -> list[SearchResult]:
        """The best ``count`` pages (1 to MAX_COUNT) for ``query``; words the corpus never uses are
        ignored, so a query of only such words (or only stopwords) finds nothing."""
        if not 1 <= count <= MAX_COUNT:
            raise ValueError(f"count must be 1..{MAX_COUNT}, got {count}")
        words = [w for w in _tokenize([query])[0] if w in self._vocab]
        if not words:
            return []
        k = min(count, len(self._pages))
        with self._lock:
            ids, scores = self._retriever.retrieve([words], k=k, show_progress=False, n_threads=0)
        results = []
        for doc_id, score in zip(ids[0], scores[0], strict=True):
            if float(score) <= 0:
                continue
            page = self._pages[int(doc_id)]
            results.append(SearchResult(page["title"], page["url"], page["snippet"], round(float(score), 4)))
        return results
