"""Entry point: ``python3 -m shell_driver PIDS_LIMIT AGENT_USER`` (see the package docstring)."""

import os
import sys

from .driver import Driver
from .wire import send


def main():
    os.environ.pop("PYTHONPATH", None)  # set only to find this package: keep it out of the agent's commands
    limit = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    user = sys.argv[2] if len(sys.argv) > 2 else "agent"
    if os.geteuid() != 0:
        raise SystemExit("the shell driver must run as root (it runs the agent's commands as another user)")
    driver = Driver(limit, user)
    try:
        send({"ready": True, "pid": os.getpid(), "uid": driver.agent.uid})
        driver.serve()
    finally:  # host gone (EOF, broken pipe) or a driver error: take the commands' sessions along
        driver.shutdown()


main()
