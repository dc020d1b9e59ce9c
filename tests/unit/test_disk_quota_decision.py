"""How the executor decides whether a Docker daemon can cap a workspace's disk (no daemon needed)."""

from __future__ import annotations

import docker.errors
import pytest

from services.executor.errors import WorkspaceUnavailable
from services.executor.workspace.disk_quota import DiskQuota


def test_a_required_quota_fails_loudly_where_it_cannot_be_had() -> None:
    quota = DiskQuota(100, required=True)
    quota.decide({"Driver": "overlay2", "DriverStatus": [["Backing Filesystem", "extfs"]]})
    assert quota.enforced is False and "overlay2 on extfs" in quota.reason
    with pytest.raises(WorkspaceUnavailable, match="ISE_EXEC_DISK_MB=0"):
        quota.check_required()
    lenient = DiskQuota(100)
    lenient.decide({"Driver": "btrfs", "DriverStatus": []})
    assert lenient.enforced is True
    lenient.check_required()  # nothing to complain about


def test_drivers_that_cap_the_whole_rootfs_or_only_the_layer() -> None:
    for driver, backing, enforced in (("zfs", "zfs", True), ("overlay2", "xfs", True), ("vfs", "extfs", False)):
        quota = DiskQuota(10)
        quota.decide({"Driver": driver, "DriverStatus": [["Backing Filesystem", backing]]})
        assert quota.enforced is enforced, driver
    assert DiskQuota(0).enforced is None  # decided only when a workspace is created with a quota


def test_a_full_qgroup_btrfs_daemon_widens_the_quota_then_a_refusing_one_drops_it() -> None:
    quota = DiskQuota(100)
    quota.decide({"Driver": "btrfs", "DriverStatus": []})
    too_small = docker.errors.APIError("500", explanation="Failed to limit qgroup for &{}: disk quota exceeded")
    assert quota.rejected(too_small) and quota.enforced  # now image size + 100 MB
    assert quota.rejected(too_small) and not quota.enforced  # refused again: no quota
    assert not DiskQuota(100).rejected(docker.errors.APIError("500", explanation="no such image"))
