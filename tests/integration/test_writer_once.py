"""The dataset writer on a real filesystem: exactly once across writers that share the folder,
torn tails re-read, and no path built from an unsafe run id."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from services.dedup.errors import UnsafePathError
from services.dedup.writer import DatasetWriter, episode_ids_in

pytestmark = pytest.mark.integration


def record(episode: str) -> dict:
    return {"messages": [{"role": "user", "content": "hi"}], "metadata": {"episode_id": episode}}


def lines(run_dir: Path) -> list[str]:
    return [json.loads(line)["metadata"]["episode_id"] for p in sorted(run_dir.glob("*.jsonl")) for line in p.open()]


def test_two_writers_sharing_a_folder_write_each_episode_once(tmp_path: Path) -> None:
    """Two dedup replicas (as after a rebalance, or a redelivery to the other one) race on the
    same 40 episodes from 4 threads each; every episode lands exactly once."""
    writers = [DatasetWriter(tmp_path, "replica-a", shard_lines=7), DatasetWriter(tmp_path, "replica-b", shard_lines=7)]
    episodes = [f"ep-{i}" for i in range(40)]
    wrote: list[bool] = []

    def work(writer: DatasetWriter) -> None:
        wrote.extend(writer.write("run-1", ep, record(ep)) for ep in episodes)

    threads = [threading.Thread(target=work, args=(w,)) for w in writers for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(lines(tmp_path / "run-1")) == sorted(episodes)
    assert wrote.count(True) == len(episodes)


def test_a_torn_tail_from_a_crash_is_not_an_episode_and_the_next_write_follows_it(tmp_path: Path) -> None:
    writer = DatasetWriter(tmp_path, "a")
    assert writer.write("run-1", "ep-1", record("ep-1"))
    shard = next((tmp_path / "run-1").glob("*.jsonl"))
    with shard.open("a") as fh:
        fh.write('{"messages": [], "metadata": {"episode_id": "ep-2"')  # crash mid-write
    assert episode_ids_in(tmp_path / "run-1") == {"ep-1"}
    other = DatasetWriter(tmp_path, "b")
    assert not other.write("run-1", "ep-1", record("ep-1")), "seen in the other writer's shard"
    assert other.write("run-1", "ep-2", record("ep-2"))


@pytest.mark.parametrize("run_id", ["../../tmp/x", "/etc", "a/b", "..", ".", "", "run\n", "x" * 200])
def test_no_dataset_path_from_an_unsafe_run_id(tmp_path: Path, run_id: str) -> None:
    root = tmp_path / "out"
    with pytest.raises(UnsafePathError):
        DatasetWriter(root, "a").write(run_id, "ep-1", record("ep-1"))
    assert not any(p.is_file() for p in tmp_path.rglob("*"))
