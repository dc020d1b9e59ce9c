"""The local pipeline's child processes: started, watched, restarted, and never left behind.

``ise run`` (and the end-to-end tests) run the long-running services as child processes. The
supervisor owns them:

* **never orphaned**: each child asks the kernel for ``SIGTERM`` when its parent dies
  (``PR_SET_PDEATHSIG``), so even ``kill -9`` of ``ise run`` stops every service it started;
  a clean stop (SIGTERM/SIGINT/Ctrl-C of ``ise run``) stops them through :meth:`stop`;
* **restarted**: a service that exits while the run goes on is restarted (at most
  ``max_restarts`` times per service, with its log kept), and the run continues: the services
  are idempotent consumers, so a restarted one picks up from its group's committed offsets;
* a finished job (``*-job``) that exits 0 is done, not crashed;
* **observable**: each child serves Prometheus metrics on a free port of its own (kept across
  restarts), listed in ``<log dir>/metrics-targets.json`` in Prometheus' ``file_sd`` format
  (``ISE_METRICS_PORT=0`` in the environment turns the endpoints off);
* **Docker hosts**: with ``docker_hosts``, executor replica ``executor-<i>`` gets
  ``DOCKER_HOST=docker_hosts[i % len(docker_hosts)]`` (its workspaces, warm pool and reaper live
  on that daemon only).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from services.common.runner import JOBS
from services.stack.procs import StackError, free_port, log_tail, spawn, stop

log = logging.getLogger(__name__)

LONG_RUNNING = ("dedup", "simulator", "executor")
METRICS_TARGETS = "metrics-targets.json"
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a freshly forked child: get SIGTERM when the parent dies (Linux; no-op elsewhere)."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


class LocalPipeline:
    """The consuming services as child processes sharing one environment."""

    def __init__(
        self,
        env: dict[str, str],
        log_dir: Path,
        replicas: dict[str, int] | None = None,
        max_restarts: int = 3,
        docker_hosts: list[str] | None = None,
    ) -> None:
        self.env = env
        self.docker_hosts = list(docker_hosts or [])
        self.log_dir = log_dir
        self.replicas = dict.fromkeys(LONG_RUNNING, 1) | (replicas or {})
        self.max_restarts = max_restarts
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.extra_env: dict[str, dict[str, str]] = {}
        self.restarts: dict[str, int] = {}
        self.executor_ports: list[str] = []
        self.metrics_ports: dict[str, int] = {}
        """label -> the port of its Prometheus endpoint."""

    def start(self) -> None:
        ports = [self._replica_port(i) for i in range(self.replicas["executor"])]
        self._inspect_on_every_replica()
        for name in LONG_RUNNING:
            for i in range(self.replicas[name]):
                self.start_one(name, f"{name}-{i}", ports[i] if name == "executor" else None)

    def _inspect_on_every_replica(self) -> None:
        """The simulator asks every executor replica for ``Inspect`` (whichever answers), when it was
        set to ask the first one: losing that replica then does not blind the user model."""
        addresses = self.grpc_addresses()
        if len(addresses) > 1 and self.env.get("ISE_SIM_WORKSPACES_ADDR") == addresses[0]:
            self.env["ISE_SIM_WORKSPACES_ADDR"] = ",".join(addresses)

    def _replica_port(self, index: int) -> dict[str, str] | None:
        """Executor replicas after the first get a free gRPC port of their own (the first keeps the
        environment's, which the simulator's grounding uses), so external agents can reach any."""
        if index == 0:
            return None
        port = str(free_port())
        self.executor_ports.append(port)
        return {"ISE_EXEC_GRPC_PORT": port}

    def grpc_addresses(self) -> list[str]:
        """Where each executor replica's gRPC server (Workspaces, Episodes) listens, on loopback."""
        ports = [p for p in (self.env.get("ISE_EXEC_GRPC_PORT"), *self.executor_ports) if p and p != "0"]
        return [f"127.0.0.1:{p}" for p in ports]

    def start_one(self, service: str, label: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        kind = "job" if service in JOBS else "service"
        argv = [sys.executable, "-m", "services.cli.main", kind, service]
        proc = spawn(
            argv,
            log_path=self.log_dir / f"{label}.log",
            env={**self.env, **self._docker_host(service, label), **(extra_env or {}), **self._metrics_port(label)},
            preexec_fn=die_with_parent,
            run_child=True,
        )
        self.procs[label] = proc
        self.extra_env[label] = dict(extra_env or {})
        return proc

    def _docker_host(self, service: str, label: str) -> dict[str, str]:
        """``DOCKER_HOST`` of executor replica ``executor-<i>``: the i-th of ``docker_hosts``, round robin."""
        index = label.rsplit("-", 1)[-1]
        if service != "executor" or not self.docker_hosts or not index.isdigit():
            return {}
        return {"DOCKER_HOST": self.docker_hosts[int(index) % len(self.docker_hosts)]}

    def executor_docker_hosts(self) -> list[str | None]:
        """The Docker hosts the executor replicas use (``None``: the environment's)."""
        return list(dict.fromkeys(self.docker_hosts)) or [None]

    def _metrics_port(self, label: str) -> dict[str, str]:
        """The child's ``ISE_METRICS_PORT`` (the same one after a restart), listed in the targets file."""
        if self.env.get("ISE_METRICS_PORT") == "0":
            return {}
        if label not in self.metrics_ports:
            self.metrics_ports[label] = free_port()
            targets = [
                {"targets": [f"127.0.0.1:{port}"], "labels": {"service": name.rsplit("-", 1)[0], "replica": name}}
                for name, port in sorted(self.metrics_ports.items())
            ]
            self.log_dir.mkdir(parents=True, exist_ok=True)
            (self.log_dir / METRICS_TARGETS).write_text(json.dumps(targets, indent=1) + "\n")
        return {"ISE_METRICS_PORT": str(self.metrics_ports[label])}

    def add_executor(self) -> str:
        """Start one more executor replica (scale up mid-run); returns its label. Kafka moves some
        of the turns' partitions to it; the simulator keeps asking the replicas it knew for Inspect."""
        index = sum(1 for label in {*self.procs, *self.extra_env} if label.startswith("executor-"))
        label = f"executor-{index}"
        self.start_one("executor", label, self._replica_port(index))
        return label

    def remove(self, label: str, timeout_s: float = 60.0) -> int:
        """Stop one process cleanly (SIGTERM, as a scale-down does) and forget it (not restarted);
        returns its exit status."""
        proc = self.procs.pop(label)
        proc.terminate()
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(timeout=10)

    def kill(self, label: str) -> None:
        """SIGKILL one process (a crash, not a clean stop) and forget it (it is not restarted)."""
        proc = self.procs.pop(label)
        proc.kill()
        proc.wait(timeout=10)

    def check_alive(self) -> None:
        """Restart a service that exited; raise with its log tail once it used up its restarts."""
        for label, proc in list(self.procs.items()):
            code = proc.poll()
            if code is None or (label.endswith("-job") and code == 0):
                continue
            path = self.log_dir / f"{label}.log"
            used = self.restarts.get(label, 0)
            if label.endswith("-job") or used >= self.max_restarts:
                raise StackError(f"service {label} exited with code {code} ({used} restarts)\n{log_tail(path, 30)}")
            self.restarts[label] = used + 1
            log.warning(
                "service %s exited with code %s; restarting it (%d/%d)", label, code, used + 1, self.max_restarts
            )
            self.start_one(label.rsplit("-", 1)[0], label, self.extra_env.get(label))

    def stop(self) -> None:
        for proc in self.procs.values():
            stop(proc.pid, timeout_s=20)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log.warning("process %s did not exit", proc.pid)
        self.procs.clear()
