"""The embedded stack's web for agents: the local web server and the egress proxy in front of it.

``ensure_web`` starts (or reuses, like Kafka and Redis) two detached servers recorded in the
stack dir: the local web (``python -m services.web serve``: a documentation mirror, a search
index and git repositories, no internet needed) and the egress proxy (``mitmdump`` with our
addon, from ``.venv-egress``) that routes the local web's host names to it, lets through only
the hosts of ``ISE_EGRESS_ALLOW``, and records every exchange per episode. Its secret lives in
the stack dir (mode 0600) so a reused proxy and a new executor agree on credentials. The
executor gets the proxy's address, secret and CA through ``Endpoints.env()``.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from services.egress.control import EgressControl, EgressError
from services.egress.launcher import EgressProxy, mitmdump_path
from services.egress.network import EgressNetwork, ensure_egress_network, restrict_host_ports
from services.stack.procs import ServerRecord, free_port, is_alive, port_open, spawn, stop, wait_until
from services.web.server import served_hosts

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 600.0  # the first start builds the local web's cache (a minute or two)


@dataclass(frozen=True)
class WebEndpoints:
    proxy: str  # host:port
    secret: str
    ca_path: str
    network: str = ""  # the Docker network workspaces reach the proxy on ("": none, web tools only)


def _egress_network() -> EgressNetwork | None:
    """The internal network for workspaces behind the proxy, or None where Docker cannot isolate it."""
    try:
        return ensure_egress_network(docker.from_env())
    except (EgressError, docker.errors.DockerException) as exc:
        log.warning("no egress network for workspaces (%s): the web tools work, workspaces stay offline", exc)
        return None


def _secret(folder: Path) -> str:
    path = folder / "secret"
    if path.exists():
        return path.read_text().strip()
    folder.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(value)
    return value


def _local_web(sdir: Path) -> tuple[str, int]:
    record = ServerRecord.load(sdir, "web")
    if record is not None and is_alive(record.pid):
        host, _, recorded = record.address.rpartition(":")
        if port_open(host, int(recorded)):
            return host, int(recorded)
    port = free_port()
    log_path = sdir / "web" / "web.log"
    log.info("starting the local web on 127.0.0.1:%d (the first start builds its index)", port)
    argv = [sys.executable, "-m", "services.web", "serve", "--port", str(port)]
    proc = spawn(argv, log_path=log_path, cwd=REPO)
    wait_until(
        lambda: port_open("127.0.0.1", port) or _raise("not listening yet"),
        what="the local web",
        timeout_s=START_TIMEOUT_S,
        pid=proc.pid,
        log_path=log_path,
    )
    ServerRecord("web", proc.pid, f"127.0.0.1:{port}", str(log_path), str(sdir / "web")).save(sdir)
    return "127.0.0.1", port


def _raise(message: str) -> bool:
    raise RuntimeError(message)


def ensure_web(sdir: Path, allow: str = "") -> WebEndpoints:
    """The local web and the egress proxy are running; where the executor finds the proxy."""
    folder = sdir / "egress"
    secret = _secret(folder)
    proxy = EgressProxy(folder, secret=secret)
    net = _egress_network()
    record = ServerRecord.load(sdir, "egress")
    if record is not None and is_alive(record.pid):
        host, _, recorded = record.address.rpartition(":")
        try:
            if EgressControl((host, int(recorded)), secret).health().get("ok"):
                network = net.name if net is not None and net.gateway_ip == host else ""
                return WebEndpoints(record.address, secret, str(proxy.ca_cert_path), network)
        except EgressError as exc:
            log.warning("recorded egress proxy %s does not answer (%s); starting a new one", record.address, exc)
        stop(record.pid)
    web_host, web_port = _local_web(sdir)
    proxy.routes = dict.fromkeys(served_hosts(), (web_host, web_port))
    proxy.allow = [h.strip() for h in allow.split(",") if h.strip()]
    # On the egress network's gateway IP when there is one: the host (executor) and the workspaces
    # both reach it there, and the network's firewall lets workspaces reach nothing else.
    proxy.listen_host = net.gateway_ip if net is not None else "127.0.0.1"
    port = free_port(proxy.listen_host)
    (folder / "secret").chmod(0o600)
    argv = proxy.command(mitmdump_path(), port)
    proc = spawn(argv, log_path=proxy.log_path, cwd=folder, env={"ISE_EGRESS_SECRET_FILE": str(folder / "secret")})
    control = EgressControl((proxy.listen_host, port), secret)
    wait_until(
        lambda: (control.health()["ok"] and proxy.ca_cert_path.exists()) or _raise("no CA yet"),
        what="the egress proxy",
        timeout_s=60.0,
        pid=proc.pid,
        log_path=proxy.log_path,
    )
    address = f"{proxy.listen_host}:{port}"
    ServerRecord("egress", proc.pid, address, str(proxy.log_path), str(folder)).save(sdir)
    network = ""
    if net is not None:
        try:
            restrict_host_ports(net, [port])
            network = net.name
        except (EgressError, OSError, subprocess.CalledProcessError) as exc:
            log.warning("cannot restrict the egress network to the proxy's port (%s): workspaces stay offline", exc)
    log.info("egress proxy on %s routes %s to the local web", address, ", ".join(served_hosts()))
    return WebEndpoints(address, secret, str(proxy.ca_cert_path), network)
