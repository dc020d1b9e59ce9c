"""Room to write on a path's file system, counting the disk under a loop-mounted image file.

Owns the free-space check that runs before image builds.  Docker's data root here is usually a
btrfs file system in a sparse loop file (``quota_root.py``): its ``df`` shows the file's nominal
size, while what it can really take is bounded by the disk that holds the file, so both are
checked.  A read-only file system (what btrfs turns into when it fills up) is refused outright.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from services.stack.procs import StackError

log = logging.getLogger(__name__)

GB = 1 << 30
_HINT = (
    "free some space (`docker image prune`, `docker container prune`, or remove images you do not need with "
    "`docker image rm`), then retry"
)


def _mount_source(path: Path) -> tuple[str, str]:
    """(device, mount point) of the file system that holds ``path`` (the longest matching mount)."""
    best = ("", "")
    target = str(path.resolve())
    for line in Path("/proc/self/mounts").read_text().splitlines():
        device, mount = line.split()[:2]
        mount = mount.replace("\\040", " ")
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best[1]):
            best = (device, mount)
    return best


def backing_file(path: Path) -> Path | None:
    """The image file behind ``path``'s file system when it is a loop device, else None."""
    device, _ = _mount_source(path)
    if not device.startswith("/dev/loop"):
        return None
    try:
        return Path((Path("/sys/block") / Path(device).name / "loop" / "backing_file").read_text().strip())
    except OSError:
        return None


def require_free(path: str | Path, need: int, *, what: str = "Docker's data root") -> None:
    """Raise :class:`StackError` unless ``path`` (and the disk under it, for a loop file) has
    ``need`` bytes free and is writable.  A path not on this machine (a remote daemon) is skipped."""
    path = Path(path)
    if not path.exists():
        log.warning("cannot check free space of %s %s: not on this machine", what, path)
        return
    if os.statvfs(path).f_flag & os.ST_RDONLY:
        raise StackError(
            f"{what} {path} is read-only (a btrfs file system that filled up turns read-only): "
            "stop the Docker daemon, remove its data root's image file (`ise stack down`, then see "
            "services/stack/quota_root.py) and start again"
        )
    checks = [(path, what)]
    image = backing_file(path)
    if image is not None:
        checks.append((image.parent, f"the disk under {what} (its file system is the file {image})"))
    for place, label in checks:
        free = shutil.disk_usage(place).free
        log.info("free space: %.1f GB on %s (%s), need %.1f GB", free / GB, place, label, need / GB)
        if free < need:
            raise StackError(
                f"not enough space on {label}: {free / GB:.1f} GB free, {need / GB:.1f} GB needed; {_HINT}"
            )
