"""Benchmark: ``ise view`` on a 25,000-trajectory dataset (the paper's size).

Not a test. Replicates the records of a real run (default: the newest ``out/run-*`` holding
shards; make one with ``ise run --llm scripted --intents 6``) into a temporary dataset of N
records, each with its own episode id and intent text (a distinct word per record) and the
verdict cycling over success / failed / max_turns / blocked, so that filters have something to
choose. Then, in this process:

* baseline: a plain ``json.loads`` of every line of the dataset (what any viewer must at least
  read once, and what one without an index would redo for every page);
* the index build (``DatasetIndex.build``: read, summarise, index), its ratio to the baseline and
  the memory it holds (max RSS growth);
* list pages through the real HTTP server over many filter combinations (each facet value,
  verdict x domain pairs, searches for common and rare words): the first page of each (filtered,
  searched and counted from the index) and its middle and last pages (the selection cached);
* trajectory pages (a record read back by offset and rendered), p50/p99.

    .venv/bin/python bench/bench_viewer.py [--source out/run-abc] [--records 25000]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.dedup.record_reader import dataset_files, read_records
from services.viewer.index import DatasetIndex, Query
from services.viewer.server import ViewerServer

VERDICTS = ("success", "failed", "max_turns", "blocked")


def newest_run(root: Path) -> Path | None:
    runs = [p for p in root.glob("run-*") if any(p.glob("trajectories-*.jsonl"))]
    return max(runs, key=lambda p: p.stat().st_mtime) if runs else None


def replicate(records: list[dict[str, Any]], n: int, out: Path) -> int:
    """N records from ``records``, each with its own ids, intent word and a cycling verdict; bytes written."""
    written = 0
    with out.open("w", encoding="utf-8") as handle:
        for i in range(n):
            record = json.loads(json.dumps(records[i % len(records)]))
            tag = f"variant{i:05d}"
            meta = record.setdefault("metadata", {})
            meta["episode_id"] = record["session_id"] = f"bench-{i:05d}"
            meta["verdict"] = VERDICTS[i % len(VERDICTS)]
            record["status"] = "completed" if meta["verdict"] == "success" else meta["verdict"]
            text = f"{tag}: {meta['intent']['text']}"
            meta["intent"]["text"] = record["intent"] = text
            meta["intent"]["id"] = record["intent_id"] = f"intent-{tag}"
            first_user = next(m for m in record["messages"] if m["role"] == "user")
            first_user["content"] = text
            line = json.dumps(record, ensure_ascii=False) + "\n"
            handle.write(line)
            written += len(line.encode())
    return written


def baseline(path: Path) -> float:
    started = time.perf_counter()
    with path.open("rb") as handle:
        for line in handle:
            json.loads(line)
    return time.perf_counter() - started


def queries(index: DatasetIndex) -> list[Query]:
    """Many filter combinations: each facet value alone, verdict x domain pairs, searches."""
    counts = index.select(Query()).counts
    out = [Query()]
    for i, facet in enumerate(("verdict", "domain", "complexity", "tool", "turns")):
        for value, _ in counts[facet]:
            filters: list[str | None] = [None] * 5
            filters[i] = value
            out.append(Query(tuple(filters)))
    for verdict, _ in counts["verdict"]:
        out += [Query((verdict, domain, None, None, None)) for domain, _ in counts["domain"][:4]]
    words = ["plan", "report", "csv", "variant00042", "variant1", "nothing-matches-this"]
    return out + [Query(text=w) for w in words] + [Query(("failed", None, None, None, None), "report")]


def timed_get(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url) as response:
        body = response.read()
        assert response.status == 200 and body
    return time.perf_counter() - started


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=None, help="a run folder or dataset to replicate")
    parser.add_argument("--records", type=int, default=25_000)
    parser.add_argument("--opens", type=int, default=200, help="trajectory page requests")
    args = parser.parse_args()
    source = args.source or newest_run(Path("out"))
    if source is None:
        print("no run under out/ holds trajectories: run `ise run --llm scripted --intents 6` or pass --source")
        return 2
    records = read_records(dataset_files(source), lambda m: None)
    rng = random.Random(0)
    with tempfile.TemporaryDirectory(prefix="ise-bench-viewer-") as tmp:
        data = Path(tmp) / "trajectories-bench-00000.jsonl"
        size = replicate(records, args.records, data)
        print(f"dataset: {args.records} records ({size / 2**20:.0f} MiB) replicated from {len(records)} of {source}")
        base = min(baseline(data) for _ in range(2))
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        index = DatasetIndex.build([data], progress=False)
        built = time.perf_counter() - started
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024
        print(f"baseline json.loads of every line: {base:.2f} s")
        print(f"index build: {built:.2f} s ({built / base:.1f}x the baseline); max RSS grew {grown:.0f} MiB")

        server = ViewerServer(index, str(data))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            timed_get(server.url)  # templates compiled once
            base_url = server.url.rstrip("/")
            cold, warm = [], []
            # the unfiltered list was just computed (warm-up): measured last, once it left the cache
            for query in [*queries(index)[1:], Query()]:
                cold.append(timed_get(base_url + query.url()))  # first page: filter, search and count
                last = index.select(query).pages
                warm += [timed_get(base_url + query.url(page=p)) for p in sorted({max(1, last // 2), last} - {1})]
            opens = [timed_get(f"{server.url}t/{rng.randrange(len(index.entries))}") for _ in range(args.opens)]
        finally:
            server.shutdown()
            server.server_close()
    for name, times in (("first page of a filter/search (computed)", cold), ("later pages (cached)", warm)):
        print(
            f"list, {name}: {len(times)} requests, p50 {pct(times, 50) * 1000:.1f} ms, "
            f"p99 {pct(times, 99) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms"
        )
    p99 = pct(cold + warm, 99)
    print(f"  the computed p50 is {base / pct(cold, 50):.0f}x faster than the baseline's one pass over the data")
    print(f"trajectory pages ({len(opens)}): p50 {pct(opens, 50) * 1000:.1f} ms, p99 {pct(opens, 99) * 1000:.1f} ms")
    return 0 if p99 < 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
