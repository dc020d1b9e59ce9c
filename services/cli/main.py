"""The ``ise`` command: run a generation, run one service, manage the local stack, read stats.

ise run                 generate a small dataset end to end on the embedded stack
ise service NAME        run one long-running service (dedup | simulator | executor)
ise job intent          run the intent job of one run (publishes its intents, then exits)
ise stack up|down|status
ise stack docker-up|docker-down [NAME]   an extra dockerd (own socket and data root) for executor replicas
ise stats PATH [PATH]   the paper's statistics of datasets (ours, the reference's, any OpenAI messages)
ise view PATH           browse a dataset in a local web page (filters, search, each trajectory)
ise export PATH --format reference|openai|sharegpt --out FILE   a dataset in a trainer's format
ise reexecute PATH      re-run recorded episodes' tool calls offline (web from their recordings)
ise replay --rebuild|--rescore|--regenerate RUN   a run's dataset, figures or Stages 2-3 again, from the log
ise docs                write the AsyncAPI document of each service
ise intents import|export   intents.jsonl in the reference layout, into or out of a run
ise diversity POOL.jsonl    Vendi (q=1,2,inf; per cell), Distinct-N, Vendi-vs-size curve (PNG)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from services.cli import diversity_cmd, export_cmd, intents_cmd, reexecute_cmd, replay_cmd, stats_cmd, view_cmd
from services.cli.argtypes import positive_float, positive_int, run_id_arg
from services.common.contracts.envelope import is_safe_id
from services.common.errors import ConfigError, ISEError
from services.common.logs import setup_logging
from services.stack.procs import StackError

SERVICES = ("dedup", "simulator", "executor")  # = services.common.runner.SERVICES (not imported: fast --help)
JOBS = ("intent",)  # = services.common.runner.JOBS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ise",
        description="ISE-Trace: synthesize execution-grounded, multi-turn OS-agent trajectories "
        "(Intent -> Simulate -> Execute) over Kafka, Redis, Docker and gRPC.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Settings come from the environment: ISE_KAFKA_*, ISE_REDIS_*, ISE_LLM_<ROLE>_*, "
        "ISE_INTENT_*, ISE_DEDUP_*, ISE_SIM_*, ISE_EXEC_* (see README.md).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="generate a dataset end to end on the embedded stack",
        description="Start (or reuse) the embedded stack, run the four services, generate N intents, "
        "simulate and execute them, and write the dataset to OUT/<run_id>/.",
    )
    run.add_argument("--intents", type=positive_int, default=5, help="intents to generate (default 5)")
    run.add_argument("--seed", type=int, default=0, help="sampling seed (same seed, same intents)")
    run.add_argument(
        "--llm",
        default="auto",
        choices=("auto", "openai", "scripted", "local"),
        help="auto: your endpoint if OPENAI_BASE_URL or ISE_LLM_<ROLE>_BASE_URL is set, else the small "
        "local model; scripted: deterministic replies for pipeline checks",
    )
    run.add_argument("--scenario", default="default", help="script scenario for --llm scripted")
    run.add_argument(
        "--agent",
        default="builtin",
        choices=("builtin", "external"),
        help="who plays the agent: the built-in LLM loop (default), or external agents that connect to the "
        "executor's gRPC Episodes API (the address and a token are printed; see services/clients/example_agent.py)",
    )
    run.add_argument(
        "--executors",
        type=positive_int,
        default=1,
        help="executor replicas (default 1); each has its own gRPC port, any of them serves any agent",
    )
    run.add_argument(
        "--docker-host",
        action="append",
        default=None,
        metavar="DOCKER_HOST",
        help="a Docker daemon for the executor replicas (repeat: replica i uses the (i mod n)-th; default: "
        "the stack's). Each replica's workspaces live on its own daemon; the workspace image is loaded into "
        "each first. `ise stack docker-up NAME` starts an extra local daemon and prints its DOCKER_HOST",
    )
    run.add_argument("--out", type=Path, default=Path("out"), help="dataset root (default ./out)")
    run.add_argument("--max-turns", type=positive_int, default=None, help="user turns per episode (ISE_SIM_MAX_TURNS)")
    run.add_argument("--timeout", type=positive_float, default=1800, help="seconds before the run is abandoned")
    run.add_argument("--run-id", type=run_id_arg, default=None, help="run id (default: a new one)")

    service = sub.add_parser(
        "service",
        help="run one long-running service in the foreground",
        description="Run one service until SIGTERM/SIGINT. Settings come from ISE_* variables; an unknown "
        "ISE_* variable stops it at start.",
    )
    service.add_argument("name", choices=SERVICES)
    job = sub.add_parser(
        "job",
        help="run a job (the intent job: render one run's intents, publish them, exit)",
        description="Run a job to completion. The intent job renders ISE_INTENT_COUNT intents for the run "
        "given by --run-id (or ISE_RUN_ID) and publishes them on ise.intents.proposed.",
    )
    job.add_argument("name", choices=JOBS)
    job.add_argument("--run-id", type=run_id_arg, default=None, help="the run the intents belong to (or ISE_RUN_ID)")

    stack = sub.add_parser(
        "stack",
        help="manage the embedded Kafka, Redis, Docker and workspace image",
        description="up: start what is missing and print the settings to use it; down: stop what `up` "
        "started, and stop and delete every extra dockerd; status: one line per server. docker-up NAME: "
        "start an extra dockerd on its own socket, data root and exec root (no container network), load "
        "the workspace image into it and print its DOCKER_HOST, for an executor replica of its own "
        "(`ise run --executors 2 --docker-host ... --docker-host ...`); docker-down NAME: stop it and "
        "delete its files.",
    )
    stack.add_argument("action", choices=("up", "down", "status", "docker-up", "docker-down"))
    stack.add_argument(
        "name", nargs="?", default=None, help="with docker-up/docker-down: the extra daemon's name (default second)"
    )
    stack.add_argument("--no-image", action="store_true", help="with up or docker-up: skip the workspace image")

    intents_cmd.add_parser(sub)
    diversity_cmd.add_parser(sub)

    docs = sub.add_parser("docs", help="write each service's AsyncAPI document (docs/asyncapi/)")
    docs.add_argument("--out", type=Path, default=None, help="folder (default: docs/asyncapi in the checkout)")

    stats_cmd.add_parser(sub)
    view_cmd.add_parser(sub)
    export_cmd.add_parser(sub)
    reexecute_cmd.add_parser(sub)
    replay_cmd.add_parser(sub)
    return parser


def _service(name: str) -> int:
    import importlib

    from services.common.metrics import serve_metrics
    from services.common.runner import SERVICES as MODULES
    from services.common.runner import run

    setup_logging(name)
    serve_metrics(name)
    run(importlib.import_module(MODULES[name]).create_app())
    return 0


def _job(name: str, run_id: str | None) -> int:
    import asyncio
    import importlib

    from services.common.metrics import serve_metrics
    from services.common.runner import JOBS as MODULES

    setup_logging(name)
    serve_metrics(name)
    run_id = run_id or os.environ.get("ISE_RUN_ID")
    if not run_id:
        raise ConfigError(f"the {name} job needs a run id: --run-id RUN or ISE_RUN_ID")
    if not is_safe_id(run_id):
        raise ConfigError(f"ISE_RUN_ID={run_id!r} is not a usable run id (letters, digits and _.:- only)")
    asyncio.run(importlib.import_module(MODULES[name]).run_job(run_id))
    return 0


def _stack(action: str, name: str | None, no_image: bool) -> int:
    from services.stack import extra_docker, stack

    setup_logging("stack")
    if name is not None and not action.startswith("docker-"):
        raise ConfigError(f"`ise stack {action}` takes no name; only docker-up and docker-down do")
    if action == "docker-up":
        extra = extra_docker.up(name or extra_docker.DEFAULT_NAME, with_image=not no_image)
        print(f"DOCKER_HOST={extra.host}")
    elif action == "docker-down":
        gone = extra_docker.down(name or extra_docker.DEFAULT_NAME)
        print("stopped and deleted" if gone else "not running; its files (if any) are deleted")
    elif action == "up":
        endpoints = stack.up(with_image=not no_image)
        for key, value in endpoints.env().items():
            print(f"{key}={value}")
    elif action == "down":
        print("stopped:", ", ".join(stack.down()) or "nothing")
    else:
        for name, state, address in stack.status():
            print(f"{name:8} {state:14} {address}")
    return 0


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        from services.cli.run_cmd import run_command

        return run_command(args)
    if args.command == "service":
        return _service(args.name)
    if args.command == "job":
        return _job(args.name, args.run_id)
    if args.command == "stack":
        return _stack(args.action, args.name, args.no_image)
    if args.command == "diversity":
        return diversity_cmd.run(args)
    if args.command == "intents":
        return intents_cmd.run(args)
    if args.command == "export":
        return export_cmd.run(args)
    if args.command == "reexecute":
        return reexecute_cmd.run(args)
    if args.command == "replay":
        return replay_cmd.run(args)
    if args.command == "view":
        return view_cmd.run(args)
    if args.command == "docs":
        from services.cli.docs_cmd import DOCS_DIR, write_docs

        for path in write_docs(args.out or DOCS_DIR):
            print(path)
        return 0
    return stats_cmd.run(args)


def main(argv: list[str] | None = None) -> int:
    """Run ``ise``; returns the exit status: 2 for bad input (a ConfigError or bad settings in the
    environment), 1 for any other ISE error (e.g. a broker that cannot be reached). Both print one
    ``ise: error: ...`` paragraph; any other exception is a bug and keeps its traceback."""
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        print(f"ise: error: {exc}", file=sys.stderr)
        return 2
    except (ISEError, StackError) as exc:
        print(f"ise: error: {exc}", file=sys.stderr)
        return 1
    except ValidationError as exc:
        if not exc.title.endswith("Settings"):  # a model built in code: a bug, keep the traceback
            raise
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
        print(
            f"ise: error: invalid {exc.title} from the environment ({problems}); fix the ISE_* variables "
            "(see README.md, Settings)",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `ise stats ... | head`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not fail too
        return 0


if __name__ == "__main__":
    sys.exit(main())
