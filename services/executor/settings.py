"""Executor settings (env prefix ``ISE_EXEC_``): workspace image and limits, loop bounds, gRPC."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.settings import DEFAULT_WORKSPACES_PORT
from services.executor.tools import resolve_toolset
from services.executor.web_access import WebAccess
from services.executor.workspace.base import WorkspaceLimits
from services.executor.workspace.egress import WorkspaceEgress


class ExecutorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ISE_EXEC_", extra="forbid")

    image: str = Field("ise-workspace:latest", description="Workspace image (built by `ise stack up`).")
    container_prefix: str = Field("ise-ws", description="Workspace containers are named <prefix>-<episode>.")
    memory_mb: int = Field(512, ge=32)
    pids: int = Field(256, ge=16)
    cpus: float = Field(1.0, gt=0)
    network: bool = Field(False, description="Give workspaces a network (off by default).")
    output_cap_bytes: int = Field(64 * 1024, ge=1024, description="Per stream, per command.")
    max_file_mb: int = Field(256, ge=1, description="No file the agent's commands write grows past this (SIGXFSZ).")
    disk_mb: int = Field(
        2048,
        ge=0,
        description="Total disk one workspace may write (Docker --storage-opt size; 0 = no cap). "
        "Needs a storage driver that enforces it (btrfs, zfs, devicemapper, overlay2 on xfs+pquota); "
        "`ise stack up` gives its dockerd a btrfs data root. Elsewhere workspaces run uncapped, with a warning.",
    )
    require_disk_quota: bool = Field(False, description="Refuse to create workspaces the daemon cannot cap.")
    shell: Literal["persistent", "exec"] = Field(
        "persistent",
        description="persistent: one long-lived bash per episode (cd/exports persist, ~1 ms per "
        "command); exec: a fresh docker exec per command (~80 ms, no shared state).",
    )
    pool_size: int = Field(2, ge=0, description="Started, unassigned workspace containers kept warm (0 = cold only).")
    reaper_interval_s: float = Field(60.0, gt=0, description="Seconds between reaper passes.")
    lease_max_age_s: float = Field(6 * 3600.0, gt=0, description="A workspace older than this is removed even if open.")
    reaper_grace_s: float = Field(
        1860.0, ge=0, description="Never reap a closed-looking workspace younger than this (kept > turn_timeout_s)."
    )
    pool_heartbeat_s: float = Field(
        10.0, gt=0, description="How often a replica refreshes its warm pool's liveness marker (a Redis key)."
    )
    pool_owner_ttl_s: float = Field(
        60.0,
        gt=0,
        description="TTL of that marker: idle pool containers of a replica that stopped refreshing it "
        "(killed) are reaped by any replica within this plus reaper_interval_s. Keep it > pool_heartbeat_s.",
    )
    agent_user: str = Field(
        "agent", description="The image's unprivileged user that every agent command and file operation runs as."
    )
    concurrency: int = Field(4, ge=1, description="Episodes (partitions) processed at once per replica.")
    max_steps: int = Field(
        64, ge=1, description="LLM calls per user turn before a forced answer (a guard against loops only)."
    )
    tools: str = Field(
        "reference",
        description="The agent's tools: reference (the reference agent's exec, process, read, write, edit, "
        "web_search, web_fetch, memory_search, memory_get), reference+extras (adds ls and search), or a comma "
        "list of tool names.",
    )
    skills_dir: str = Field(
        "", description="A folder of skills (<name>/SKILL.md) offered to the agent; empty: the starter set."
    )
    web_proxy: str = Field(
        "",
        description="host:port of the egress proxy the web tools go through (set by `ise run`'s stack); "
        "empty: web tools answer that web access is off.",
    )
    web_secret: str = Field("", description="The egress proxy's credential secret (set with web_proxy).")
    web_ca: str = Field("", description="The egress proxy's CA certificate (PEM) for HTTPS through it.")
    web_network: str = Field(
        "", description="The Docker network workspaces reach the egress proxy on (set by the stack; empty: none)."
    )
    web_search_provider: Literal["local", "brave"] = Field(
        "local", description="local: the local web's index (no internet); brave: the Brave Search API."
    )
    web_search_key: str = Field("", description="API key of the search provider (brave).")
    workspace_egress: bool = Field(
        False,
        description="Put workspaces behind the egress proxy (curl, git, pip reach allow-listed hosts, "
        "recorded); off: workspaces have no network at all.",
    )
    command_timeout_s: float = Field(60.0, gt=0, description="Default per-command timeout.")
    turn_timeout_s: float = Field(1800.0, gt=0, description="Wall time of one whole agent turn.")
    agent: Literal["builtin", "external"] = Field(
        "builtin",
        description="builtin: the agent LLM loop answers user turns; external: agents connected to the "
        "gRPC Episodes API do (see README: External agents).",
    )
    external_lease_ttl_s: float = Field(
        10.0, gt=0, description="An external agent's lease on its episode, renewed while its stream is alive."
    )
    external_grace_s: float = Field(
        30.0,
        ge=0,
        description="After an external agent's stream breaks, it may resume its episode (Hello.resume_token) "
        "within this long; past it, a pending turn ends as an infrastructure error (retried).",
    )
    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(DEFAULT_WORKSPACES_PORT, ge=0, description="0 picks a free port.")
    grpc_enabled: bool = True
    grpc_token: str = Field(
        "",
        description="The system caller's bearer token (the simulator's grounding: may also Inspect/read "
        "pipeline episodes). With no token at all, gRPC serves one anonymous caller, on loopback only.",
    )
    grpc_caller_tokens: dict[str, str] = Field(
        default_factory=dict, description='External gRPC callers, JSON {"name": "token"}; each sees only its own.'
    )
    grpc_tokens_file: str = Field("", description="A file of `<caller> <token>` lines (more external callers).")
    grpc_workers: int = Field(8, ge=1, description="Threads for gRPC's Docker work (never the agent loop's).")
    grpc_max_message_bytes: int = Field(16 << 20, ge=1 << 20, description="gRPC max receive/send message size.")
    grpc_max_write_bytes: int = Field(8 << 20, ge=1, description="WriteFile content limit.")
    grpc_max_read_bytes: int = Field(8 << 20, ge=1, description="ReadFile max_bytes limit.")
    grpc_max_command_bytes: int = Field(64 << 10, ge=1, description="Exec command length limit.")
    grpc_max_workspaces_per_caller: int = Field(8, ge=0, description="Live gRPC workspaces per caller.")
    grpc_stop_grace_s: float = Field(2.0, ge=0, description="On shutdown, running gRPC calls get this long.")

    @field_validator("tools")
    @classmethod
    def _known_tools(cls, value: str) -> str:
        resolve_toolset(value)  # raises with the list of known tools
        return value

    def web_access(self) -> WebAccess | None:
        """How the web tools reach the web (None: web access is off)."""
        if not self.web_proxy:
            return None
        host, _, port = self.web_proxy.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"ISE_EXEC_WEB_PROXY={self.web_proxy!r} is not host:port")
        return WebAccess(
            host,
            int(port),
            self.web_secret,
            self.web_ca or None,
            self.web_search_provider,
            self.web_search_key,
        )

    def workspace_egress_config(self) -> WorkspaceEgress | None:
        """Workspaces behind the proxy (ISE_EXEC_WORKSPACE_EGRESS), or None: no network at all."""
        if not self.workspace_egress:
            return None
        web = self.web_access()
        if web is None or not self.web_network or not self.web_ca:
            raise ValueError(
                "ISE_EXEC_WORKSPACE_EGRESS=true needs the stack's egress proxy on a Docker network "
                "(ISE_EXEC_WEB_PROXY, ISE_EXEC_WEB_NETWORK, ISE_EXEC_WEB_CA; `ise stack up` sets them, and "
                "says why when Docker cannot isolate the network)"
            )
        return WorkspaceEgress(self.web_network, web.proxy_host, web.proxy_port, web.secret, self.web_ca)

    def limits(self) -> WorkspaceLimits:
        return WorkspaceLimits(
            memory_mb=self.memory_mb,
            pids=self.pids,
            cpus=self.cpus,
            network=self.network,
            output_cap_bytes=self.output_cap_bytes,
            max_file_mb=self.max_file_mb,
            disk_mb=self.disk_mb,
            require_disk_quota=self.require_disk_quota,
        )
