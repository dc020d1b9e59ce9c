"""The embedded default stack: Kafka, Redis, the Docker daemon, the workspace image, and the web
for agents (the local web behind the egress proxy: ``web_servers.py``).

``up`` starts what is missing (idempotent) and remembers the servers in the stack dir, so a
later ``up`` reuses them and ``down`` stops them, and the extra Docker daemons of the stack dir
(``extra_docker.py``), whose files it deletes. ``ISE_KAFKA_BOOTSTRAP`` / ``ISE_REDIS_URL``
point at servers you run yourself; then nothing is started for them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from services.common.locks import file_lock
from services.common.settings import DEFAULT_KAFKA_PORT, DEFAULT_REDIS_PORT, KafkaSettings, RedisSettings, settings_env
from services.stack import extra_docker
from services.stack.docker_daemon import answers as docker_answers
from services.stack.docker_daemon import ensure_docker, state_dir
from services.stack.kafka_broker import EmbeddedKafka, probe_kafka
from services.stack.procs import ServerRecord, StackError, is_alive, port_open, stop
from services.stack.redis_server import EmbeddedRedis
from services.stack.settings import StackSettings
from services.stack.web_servers import WebEndpoints, ensure_web
from services.stack.workspace_image import DEFAULT_TAG, ensure_workspace_image

log = logging.getLogger(__name__)
SERVERS = ("kafka", "redis", "web", "egress")
UP_LOCK_TIMEOUT_S = 1800.0
"""A first ``up`` fetches jars, builds the workspace image and the web's index: minutes."""


@dataclass(frozen=True)
class Endpoints:
    kafka_bootstrap: str
    redis_url: str
    workspace_image: str
    web: WebEndpoints | None = None

    def env(self) -> dict[str, str]:
        """Environment for services and jobs that should use this stack."""
        from services.executor.settings import ExecutorSettings  # lazy: the stack does not need the executor

        executor = ExecutorSettings.model_construct(image=self.workspace_image)
        if self.web is not None:
            executor = ExecutorSettings.model_construct(
                image=self.workspace_image,
                web_proxy=self.web.proxy,
                web_secret=self.web.secret,
                web_ca=self.web.ca_path,
                web_network=self.web.network,
            )
        return {
            **settings_env(KafkaSettings.model_construct(bootstrap=self.kafka_bootstrap)),
            **settings_env(RedisSettings.model_construct(url=self.redis_url)),
            **settings_env(executor),
        }


def _alive(record: ServerRecord | None) -> bool:
    return record is not None and is_alive(record.pid)


def _kafka(sdir: Path, port: int) -> str:
    external = StackSettings().kafka_bootstrap
    if external:
        return external
    record = ServerRecord.load(sdir, "kafka")
    if _alive(record):
        host, _, rec_port = record.address.rpartition(":")  # type: ignore[union-attr]
        try:
            probe_kafka(host, int(rec_port))
            return record.address  # type: ignore[union-attr]
        except OSError as exc:
            log.warning("recorded Kafka %s does not answer (%s); starting a new one", record, exc)
    broker = EmbeddedKafka(sdir / "kafka", port=port, controller_port=port + 1)
    log.info("starting Kafka on 127.0.0.1:%d (first start fetches the jars with Maven)", port)
    bootstrap = broker.start()
    broker.record().save(sdir)
    return bootstrap


def _redis(sdir: Path, port: int) -> str:
    external = StackSettings().redis_url
    if external:
        return external
    record = ServerRecord.load(sdir, "redis")
    if _alive(record):
        parsed = urlparse(record.address)  # type: ignore[union-attr]
        if port_open(parsed.hostname or "127.0.0.1", parsed.port or port):
            return record.address  # type: ignore[union-attr]
    server = EmbeddedRedis(sdir / "redis", port=port)
    url = server.start()
    server.record().save(sdir)
    return url


def up(
    *,
    stack_dir: Path | None = None,
    kafka_port: int = DEFAULT_KAFKA_PORT,
    redis_port: int = DEFAULT_REDIS_PORT,
    image_tag: str = DEFAULT_TAG,
    with_image: bool = True,
    with_web: bool | None = None,
) -> Endpoints:
    """Make sure every piece runs; return where they are (``with_web``: the local web and the
    egress proxy too; default from ``ISE_WEB``)."""
    sdir = stack_dir or state_dir()
    sdir.mkdir(parents=True, exist_ok=True)
    # Two callers at once (two `ise run`s, a test session and a script) would each start a server
    # the other's record then hides; the second waits and finds the first one's servers.
    with file_lock(sdir / "up.lock", timeout_s=UP_LOCK_TIMEOUT_S):
        ensure_docker()
        redis_url = _redis(sdir, redis_port)
        bootstrap = _kafka(sdir, kafka_port)
        if with_image:
            image_tag = ensure_workspace_image(image_tag).tag
        settings = StackSettings()
        web = ensure_web(sdir, settings.egress_allow) if (settings.web if with_web is None else with_web) else None
    return Endpoints(bootstrap, redis_url, image_tag, web)


def down(*, stack_dir: Path | None = None) -> list[str]:
    """Stop the servers this stack started and its extra Docker daemons (the first one is left running)."""
    sdir = stack_dir or state_dir()
    stopped = []
    for name in SERVERS:
        record = ServerRecord.load(sdir, name)
        if _alive(record):
            stop(record.pid)  # type: ignore[union-attr]
            stopped.append(name)
        ServerRecord.forget(sdir, name)
    return stopped + [f"docker:{name}" for name in extra_docker.down_all(sdir)]


def status(*, stack_dir: Path | None = None) -> list[tuple[str, str, str]]:
    """(name, state, address) rows for ``ise stack status``."""
    sdir = stack_dir or state_dir()
    rows = []
    for name in SERVERS:
        record = ServerRecord.load(sdir, name)
        state = "running" if _alive(record) else ("stopped" if record else "not started")
        rows.append((name, state, record.address if record else "-"))
    rows.append(("docker", "running" if docker_answers() else "not answering", StackSettings().docker_host))
    return rows + extra_docker.status(sdir)


__all__ = ["Endpoints", "StackError", "down", "status", "up"]
