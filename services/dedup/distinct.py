"""Distinct-N: lexical diversity of a corpus as unique n-grams over total n-grams.

``distinct_n(texts, n)`` = (number of distinct n-grams in the whole corpus) / (number of n-gram
occurrences in the whole corpus), the corpus-level form of Li et al. (2016). 1.0 means no n-gram
ever repeats; values near 0 mean the corpus keeps reusing the same phrasing. It falls as the
corpus grows, so compare corpora of similar size.

Tokenisation is deliberately simple and documented so numbers can be reproduced elsewhere: the
text is lowercased and split into runs of letters and digits (Unicode-aware), keeping internal
apostrophes (``don't``, ``user's``); punctuation and whitespace separate tokens and are dropped.
N-grams are taken inside each text, never across the boundary between two texts. A corpus with no
n-gram of the requested order scores 0.0.

Counting is exact: tokens are mapped to integer ids and each n-gram is packed into one int64
(base = vocabulary size), so 50k texts of 150 words cost tens of MB; when the vocabulary is too
large to pack, tuples in a set are used instead. Pure Python and numpy, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

TOKEN_RE = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
DEFAULT_NS: tuple[int, ...] = (1, 2, 3)


def tokenize(text: str) -> list[str]:
    """Lowercased word tokens: letters/digits, internal apostrophes kept, punctuation dropped."""
    return [t.replace("’", "'") for t in TOKEN_RE.findall(text.lower())]


class _Corpus:
    """Texts as int32 token-id arrays over a shared vocabulary."""

    def __init__(self, texts: Iterable[str]) -> None:
        self.vocab: dict[str, int] = {}
        self.docs: list[np.ndarray] = []
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"texts must be strings, got {type(text).__name__}")
            ids = [self.vocab.setdefault(tok, len(self.vocab)) for tok in tokenize(text)]
            self.docs.append(np.asarray(ids, dtype=np.int64))

    def counts(self, n: int) -> tuple[int, int]:
        """(distinct n-grams, total n-grams) over the corpus."""
        if n < 1:
            raise ValueError(f"n must be >= 1, not {n}")
        base = max(len(self.vocab), 1)
        if base**n >= 2**63:
            return self._counts_tuples(n)
        codes = []
        for doc in self.docs:
            m = doc.size - n + 1
            if m <= 0:
                continue
            code = np.zeros(m, dtype=np.int64)
            for k in range(n):
                code = code * base + doc[k : k + m]
            codes.append(code)
        if not codes:
            return 0, 0
        every = np.concatenate(codes)
        return int(np.unique(every).size), int(every.size)

    def _counts_tuples(self, n: int) -> tuple[int, int]:
        seen: set[tuple[int, ...]] = set()
        total = 0
        for doc in self.docs:
            ids = doc.tolist()
            grams = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
            total += len(grams)
            seen.update(grams)
        return len(seen), total


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-``n`` of ``texts`` (0.0 when the corpus has no n-gram of that order)."""
    unique, total = _Corpus(texts).counts(n)
    return unique / total if total else 0.0


def distinct_report(texts: Sequence[str], ns: Iterable[int] = DEFAULT_NS) -> dict[str, Any]:
    """``{"distinct_1": float, ..., "ngrams": {"1": {"unique", "total"}, ...}, "tokens": int}``."""
    corpus = _Corpus(texts)
    out: dict[str, Any] = {}
    detail: dict[str, dict[str, int]] = {}
    for n in ns:
        unique, total = corpus.counts(n)
        out[f"distinct_{n}"] = unique / total if total else 0.0
        detail[str(n)] = {"unique": unique, "total": total}
    out["ngrams"] = detail
    out["tokens"] = int(sum(doc.size for doc in corpus.docs))
    return out
