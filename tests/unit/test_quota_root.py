"""Choosing dockerd's flags: the btrfs data root first (for disk quotas), plain flags as fallbacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.stack import docker_daemon, quota_root


def test_quota_flags_come_first_and_are_never_remembered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ISE_DOCKERD_FLAGS", raising=False)
    flags_file = tmp_path / "flags.json"
    monkeypatch.setattr(docker_daemon, "FLAGS_PATH", flags_file)
    quota = ("--data-root=/q/docker", "--storage-driver=btrfs")
    flags_file.write_text(json.dumps(["--iptables=false", *quota]))  # as an older version saved them
    candidates = docker_daemon._flag_candidates(quota)
    assert candidates[0] == (*quota, "--iptables=false")  # what worked here, on the quota root
    assert all("--storage-driver=vfs" not in c for c in candidates if quota[0] in c)  # one driver per set
    plain = docker_daemon._flag_candidates(())
    assert candidates[-len(plain) :] == plain and len(candidates) == 2 * len(plain) - 1  # then without it
    assert docker_daemon._flag_candidates(())[0] == ("--iptables=false",)


def test_forced_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISE_DOCKERD_FLAGS", "--bridge=none --debug")
    assert docker_daemon._flag_candidates(("--data-root=/q",)) == [("--bridge=none", "--debug")]


def test_disk_size_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ISE_DOCKER_DISK_GB", raising=False)
    assert quota_root.wanted_gb() == quota_root.DEFAULT_GB
    monkeypatch.setenv("ISE_DOCKER_DISK_GB", "0")
    assert quota_root.dockerd_flags() == ()  # turned off: the daemon keeps its default root
    for bad in ("lots", "-3"):
        monkeypatch.setenv("ISE_DOCKER_DISK_GB", bad)
        with pytest.raises(quota_root.QuotaRootUnavailable, match="ISE_DOCKER_DISK_GB"):
            quota_root.wanted_gb()
