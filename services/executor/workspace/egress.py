"""A workspace behind the egress proxy: its Docker network, its CA mount and its per-episode env.

With egress on, every workspace container (warm ones too) joins the internal ``ise-egress``
network, where the only host port it can reach is the proxy's (``services/egress/network.py``),
with the proxy's CA mounted read-only. The episode's own proxy credentials are not baked into
the container (a warm one has no episode yet): every ``docker exec`` into it (the shell driver
and the one-exec-per-command mode alike) gets ``HTTP_PROXY``/``HTTPS_PROXY`` for its episode and
the CA variables curl, git, pip and Python read. They derive from the episode id and the shared
secret, so any replica computes the same ones after a rebalance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.egress.credentials import proxy_url
from services.egress.network import ca_mount, workspace_env


@dataclass(frozen=True)
class WorkspaceEgress:
    network: str
    proxy_host: str  # as workspaces see it: the network's gateway IP
    proxy_port: int
    secret: str
    ca_path: str  # the proxy's CA on the Docker host

    def container_options(self) -> dict[str, Any]:
        """``containers.create`` options: the egress network instead of none, the CA mounted."""
        return {"network": self.network, "volumes": ca_mount(Path(self.ca_path))}

    def env_for(self, episode_id: str) -> dict[str, str]:
        return workspace_env(proxy_url(self.proxy_host, self.proxy_port, self.secret, episode_id))


def network_options(egress: WorkspaceEgress | None, networked: bool) -> dict[str, Any]:
    """``containers.create`` network options: the egress network, Docker's default, or none."""
    if egress is not None:
        return egress.container_options()
    return {"network_mode": None if networked else "none"}
