"""A btrfs data root for the dockerd the stack starts, so every workspace gets a real disk quota.

Docker enforces ``--storage-opt size`` (a container's total disk) only on some storage drivers:
btrfs (qgroups), overlay2 over xfs mounted with ``pquota``, zfs, devicemapper.  overlay2 on ext4,
the usual default, cannot; and this machine's kernel has no xfs quota support.  So when the
stack starts dockerd itself, it puts the daemon's data root on a btrfs file system in a sparse
loop file: ``~/.cache/ise/docker-btrfs.img`` (``ISE_DOCKER_DISK_GB``, default 48 GiB, never more
than the free space leaves room for; sparse, so it only takes what is written), mounted at
``~/.cache/ise/docker-btrfs`` (without write barriers, see ``MOUNT_OPTIONS``), and dockerd runs with ``--data-root=<mount>/docker
--storage-driver=btrfs``.

Quotas are btrfs *simple* quotas (kernel 6.7+), switched on with the ``BTRFS_IOC_QUOTA_CTL``
ioctl because Debian 12's btrfs-progs predates them.  Full qgroups were measured unusable
here: every container removal makes ``btrfs-cleaner`` account each extent shared with the
image (one core busy for minutes after a test run, creates of 5.6 s and removals of 4 s,
stale qgroups piling up).  Simple quotas charge each extent to the subvolume that wrote it,
so a container's quota counts only what it writes and removals stay cheap (16 concurrent
creates 2.9 s, a removal ~0.7 s).  On an older kernel no btrfs root is used at all.

Best effort: without root, ``mkfs.btrfs``, loop devices or the btrfs module, or with
``ISE_DOCKER_DISK_GB=0``, :func:`dockerd_flags` returns ``()`` with the reason logged, and the
daemon starts on its default data root (workspaces then run without a total disk quota, which
the executor reports).  A daemon the stack did not start is never changed.  The mount is left in
place when the daemon stops (``umount ~/.cache/ise/docker-btrfs`` removes it by hand).
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import struct
import subprocess
from pathlib import Path

from services.stack.errors import QuotaRootUnavailable
from services.stack.settings import StackSettings

log = logging.getLogger(__name__)

MACHINE_DIR = Path.home() / ".cache" / "ise"
IMAGE_PATH = MACHINE_DIR / "docker-btrfs.img"
MOUNT_POINT = MACHINE_DIR / "docker-btrfs"
DEFAULT_GB = 48
MIN_GB = 4
FREE_RESERVE_GB = 4  # never size the file into the last few GiB of the host disk
_TIMEOUT_S = 120
SIMPLE_QUOTA_MARKER = ".ise-simple-quota"
# No write barriers: the data root holds only ephemeral workspaces and a rebuildable image, and
# dockerd's many small fsyncs (a rename, a start) cost ~2x more with them (warm-pool takes,
# 16 at once: p50 785 -> 428 ms).  After a host crash, delete the image file to start over.
MOUNT_OPTIONS = "nobarrier"
# _IOWR(0x94, 40, struct btrfs_ioctl_quota_ctl_args {u64 cmd; u64 status;})
_QUOTA_CTL = (3 << 30) | (16 << 16) | (0x94 << 8) | 40
_QUOTA_DISABLE, _QUOTA_ENABLE_SIMPLE = 2, 4


def wanted_gb() -> int:
    """The requested size in GiB (``ISE_DOCKER_DISK_GB``); 0 turns the btrfs root off."""
    raw = StackSettings().docker_disk_gb.strip() or str(DEFAULT_GB)
    try:
        value = int(raw)
    except ValueError as exc:
        raise QuotaRootUnavailable(f"ISE_DOCKER_DISK_GB={raw!r} is not a whole number of GiB") from exc
    if value < 0:
        raise QuotaRootUnavailable(f"ISE_DOCKER_DISK_GB={value} must be >= 0")
    return value


def is_mounted(mount_point: Path = MOUNT_POINT) -> bool:
    """True when a btrfs file system is mounted at ``mount_point``."""
    target = str(mount_point.resolve())
    try:
        with open("/proc/mounts", encoding="utf-8") as fh:
            rows = [line.split() for line in fh]
    except OSError:
        return False
    return any(len(row) > 2 and row[1] == target and row[2] == "btrfs" for row in rows)


def _run(argv: list[str]) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise QuotaRootUnavailable(f"{argv[0]}: {exc}") from exc
    if done.returncode != 0:
        raise QuotaRootUnavailable(f"{' '.join(argv)} failed: {(done.stderr or done.stdout).strip()[-300:]}")


def _size_bytes(gb: int) -> int:
    MACHINE_DIR.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(MACHINE_DIR).free
    size = min(gb << 30, free - (FREE_RESERVE_GB << 30))
    if size < MIN_GB << 30:
        raise QuotaRootUnavailable(f"only {free >> 30} GiB free under {MACHINE_DIR}; need {MIN_GB + FREE_RESERVE_GB}")
    return size


def ensure_quota_root() -> Path:
    """Create (once) and mount the btrfs file system; return the dockerd data root inside it."""
    gb = wanted_gb()
    if gb == 0:
        raise QuotaRootUnavailable("ISE_DOCKER_DISK_GB=0")
    if not is_mounted():
        if os.geteuid() != 0:
            raise QuotaRootUnavailable("mounting a loop file system needs root")
        if shutil.which("mkfs.btrfs") is None:
            raise QuotaRootUnavailable("mkfs.btrfs is missing (apt-get install btrfs-progs)")
        if not IMAGE_PATH.exists():
            size = _size_bytes(gb)
            log.info("creating a %d GiB sparse btrfs file %s for Docker's data root", size >> 30, IMAGE_PATH)
            partial = IMAGE_PATH.with_suffix(".partial")
            with open(partial, "wb") as fh:
                fh.truncate(size)
            _run(["mkfs.btrfs", "-q", "-f", str(partial)])
            partial.rename(IMAGE_PATH)
        MOUNT_POINT.mkdir(parents=True, exist_ok=True)
        _run(["mount", "-o", f"loop,{MOUNT_OPTIONS}", str(IMAGE_PATH), str(MOUNT_POINT)])
    else:
        _run(["mount", "-o", f"remount,{MOUNT_OPTIONS}", str(MOUNT_POINT)])  # one mounted by an older version
    if not (MOUNT_POINT / SIMPLE_QUOTA_MARKER).exists():
        enable_simple_quotas(MOUNT_POINT)
        (MOUNT_POINT / SIMPLE_QUOTA_MARKER).touch()
    root = MOUNT_POINT / "docker"
    root.mkdir(exist_ok=True)
    return root


def enable_simple_quotas(mount_point: Path) -> None:
    """Switch the file system at ``mount_point`` to simple quotas (full qgroups, if on, are dropped)."""
    fd = os.open(mount_point, os.O_RDONLY)
    try:
        for command in (_QUOTA_DISABLE, _QUOTA_ENABLE_SIMPLE):  # enabling is a no-op while full qgroups are on
            try:
                fcntl.ioctl(fd, _QUOTA_CTL, bytearray(struct.pack("QQ", command, 0)))
            except OSError as exc:
                if command == _QUOTA_ENABLE_SIMPLE:
                    raise QuotaRootUnavailable(
                        f"this kernel ({os.uname().release}) cannot enable btrfs simple quotas (needs 6.7+): {exc}"
                    ) from exc
    finally:
        os.close(fd)


def dockerd_flags() -> tuple[str, ...]:
    """Flags that put a new dockerd on the btrfs root, or ``()`` (logged) when it cannot be had."""
    try:
        root = ensure_quota_root()
    except (QuotaRootUnavailable, OSError) as exc:
        log.warning(
            "Docker's data root stays on the default file system, so workspaces get no total disk quota: %s", exc
        )
        return ()
    return (f"--data-root={root}", "--storage-driver=btrfs")
