"""The total disk quota of a workspace: Docker's ``--storage-opt size``, where the daemon can enforce it.

What ``size`` counts depends on the daemon's storage driver: zfs, devicemapper and btrfs with
full qgroups cap the container's whole root file system, image included, so the value is the
image's size plus ``disk_mb``; overlay2 over xfs with ``pquota`` and btrfs with simple quotas
(what ``ise stack up`` sets up) count only what the container writes, so it is ``disk_mb``.
On btrfs the narrow value is tried first: a full-qgroup daemon refuses it ("quota exceeded"
at create, the image alone being larger) and the image's size is added from then on.  Other
drivers (overlay2 on ext4, vfs) cannot cap a container at all.

The decision is made once per backend from ``docker info`` (and, for overlay2 on xfs, from the
first create: a daemon without ``pquota`` rejects the option, and the quota is then dropped).
Without support the workspace runs uncapped (the per-file cap still holds) and one warning says
how to get a quota - unless the quota is required, when creating a workspace fails instead.
``ise stack up`` starts its own daemon on a btrfs data root for this (``services/stack/quota_root.py``).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import docker
import docker.errors

from services.executor.errors import WorkspaceUnavailable

log = logging.getLogger(__name__)

WHOLE_ROOTFS_DRIVERS = ("zfs", "devicemapper")
HOW_TO = (
    "give Docker a storage driver that enforces --storage-opt size (btrfs, zfs, devicemapper, or overlay2 "
    "on xfs mounted with pquota; `ise stack up` starts its own dockerd on a btrfs data root), or set "
    "ISE_EXEC_DISK_MB=0 to run without a total disk quota"
)


class DiskQuota:
    """Per-backend decision: the ``storage_opt`` for new workspaces, or None."""

    def __init__(self, disk_mb: int, *, required: bool = False) -> None:
        self.disk_mb = disk_mb
        self.required = required
        self._lock = threading.Lock()
        self._mode: str | None = None  # "rootfs", "layer" or "none", once decided
        self._widened = False
        self.reason = ""

    @property
    def enforced(self) -> bool | None:
        """True/False once decided; None before the first workspace."""
        return None if self._mode is None else self._mode != "none"

    def storage_opt(self, client: docker.DockerClient, image: str) -> dict[str, str] | None:
        """The ``storage_opt`` to create a workspace of ``image`` with (None: no quota)."""
        if self.disk_mb <= 0:
            return None
        with self._lock:
            if self._mode is None:
                self.decide(client.info())
            mode = self._mode
        if mode == "layer":
            return {"size": f"{self.disk_mb}M"}
        if mode == "rootfs":
            image_mb = int(client.images.get(image).attrs.get("Size") or 0) >> 20
            # the image's extents, plus file-system metadata slack, plus what the episode may write
            return {"size": f"{image_mb + image_mb // 20 + 16 + self.disk_mb}M"}
        return None

    def decide(self, info: dict[str, Any]) -> None:
        """Settle the quota mode from a `docker info` answer (called once, by the first `storage_opt`)."""
        driver = str(info.get("Driver", "?"))
        backing = dict(info.get("DriverStatus") or []).get("Backing Filesystem", "?")
        if driver in WHOLE_ROOTFS_DRIVERS:
            self._mode = "rootfs"
        elif driver == "btrfs":
            self._mode = "layer"  # simple quotas; widened to "rootfs" if the daemon says otherwise
        elif driver == "overlay2" and backing == "xfs":
            self._mode = "layer"  # pquota is only known when the daemon accepts the option
        else:
            self._unsupported(f"the Docker daemon's storage driver is {driver} on {backing}")
        if self._mode != "none":
            log.info("workspaces get a total disk quota of %d MB (storage driver %s)", self.disk_mb, driver)

    def _unsupported(self, reason: str) -> None:
        self._mode = "none"
        self.reason = reason
        if self.required:
            return
        log.warning(
            "workspaces run WITHOUT a total disk quota (ISE_EXEC_DISK_MB=%d): %s. To get one, %s.",
            self.disk_mb,
            reason,
            HOW_TO,
        )

    def check_required(self) -> None:
        """Raise when a quota is required but cannot be had (after ``storage_opt`` decided)."""
        if self.required and self._mode == "none":
            raise WorkspaceUnavailable(
                f"a disk quota is required (ISE_EXEC_REQUIRE_DISK_QUOTA) but {self.reason}; {HOW_TO}"
            )

    def rejected(self, exc: docker.errors.APIError) -> bool:
        """True when ``exc`` is the daemon refusing the size option; the next ``storage_opt`` then
        widens a btrfs layer quota to the whole root file system, or drops the quota."""
        text = str(exc.explanation or exc).lower()
        if "storage-opt" not in text and "storage opt" not in text and "quota" not in text:
            return False
        with self._lock:
            if self._mode == "layer" and "qgroup" in text and not self._widened:
                self._mode, self._widened = "rootfs", True  # full qgroups: the image counts too
                log.info("the daemon's btrfs quotas count the image too: quota = image + %d MB", self.disk_mb)
            else:
                self._unsupported(f"the daemon refused --storage-opt size ({exc.explanation or exc})")
        return True
