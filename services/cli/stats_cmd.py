"""``ise stats PATH [PATH ...]``: the paper's table and the cost for one dataset, or several side by side.

ise stats out/run-abc                     # a run folder: table, saved as out/run-abc/stats.json
ise stats reference/ out/run-abc --all    # two datasets side by side, every verdict
ise stats data.jsonl --json               # the figures as JSON on stdout
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

SHAPES = (
    "PATH is a run folder (out/<run_id>), any folder of .jsonl/.json files, or one such file; records "
    'are OpenAI chat messages ({"messages": [...]}) with or without ISE metadata, including the ISE '
    "reference implementation's middle format (status, total_steps, tool arguments as objects)."
)


COST = (
    "The cost, over every verdict: each record's token usage (agent, user model and the intent's rendering) "
    " priced per model by services/common/llm/prices.yaml, overridden and extended by your own "
    "file named by ISE_PRICES_FILE; total, mean and median per trajectory, per verdict; a model without "
    "a price shows n/a with the file to edit, a malformed price file stops with exit status 2."
)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``stats`` to the ``ise`` sub-command parsers."""
    stats = subparsers.add_parser(
        "stats",
        help="the paper's statistics of one dataset, or several side by side",
        description="Count user turns, messages (without the system message), tool calls and distinct tools "
        "per trajectory from the messages themselves (mean, median, p90, max; the paper's figure beside "
        "them), the user-turn histogram, non-zero exit and failed-tool shares, and the verdict, domain and "
        "tool mixes. By default over successful trajectories (records without a verdict count), as the "
        "paper; --all over every verdict. " + COST + " " + SHAPES + " With one PATH the figures are saved as "
        "PATH/stats.json (a file: <name>.stats.json beside it) unless --no-save. A last line cut off "
        "mid-write is skipped with a warning; any other unreadable line stops with an error naming its "
        "file and line (exit status 2).",
    )
    stats.add_argument("paths", type=Path, nargs="+", metavar="PATH", help="a run folder, a folder or a file")
    stats.add_argument("--all", action="store_true", help="every verdict, not only successful trajectories")
    stats.add_argument("--json", action="store_true", help="print the figures as JSON instead of the table")
    stats.add_argument("--no-save", action="store_true", help="do not write the stats.json file")
    return stats


def run(args: argparse.Namespace) -> int:
    """Run ``ise stats``; returns the exit status (bad input raises ConfigError: status 2)."""
    from services.dedup.cost import load_prices
    from services.dedup.stats import Selection, dataset_stats, paper_figures, save_stats, stats_path_for
    from services.dedup.stats_table import format_tables

    def warn(message: str) -> None:
        print(f"ise: warning: {message}", file=sys.stderr)

    selection: Selection = "all" if args.all else "success"
    prices = load_prices()  # a bad price file stops here, before any dataset is read
    named = [(str(path), dataset_stats(path, warn, selection, prices)) for path in args.paths]
    if args.json:
        body: dict[str, Any] = named[0][1] if len(named) == 1 else {"datasets": [{"path": p, **s} for p, s in named]}
        print(json.dumps({**body, "paper": paper_figures()}, indent=2, sort_keys=True))
    else:
        print(format_tables(named))
        print("\n".join(f"browse: ise view {path}" for path in args.paths))
    if len(named) > 1 or args.no_save:
        return 0
    target = stats_path_for(args.paths[0])
    try:
        path = save_stats(target, named[0][1])
    except OSError as exc:
        warn(f"could not save the statistics as {target}: {exc.strerror or exc}")
        return 0
    if not args.json:
        print(f"\n(saved as {path})")
    return 0
