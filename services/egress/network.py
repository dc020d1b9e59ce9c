"""The Docker network workspaces reach the egress proxy on, and nothing else.

Owns: creating the ``ise-egress`` network (idempotent, safe when several processes race), checking
that Docker really isolates it, closing the host's other ports to it, and the environment a
workspace needs to use the proxy.

Findings on this machine (Debian dockerd 20.10, iptables-nft, root; verified by
``tests/integration/test_egress_proxy.py``):

* A bridge network created with ``internal=True`` gets a host bridge (we name it ``br-<name>``) that
  carries the network's gateway IP (e.g. 172.18.0.1). Docker adds ``DOCKER-ISOLATION-STAGE-1`` rules
  dropping every *forwarded* packet into or out of that bridge, so 1.1.1.1, deb.debian.org and other
  containers' networks are unreachable, and name resolution of outside hosts fails (the embedded DNS
  at 127.0.0.11 answers nothing for them).  ``enable_icc=false`` also drops traffic between
  containers on the network, so two episodes' workspaces cannot talk to each other.
* Docker 20.10 still gives containers on an internal network a default route via the gateway, and
  packets addressed to *any* of the host's own addresses (gateway IP, docker0's 172.17.0.1, eth0's)
  are delivered locally (INPUT chain, not FORWARD): every host service bound to 0.0.0.0 was
  reachable from the workspace.  Services bound to 127.0.0.1 are not.  The proxy listens on the
  gateway IP, so this host door is needed, but the rest of it is closed by
  :func:`restrict_host_ports`: an ``INPUT -i br-<name>`` jump to our own chain that accepts TCP to
  the gateway IP on the allowed ports (the proxy's) plus established traffic and rejects the rest.
  With it, only the proxy port answers.  It needs root and the ``iptables`` binary; without them,
  other host ports bound to 0.0.0.0 stay reachable (the call raises, callers decide).
* If dockerd runs with ``--iptables=false`` (one of ``docker_daemon.py``'s fallbacks) Docker adds no
  isolation rules at all and an internal network is not isolated: :func:`isolation_rules_present`
  detects that and :func:`ensure_egress_network` raises unless ``require_isolation=False``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.errors import APIError, NotFound

from services.common.locks import file_lock
from services.egress.control import EgressError

LOCK_PATH = Path.home() / ".cache" / "ise" / "egress-network.lock"
CA_PATH_IN_WORKSPACE = "/etc/ise/egress-ca.pem"
CA_ENV_VARS = (
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "PIP_CERT",
    "NODE_EXTRA_CA_CERTS",
)


@dataclass(frozen=True)
class EgressNetwork:
    name: str
    gateway_ip: str
    subnet: str
    bridge: str

    @property
    def input_chain(self) -> str:
        return f"ISE-IN-{self.bridge}"[:28]


def bridge_name(name: str) -> str:
    return f"br-{name}"[:15]  # Linux interface names are at most 15 characters


def _describe(net: docker.models.networks.Network, name: str) -> EgressNetwork:
    attrs = net.attrs
    if not attrs.get("Internal"):
        raise EgressError(f"Docker network {name} exists but is not internal; remove it (docker network rm {name})")
    config = (attrs.get("IPAM", {}).get("Config") or [{}])[0]
    subnet, gateway = config.get("Subnet", ""), config.get("Gateway", "")
    if not gateway and subnet:
        gateway = str(next(ipaddress.ip_network(subnet).hosts()))
    bridge = attrs.get("Options", {}).get("com.docker.network.bridge.name") or f"br-{net.id[:12]}"
    return EgressNetwork(name=name, gateway_ip=gateway, subnet=subnet, bridge=bridge)


def _find(client: docker.DockerClient, name: str) -> docker.models.networks.Network | None:
    # names= filters by substring; keep exact matches, oldest first so racing creators agree.
    matches = [n for n in client.networks.list(names=[name]) if n.name == name]
    if not matches:
        return None
    matches.sort(key=lambda n: (n.attrs.get("Created", ""), n.id))
    return client.networks.get(matches[0].id)


def ensure_egress_network(
    client: docker.DockerClient, name: str = "ise-egress", *, require_isolation: bool = True
) -> EgressNetwork:
    """The internal bridge network ``name`` (created if missing) and its gateway IP for the proxy."""
    with file_lock(LOCK_PATH, timeout_s=60):
        net = _find(client, name)
        if net is None:
            try:
                client.networks.create(
                    name,
                    driver="bridge",
                    internal=True,
                    check_duplicate=True,
                    labels={"ise.role": "egress"},
                    options={
                        "com.docker.network.bridge.name": bridge_name(name),
                        "com.docker.network.bridge.enable_icc": "false",
                    },
                )
            except APIError as exc:  # another machine-local client won the race: use theirs
                if exc.status_code != 409 and "already exists" not in str(exc):
                    raise
            net = _find(client, name)
            if net is None:
                raise EgressError(f"Docker network {name} vanished right after it was created")
    desc = _describe(net, name)
    if require_isolation and isolation_rules_present(desc) is False:
        raise EgressError(
            f"Docker does not isolate network {name} (no DOCKER-ISOLATION rule for {desc.bridge}): "
            "dockerd probably runs with --iptables=false; workspaces on it could reach other networks"
        )
    return desc


def remove_egress_network(client: docker.DockerClient, name: str = "ise-egress") -> None:
    with contextlib.suppress(NotFound):
        client.networks.get(name).remove()


# -- host firewall (iptables) ----------------------------------------------------------------------------
def _iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("iptables")
    if exe is None:
        raise EgressError("iptables is not installed: cannot restrict the egress network's host ports")
    proc = subprocess.run([exe, "-w", "10", *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise EgressError(f"iptables {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def isolation_rules_present(net: EgressNetwork) -> bool | None:
    """True when Docker's isolation rule for the bridge is in place, False when not, None if unknown."""
    if shutil.which("iptables") is None:
        return None
    proc = _iptables("-S", "DOCKER-ISOLATION-STAGE-1", check=False)
    if proc.returncode != 0:
        return None if "Permission denied" in proc.stderr else False
    return any(f"-i {net.bridge}" in line and "-j DROP" in line for line in proc.stdout.splitlines())


def _ensure_rule(chain: str, rule: list[str], insert: bool) -> None:
    if _iptables("-C", chain, *rule, check=False).returncode != 0:
        _iptables("-I" if insert else "-A", chain, *([] if not insert else ["1"]), *rule)


def restrict_host_ports(net: EgressNetwork, allowed_tcp_ports: Iterable[int]) -> None:
    """Let workspaces reach only ``gateway_ip:<allowed port>`` on the host (idempotent, additive)."""
    chain = net.input_chain
    with file_lock(LOCK_PATH, timeout_s=60):
        if _iptables("-S", chain, check=False).returncode != 0:
            _iptables("-N", chain)
        _ensure_rule(chain, ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"], insert=False)
        _ensure_rule(chain, ["-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"], insert=False)
        _ensure_rule(chain, ["-j", "REJECT"], insert=False)
        for port in allowed_tcp_ports:
            rule = ["-p", "tcp", "-d", net.gateway_ip, "--dport", str(port), "-j", "ACCEPT"]
            _ensure_rule(chain, rule, insert=True)
        _ensure_rule("INPUT", ["-i", net.bridge, "-j", chain], insert=True)


def release_host_port(net: EgressNetwork, port: int) -> None:
    """Close ``gateway_ip:port`` again (e.g. after the proxy stopped)."""
    rule = ["-p", "tcp", "-d", net.gateway_ip, "--dport", str(port), "-j", "ACCEPT"]
    with file_lock(LOCK_PATH, timeout_s=60):
        while _iptables("-C", net.input_chain, *rule, check=False).returncode == 0:
            _iptables("-D", net.input_chain, *rule)


# -- what a workspace container needs ---------------------------------------------------------------------
def workspace_env(proxy_url: str, ca_path: str = CA_PATH_IN_WORKSPACE) -> dict[str, str]:
    """Environment for a workspace: proxy variables (both cases) and the proxy's CA for common tools."""
    env = {"HTTP_PROXY": proxy_url, "HTTPS_PROXY": proxy_url, "NO_PROXY": "localhost,127.0.0.1,::1"}
    env.update({k.lower(): v for k, v in env.items()})
    env.update(dict.fromkeys(CA_ENV_VARS, ca_path))
    return env


def ca_mount(ca_cert_path: Path, ca_path: str = CA_PATH_IN_WORKSPACE) -> dict[str, dict[str, str]]:
    """A docker SDK ``volumes=`` entry mounting the proxy's CA read-only into the workspace."""
    return {str(ca_cert_path): {"bind": ca_path, "mode": "ro"}}


def remove_host_restriction(net: EgressNetwork) -> None:
    """Drop the INPUT jump and our chain for this network (when the network itself goes away)."""
    with file_lock(LOCK_PATH, timeout_s=60):
        jump = ["-i", net.bridge, "-j", net.input_chain]
        while _iptables("-C", "INPUT", *jump, check=False).returncode == 0:
            _iptables("-D", "INPUT", *jump)
        if _iptables("-S", net.input_chain, check=False).returncode == 0:
            _iptables("-F", net.input_chain)
            _iptables("-X", net.input_chain)
