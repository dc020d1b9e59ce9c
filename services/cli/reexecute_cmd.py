"""``ise reexecute PATH``: run recorded episodes' tool calls again, offline, and compare the results.

ise reexecute out/run-abc                      # every record of the run that made web requests
ise reexecute out/run-abc --episode ep-123     # one episode, whatever it did
ise reexecute data.jsonl --all --json          # every record, a JSON report on stdout
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from services.common.errors import ConfigError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    cmd = subparsers.add_parser(
        "reexecute",
        help="re-run recorded episodes' tool calls offline and compare the results",
        description="For each record, start a fresh workspace with the same skills, arm the egress proxy to "
        "answer the episode's web requests from its recording only (web/<episode>.jsonl next to the shard; "
        "nothing reaches the network), run every recorded tool call in order and compare each result with "
        "the recorded one (timings and pids blanked). Exit status 0 when every web result is identical, 1 "
        "when one differs, 2 for bad input. Uses the embedded stack (started if needed).",
    )
    cmd.add_argument("path", type=Path, metavar="PATH", help="a run folder or a .jsonl dataset file")
    cmd.add_argument("--episode", action="append", default=[], help="only this episode (session_id); repeatable")
    cmd.add_argument("--all", action="store_true", help="every record, also those without web requests")
    cmd.add_argument("--json", action="store_true", help="print the report as JSON")
    return cmd


def _records(path: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every trajectory record of ``path`` with the file it is in (its web recording lies beside it)."""
    from services.dedup.record_reader import dataset_files, read_records

    if not path.exists():
        raise ConfigError(f"{path} does not exist: give a run folder (out/<run_id>) or a .jsonl file")

    def trajectory(value: Any) -> dict[str, Any]:
        if not isinstance(value, dict) or not isinstance(value.get("messages"), list):
            raise ValueError("not a trajectory record (no messages list)")
        return value

    def warn(message: str) -> None:
        print(f"ise: warning: {message}", file=sys.stderr)

    return [(file, record) for file in dataset_files(path) for record in read_records([file], warn, trajectory)]


def run(args: argparse.Namespace) -> int:
    from services.common.logs import setup_logging
    from services.executor.reexecute import load_recording, reexecute
    from services.executor.runtime_prompt import AgentWorld
    from services.executor.settings import ExecutorSettings
    from services.executor.tools import tool_schemas
    from services.executor.workspace.docker_backend import DockerWorkspaceBackend
    from services.stack import stack

    setup_logging("reexecute")
    chosen = [
        (f, r)
        for f, r in _records(args.path)
        if (not args.episode or r.get("session_id") in args.episode)
        and (args.all or args.episode or ((r.get("metadata") or {}).get("web") or {}).get("recording"))
    ]
    if not chosen:
        raise ConfigError(f"no record of {args.path} to re-execute (none made web requests; --all takes every one)")
    os.environ.update(stack.up().env())
    settings = ExecutorSettings()
    web = settings.web_access()
    if web is None:
        raise ConfigError("re-execution needs the egress proxy: the stack runs without it (ISE_WEB=false?)")
    backend = DockerWorkspaceBackend(
        settings.image, settings.limits(), name_prefix="ise-reexec", egress=settings.workspace_egress_config()
    )
    world = AgentWorld.load(tool_schemas(settings.tools), settings.skills_dir, "tools")
    reports = []
    print(f"re-executing {len(chosen)} episode(s) offline", file=sys.stderr)
    for number, (file, record) in enumerate(chosen, 1):
        report = reexecute(record, load_recording(file, record), backend, web, world)
        web_calls = [c for c in report.calls if c.name in ("web_search", "web_fetch")]
        print(
            f"[{number}/{len(chosen)}] {report.episode_id}: {len(report.calls)} calls, "
            f"{len(report.calls) - len(report.differing)} identical; web {sum(c.same for c in web_calls)}"
            f"/{len(web_calls)} identical; {len(report.exchanges)} web requests, "
            f"{'all' if report.offline() else 'NOT all'} answered from the recording",
            file=sys.stderr,
        )
        reports.append(report)
    if args.json:
        print(json.dumps([_as_json(r) for r in reports], indent=2))
    else:
        for report in reports:
            for call in report.differing:
                print(f"{report.episode_id} {call.call_id} {call.name}: differs")
                print(f"  recorded: {call.recorded[:300]!r}\n  replayed: {call.replayed[:300]!r}")
    return 0 if all(r.web_identical() and r.offline() for r in reports) else 1


def _as_json(report: Any) -> dict[str, Any]:
    return {
        "episode_id": report.episode_id,
        "calls": len(report.calls),
        "identical": len(report.calls) - len(report.differing),
        "web_identical": report.web_identical(),
        "differing": [
            {"call_id": c.call_id, "name": c.name, "recorded": c.recorded, "replayed": c.replayed}
            for c in report.differing
        ],
    }
