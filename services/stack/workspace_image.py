"""The workspace image (``ise-workspace:latest``) that agents' commands run in.

Owns: deciding whether the image must be (re)built and building it without any registry, by
running ``deploy/workspace/build_rootfs.sh`` (debootstrap + ``docker import``).  The script
labels the image with the sha256 of its own bytes (``ise.workspace.inputs-sha256``); a build
happens only when the tag is missing, that label differs from the script's current digest, or
``rebuild=True``.  An image under the tag without the label (for example one built from
``deploy/workspace/Dockerfile`` on a machine with a registry) is used as it is.  Builds are
serialised with a lock file so concurrent callers build once; the image a rebuild replaces is
removed when no container uses it.  :func:`copy_workspace_image` loads the image into another
daemon (an executor replica's own Docker host) from this one, streamed like ``docker save |
docker load``: seconds, not a second build.

Run as ``python -m services.stack.workspace_image [--rebuild] [TAG]``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.errors import APIError, DockerException, ImageNotFound
from docker.models.images import Image

from services.common.locks import file_lock
from services.stack.docker_daemon import client_for, ensure_docker
from services.stack.procs import StackError, stop

log = logging.getLogger(__name__)

DEFAULT_TAG = "ise-workspace:latest"
INPUTS_LABEL = "ise.workspace.inputs-sha256"
REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT_S = 1800.0
HEARTBEAT_S = 30.0
# One lock per machine (not per stack dir): the image lives in the one Docker daemon.
BUILD_LOCK = Path.home() / ".cache" / "ise" / "workspace-image.lock"


@dataclass(frozen=True)
class ImageInfo:
    """The workspace image as Docker reports it."""

    tag: str
    id: str
    digest: str  # the registry digest when there is one; else the content id (imported images)
    size: int  # bytes, uncompressed
    inputs_sha256: str  # the label; "" for an image not built by build_rootfs.sh
    built: bool  # True when this call built it


def build_script() -> Path:
    """``deploy/workspace/build_rootfs.sh`` (``ISE_WORKSPACE_BUILD_SCRIPT`` overrides)."""
    override = os.environ.get("ISE_WORKSPACE_BUILD_SCRIPT")
    return Path(override) if override else REPO_ROOT / "deploy" / "workspace" / "build_rootfs.sh"


def _script_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise StackError(
            f"workspace image build script not readable: {path}: {exc} "
            "(run from a checkout, or set ISE_WORKSPACE_BUILD_SCRIPT)"
        ) from exc


def inputs_sha256(script: Path | None = None) -> str:
    """Digest of the build inputs: the build script, which holds the package list and config."""
    return hashlib.sha256(_script_bytes(script or build_script())).hexdigest()


def _info(image: Image, tag: str, *, built: bool) -> ImageInfo:
    attrs = image.attrs
    repo_digests = attrs.get("RepoDigests") or []
    return ImageInfo(
        tag=tag,
        id=str(image.id),
        digest=str(repo_digests[0]) if repo_digests else str(image.id),
        size=int(attrs.get("Size") or 0),
        inputs_sha256=str((image.labels or {}).get(INPUTS_LABEL, "")),
        built=built,
    )


def _current(client: docker.DockerClient, tag: str) -> Image | None:
    try:
        return client.images.get(tag)
    except ImageNotFound:
        return None


def _why_build(image: Image | None, want: str, rebuild: bool) -> str | None:
    """Reason to build, or None when ``image`` is fine as it is."""
    if image is None:
        return "the image is missing"
    if rebuild:
        return "a rebuild was asked for"
    have = (image.labels or {}).get(INPUTS_LABEL)
    if have is None:
        log.warning(
            "image %s has no %s label (not built by build_rootfs.sh); using it as it is", image.id, INPUTS_LABEL
        )
        return None
    if have != want:
        return f"the build inputs changed ({have[:12]} -> {want[:12]})"
    return None


def _run_build(script: bytes, tag: str, timeout_s: float) -> None:
    """Run a snapshot of the build script, relaying its progress lines; fail with its tail.

    bash reads a script as it runs, so the snapshot keeps an edit of the checked-in file from
    breaking a build under way; its digest is the one the image gets labelled with.
    """
    if os.geteuid() != 0:
        raise StackError(_advice(tag, "building the workspace image needs root (debootstrap, chroot)"))
    if shutil.which("debootstrap") is None and not Path("/usr/sbin/debootstrap").exists():
        raise StackError(_advice(tag, "debootstrap is not installed"))
    BUILD_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "wb", prefix="build_rootfs.", suffix=".sh", dir=BUILD_LOCK.parent, delete=False
    ) as fh:
        fh.write(script)
    try:
        _run_snapshot(Path(fh.name), tag, timeout_s)
    finally:
        Path(fh.name).unlink(missing_ok=True)


def _run_snapshot(script: Path, tag: str, timeout_s: float) -> None:
    env = {**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin"}
    tail: deque[str] = deque(maxlen=40)
    proc = subprocess.Popen(
        ["bash", str(script), tag],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        text=True,
        errors="replace",
        start_new_session=True,
    )

    def relay() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line.rstrip())
            log.info("build: %s", line.rstrip())

    reader = threading.Thread(target=relay, name="workspace-image-build", daemon=True)
    reader.start()
    started = time.monotonic()
    while True:
        try:
            proc.wait(timeout=HEARTBEAT_S)
            break
        except subprocess.TimeoutExpired:
            elapsed = time.monotonic() - started
            if elapsed > timeout_s:
                stop(proc.pid, timeout_s=20)  # SIGTERM lets the script unmount and clean up
                proc.wait()
                raise StackError(_advice(tag, f"the build took more than {timeout_s:.0f}s", tail)) from None
            log.info("workspace image build still running (%.0fs so far)", elapsed)
    reader.join(timeout=5)
    if proc.returncode != 0:
        raise StackError(_advice(tag, f"build_rootfs.sh exited with status {proc.returncode}", tail))


def _advice(tag: str, what: str, tail: deque[str] | None = None) -> str:
    lines = "\n".join(tail or ())
    return (
        f"could not build the workspace image {tag}: {what}\n"
        + (f"--- last lines of the build ---\n{lines}\n" if lines else "")
        + "What to do: run as root with debootstrap installed (apt-get install debootstrap "
        "debian-archive-keyring) and a reachable Debian mirror (ISE_DEBIAN_MIRROR=http://... to "
        "pick one), then retry; or, on a machine with a registry, "
        f"`docker build -t {tag} deploy/workspace` (the Dockerfile builds the same image)."
    )


def ensure_workspace_image(
    tag: str = DEFAULT_TAG, *, rebuild: bool = False, timeout_s: float = BUILD_TIMEOUT_S
) -> ImageInfo:
    """Return the workspace image under ``tag``, building it first only when needed.

    Starts the Docker daemon if none answers.  A build takes a few minutes (debootstrap);
    a call that finds the image up to date only inspects it.
    """
    ensure_docker()
    script = _script_bytes(build_script())
    want = hashlib.sha256(script).hexdigest()
    client = docker.from_env()
    try:
        image = _current(client, tag)
        if _why_build(image, want, rebuild) is None and image is not None:
            return _info(image, tag, built=False)
        with file_lock(BUILD_LOCK, timeout_s):
            # Someone else may have built it while this process waited for the lock.
            image = _current(client, tag)
            reason = _why_build(image, want, rebuild)
            if reason is None and image is not None:
                return _info(image, tag, built=False)
            old_id = image.id if image is not None else None
            log.info("building workspace image %s because %s; this takes a few minutes", tag, reason)
            started = time.monotonic()
            _run_build(script, tag, timeout_s)
            built = _current(client, tag)
            if built is None or (built.labels or {}).get(INPUTS_LABEL) != want:
                raise StackError(
                    _advice(tag, f"the build finished but the image or its {INPUTS_LABEL} label is not there")
                )
            info = _info(built, tag, built=True)
            log.info(
                "built workspace image %s (%s, %.0f MB) in %.0fs",
                tag,
                info.id[:19],
                info.size / 1e6,
                time.monotonic() - started,
            )
            if old_id and old_id != info.id:
                with contextlib.suppress(APIError, ImageNotFound):
                    client.images.remove(old_id)
                    log.info("removed the replaced image %s", old_id[:19])
            return info
    except DockerException as exc:
        raise StackError(f"Docker error while ensuring the workspace image {tag}: {exc}") from exc
    finally:
        client.close()


def copy_workspace_image(host: str, tag: str = DEFAULT_TAG) -> tuple[ImageInfo, float]:
    """Make the daemon at ``host`` hold the same workspace image as the stack's (``DOCKER_HOST``,
    built there first if needed): nothing to do when it has that image id under ``tag`` already,
    else the image is streamed from one daemon into the other.  Returns the image as ``host``
    has it and the seconds the copy took (0.0: none was needed)."""
    wanted = ensure_workspace_image(tag)
    try:
        source, target = client_for(None, BUILD_TIMEOUT_S), client_for(host, BUILD_TIMEOUT_S)
    except DockerException as exc:
        raise StackError(f"no Docker daemon answers at {host} to load the workspace image into: {exc}") from exc
    try:
        have = _current(target, tag)
        if have is not None and have.id == wanted.id:
            return _info(have, tag, built=False), 0.0
        started = time.monotonic()
        log.info("loading the workspace image %s (%.0f MB) into the daemon at %s", tag, wanted.size / 1e6, host)
        target.images.load(source.api.get_image(tag))
        loaded = _current(target, tag)
        if loaded is None or loaded.id != wanted.id:
            raise StackError(f"loading {tag} into the daemon at {host} did not leave image {wanted.id[:19]} there")
        if have is not None:
            with contextlib.suppress(APIError, ImageNotFound):
                target.images.remove(have.id)  # the image the tag named before, when no container uses it
        seconds = time.monotonic() - started
        log.info("workspace image %s loaded into %s in %.1fs", tag, host, seconds)
        return _info(loaded, tag, built=False), seconds
    except DockerException as exc:
        raise StackError(f"Docker error while copying the workspace image {tag} to {host}: {exc}") from exc
    finally:
        source.close()
        target.close()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = sys.argv[1:] if argv is None else argv
    rebuild = "--rebuild" in args
    tags = [a for a in args if not a.startswith("-")]
    try:
        info = ensure_workspace_image(tags[0] if tags else DEFAULT_TAG, rebuild=rebuild)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{info.tag} {info.id} {info.size / 1e6:.0f}MB built={info.built}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
