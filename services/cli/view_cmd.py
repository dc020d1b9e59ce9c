"""``ise view PATH``: browse a dataset in a local web page.

ise view out/run-abc                 # a run folder; prints http://127.0.0.1:PORT/
ise view data.jsonl --port 8765      # one file, on a port of your choice
ise view out/run-abc --open          # and open it in the default browser
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from services.cli.stats_cmd import SHAPES


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535; 0 or no --port: a free one)")
    return int(text)


HELP = "browse a dataset in a local web page (list, filters, search, each trajectory)"
DESCRIPTION = (
    "Index every record of PATH once (a progress bar on the terminal), then serve a web page on 127.0.0.1 and "
    "print its address: a list with filters and counts by verdict, domain, complexity, tool called and user "
    "turns, a search over the intents, and each trajectory as a conversation (tool calls and results, exit "
    "codes, durations, edit diffs, the intent's persona, domains, tasks and complexity, the verdict and its "
    "reason, role-drift and verification flags, skills, token usage). Only loopback is served, and nothing is "
    "fetched from the internet. " + SHAPES + " Lines that are not records (e.g. a last line cut off mid-write) "
    "are skipped and counted on the page. A PATH with nothing to read stops with an error (exit status 2). "
    "Stops with Ctrl-C."
)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``view`` to the ``ise`` sub-command parsers."""
    view = subparsers.add_parser("view", help=HELP, description=DESCRIPTION)
    view.add_argument("path", type=Path, metavar="PATH", help="a run folder, a folder or a file")
    view.add_argument("--port", type=_port, default=0, help="port on 127.0.0.1 (default: a free one)")
    view.add_argument("--open", action="store_true", help="also open the page in the default browser")
    return view


def run(args: argparse.Namespace) -> int:
    """Run ``ise view`` until interrupted; bad input raises ConfigError (exit status 2)."""
    from services.common.errors import ConfigError
    from services.dedup.record_reader import SHAPE_SHORT, dataset_files
    from services.viewer.index import DatasetIndex
    from services.viewer.server import ViewerServer

    files = dataset_files(args.path)
    index = DatasetIndex.build(files)
    if not index.entries:
        first = f"; the first: {index.skipped[0]}" if index.skipped else ""
        raise ConfigError(
            f"{args.path} holds no trajectory records ({len(index.skipped)} line(s) skipped{first}); "
            f"pass a run folder (out/<run_id>), a folder or a file of {SHAPE_SHORT}"
        )
    server = ViewerServer(index, str(args.path), args.port)
    skipped = f", {len(index.skipped)} line(s) skipped (listed on the page)" if index.skipped else ""
    print(f"ise view: {len(index.entries)} trajectories from {len(files)} file(s){skipped}")
    print(f"browse {server.url}  (Ctrl-C to stop)", flush=True)
    if args.open:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print(file=sys.stderr)
    finally:
        server.server_close()
    return 0
