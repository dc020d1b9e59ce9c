"""Sentence embeddings for the dedup gate and the Vendi diversity score.

:class:`Embedder` is the backend interface: a ``name``, a ``dim`` and ``encode(texts)`` that
returns a ``float32`` array of shape ``(len(texts), dim)`` whose rows have unit L2 norm (so a dot
product is the cosine). ``encode`` is synchronous and CPU-bound; async code calls
``await embedder.encode_async(texts)``, which runs it on the embedder's own single worker thread so
the event loop never blocks and concurrent callers queue instead of oversubscribing the cores.

:class:`SentenceTransformerEmbedder` is the real backend. The model folder comes from
:func:`services.dedup.model_assets.resolve_model` (all-mpnet-base-v2, all-MiniLM-L6-v2 or a path)
and is loaded with ``local_files_only=True`` and ``HF_HUB_OFFLINE=1``: nothing is downloaded.
``sentence_transformers`` and ``torch`` are imported only when a model is built. Building one
blocks for a few seconds (weights are read from disk); from async code use
``await asyncio.to_thread(build_embedder, settings)``.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import numpy as np

from services.dedup.model_assets import MINILM, MPNET, resolve_model

log = logging.getLogger(__name__)

Dtype = Literal["float32", "bfloat16"]
_DTYPE_ALIASES: dict[str, Dtype] = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16"}
_TORCH_LOCK = threading.Lock()


class Embedder(abc.ABC):
    """Turns texts into unit-norm float32 vectors."""

    name: str
    dim: int

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()

    @abc.abstractmethod
    def encode(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts``: shape ``(len(texts), dim)``, float32, rows L2-normalised. Blocking."""

    async def encode_async(self, texts: list[str]) -> np.ndarray:
        """:meth:`encode` on this embedder's worker thread (calls are served one at a time)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker(), self.encode, list(texts))

    def close(self) -> None:
        """Stop the worker thread (waits for a running batch). Safe to call twice."""
        with self._executor_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)

    def _worker(self) -> ThreadPoolExecutor:
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"embed-{self.name}")
            return self._executor


def l2_normalise(rows: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm in float32 (norms taken in float64; all-zero rows stay zero)."""
    rows = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(rows.astype(np.float64), axis=1, keepdims=True)
    return (rows / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def default_num_threads() -> int:
    """The CPUs this process may run on (affinity-aware), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def cpu_has_native_bf16() -> bool:
    """True when the CPU advertises bf16 arithmetic (AVX512-BF16 or AMX); Linux only, else False.

    Without it torch emulates bf16 matmuls, which measured 8-80x slower than float32 on AVX2.
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            flags = next((line.split(":", 1)[1].split() for line in fh if line.startswith("flags")), [])
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags))


def _display_name(model_name: str, path: os.PathLike[str]) -> str:
    """The canonical name for a known model, else the folder's name."""
    key = model_name.strip().removeprefix("sentence-transformers/").lower()
    known = {MPNET.lower(): MPNET, MINILM.lower(): MINILM}
    return known.get(key, os.path.basename(os.fspath(path)))


def _configure_torch(num_threads: int) -> Any:
    """Import torch with the hub switched off, set its intra-op thread count; return the module."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no "Loading weights" bar in service logs
    import torch

    with _TORCH_LOCK:
        if torch.get_num_threads() != num_threads:
            torch.set_num_threads(num_threads)
    return torch


class SentenceTransformerEmbedder(Embedder):
    """A sentence-transformers model loaded from a local folder, on CPU by default.

    ``dtype="bfloat16"`` loads the weights in bf16 (half the memory; whether it is faster depends
    on the CPU's bf16 support); output is always float32. ``num_threads`` sets torch's intra-op
    threads, which is process-wide (default: every CPU this process may use).
    """

    def __init__(
        self,
        model_name: str = MPNET,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        batch_size: int = 32,
        num_threads: int | None = None,
        max_seq_length: int | None = None,
    ) -> None:
        super().__init__()
        if dtype not in _DTYPE_ALIASES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPE_ALIASES)}, not {dtype!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        self.dtype: Dtype = _DTYPE_ALIASES[dtype]
        self.device = device
        self.batch_size = batch_size
        self.num_threads = num_threads or default_num_threads()
        self.model_path = resolve_model(model_name)
        self.name = _display_name(model_name, self.model_path)
        torch = _configure_torch(self.num_threads)
        if self.dtype == "bfloat16" and device == "cpu" and not cpu_has_native_bf16():
            log.warning(
                "bfloat16 requested but this CPU has no native bf16 (avx512_bf16/amx_bf16): "
                "torch emulates it, expect it far slower than float32"
            )
        from sentence_transformers import SentenceTransformer

        torch_dtype = torch.bfloat16 if self.dtype == "bfloat16" else torch.float32
        self._model = SentenceTransformer(
            str(self.model_path),
            device=device,
            local_files_only=True,
            model_kwargs={"dtype": torch_dtype},
        )
        self._model.eval()
        if max_seq_length is not None:
            self._model.max_seq_length = max_seq_length
        dim = self._model.get_embedding_dimension()
        if not dim:
            raise ValueError(f"{self.model_path} does not report an embedding dimension")
        self.dim = int(dim)
        self._encode_lock = threading.Lock()
        log.info(
            "embedder %s loaded from %s: dim=%d dtype=%s device=%s threads=%d max_seq_length=%s",
            self.name,
            self.model_path,
            self.dim,
            self.dtype,
            device,
            self.num_threads,
            self._model.max_seq_length,
        )

    @property
    def max_seq_length(self) -> int | None:
        """Tokens kept per text; longer texts are truncated by the tokenizer."""
        return self._model.max_seq_length

    def encode(self, texts: list[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("encode takes a list of strings, not a single string")
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise TypeError(f"texts[{bad}] is {type(texts[bad]).__name__}, not str")
        with self._encode_lock:
            out = self._model.encode(
                list(texts),
                batch_size=self.batch_size,
                show_progress_bar=False,
                convert_to_tensor=True,
                normalize_embeddings=False,
            )
            rows = out.detach().float().cpu().numpy()
        return l2_normalise(rows)


@dataclass(frozen=True)
class EmbedderConfig:
    """What :func:`build_embedder` reads; a settings object may carry the same attribute names."""

    model: str = MPNET
    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int = 32
    num_threads: int | None = None
    max_seq_length: int | None = None


def build_embedder(settings: object | None = None, **overrides: Any) -> Embedder:
    """Build the embedder described by ``settings`` (any object with :class:`EmbedderConfig`'s
    attribute names; missing ones take the defaults), with keyword ``overrides`` taking precedence.

    Blocking (loads the model); from async code run it with ``asyncio.to_thread``.
    """
    names = {f.name for f in fields(EmbedderConfig)}
    unknown = set(overrides) - names
    if unknown:
        raise TypeError(f"unknown embedder option(s): {', '.join(sorted(unknown))}")
    found = {n: getattr(settings, n) for n in names if settings is not None and hasattr(settings, n)}
    cfg = replace(EmbedderConfig(), **{**found, **overrides})
    return SentenceTransformerEmbedder(
        cfg.model,
        device=cfg.device,
        dtype=cfg.dtype,
        batch_size=cfg.batch_size,
        num_threads=cfg.num_threads,
        max_seq_length=cfg.max_seq_length,
    )
