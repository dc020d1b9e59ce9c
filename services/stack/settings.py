"""The embedded stack's settings: which servers to reuse, where its files live, how dockerd starts.

Unlike the services' settings these keep their historical names (no common prefix), since
users already export them: ``ISE_KAFKA_BOOTSTRAP`` / ``ISE_REDIS_URL`` name servers to use
instead of starting embedded ones (the same variables the services read), ``DOCKER_HOST`` is
Docker's own. Read afresh on each call (``StackSettings()``): tests and ``ise run`` set them at
run time.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DOCKER_SOCKET = "unix:///var/run/docker.sock"


class StackSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    kafka_bootstrap: str = Field(
        "", validation_alias="ISE_KAFKA_BOOTSTRAP", description="Use this broker; empty: start the embedded one."
    )
    redis_url: str = Field("", validation_alias="ISE_REDIS_URL", description="Use this Redis; empty: start one.")
    stack_dir: str = Field(
        "", validation_alias="ISE_STACK_DIR", description="State, logs and data of the embedded servers."
    )
    kafka_libs: str = Field(
        "", validation_alias="ISE_KAFKA_LIBS", description="Folder of Kafka 4.x jars (default: fetched by Maven)."
    )
    dockerd_flags: str | None = Field(
        None, validation_alias="ISE_DOCKERD_FLAGS", description="Exact dockerd flags (skips the flag probing)."
    )
    docker_disk_gb: str = Field(
        "48", validation_alias="ISE_DOCKER_DISK_GB", description="Size of the btrfs data root; 0: no disk quotas."
    )
    workspace_build_script: str = Field(
        "", validation_alias="ISE_WORKSPACE_BUILD_SCRIPT", description="Script that builds the workspace rootfs."
    )
    web: bool = Field(
        True, validation_alias="ISE_WEB", description="Start the local web and the egress proxy (agents' web tools)."
    )
    egress_allow: str = Field(
        "",
        validation_alias="ISE_EGRESS_ALLOW",
        description="Hosts agents may reach besides the local web, comma-separated (*.example.org for subdomains).",
    )
    docker_host: str = Field(
        DEFAULT_DOCKER_SOCKET, validation_alias=AliasChoices("DOCKER_HOST"), description="Docker's own variable."
    )

    def stack_path(self) -> Path:
        return Path(self.stack_dir).expanduser() if self.stack_dir else Path.home() / ".cache" / "ise" / "stack"
