"""Entry point: ``python3 -m shell_driver [PIDS_LIMIT]`` (see the package docstring)."""

import os
import sys

from .driver import Driver
from .wire import send


def main():
    os.environ.pop("PYTHONPATH", None)  # set only to find this package: keep it out of the agent's shell
    limit = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    driver = Driver(limit)
    try:
        send({"ready": True, "pid": os.getpid()})
        driver.serve()
    finally:  # host gone (EOF, broken pipe) or a driver error: take the shell's session along
        driver.shell.kill()


main()
