"""``ise export PATH --format reference|openai|sharegpt --out FILE``: a dataset in a trainer's format.

ise export out/run-abc --format openai --out train.jsonl
ise export out/run-abc --format reference --out reference.jsonl --success-only
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from services.cli.stats_cmd import SHAPES


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``export`` to the ``ise`` sub-command parsers."""
    export = subparsers.add_parser(
        "export",
        help="write a dataset in the reference's, OpenAI's or ShareGPT's format",
        description="Convert every record of PATH (see services/dedup/export.py for each format's fields) and "
        "write one JSON object per line to --out. reference: the ISE reference implementation's middle "
        "format (tool arguments as objects); openai: OpenAI chat fine-tuning ({messages, tools}); sharegpt: "
        "conversations with function_call/observation turns, system and tools (LLaMA-Factory). " + SHAPES + " The "
        "whole input is checked first: a bad line stops with an error naming its file and line and --out is "
        "not written (exit status 2).",
    )
    export.add_argument("path", type=Path, metavar="PATH", help="a run folder, a folder or a file")
    export.add_argument("--format", required=True, choices=("reference", "openai", "sharegpt"))
    export.add_argument("--out", type=Path, required=True, help="the JSONL file to write (replaced if it exists)")
    export.add_argument("--success-only", action="store_true", help="only successful trajectories (as the reference)")
    return export


def run(args: argparse.Namespace) -> int:
    """Run ``ise export``; returns the exit status (bad input raises ConfigError: status 2)."""
    from services.common.errors import ConfigError
    from services.dedup.export import convert
    from services.dedup.record_reader import dataset_files, read_records, summarize

    def warn(message: str) -> None:
        print(f"ise: warning: {message}", file=sys.stderr)

    def checked(value: Any) -> tuple[Any, str | None]:
        return value, summarize(value).verdict  # ValueError for an unknown shape: named by file and line

    files = dataset_files(args.path)
    for path in files:  # check everything before writing anything
        read_records([path], warn, checked)
    if args.out.resolve() in {f.resolve() for f in files}:
        raise ConfigError(f"--out {args.out} is one of the input files; write somewhere else")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.{uuid.uuid4().hex[:8]}.tmp")
    written = skipped = 0
    try:
        with tmp.open("w", encoding="utf-8") as out:
            for path in files:
                for record, verdict in read_records([path], warn, checked):
                    if args.success_only and verdict not in (None, "success"):
                        skipped += 1
                        continue
                    out.write(json.dumps(convert(record, args.format), ensure_ascii=False) + "\n")
                    written += 1
        os.replace(tmp, args.out)
    finally:
        tmp.unlink(missing_ok=True)
    note = f" ({skipped} not successful, left out)" if skipped else ""
    print(f"wrote {written} record(s) in the {args.format} format to {args.out}{note}")
    return 0
