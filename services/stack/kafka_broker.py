"""The embedded single-node Apache Kafka 4.x broker (KRaft, combined broker+controller).

Owns: fetching the broker's jars from Maven Central once (``deploy/kafka/pom.xml``, cached in
``~/.cache/ise/kafka-libs`` or ``$ISE_KAFKA_LIBS``), rendering ``server.properties`` from
``deploy/kafka/server.properties.template``, formatting the storage directory, launching
``java kafka.Kafka`` detached on loopback ports, waiting until ``kafka_probe`` finds it ready,
and stopping the broker.  Used by integration tests and ``ise stack up``; when
``ISE_KAFKA_BOOTSTRAP`` is set callers use that broker instead and never come here.  The compose
Kafka image (``services/stack/compose_images.py``) is built from the same jars and template.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

from services.common.locks import file_lock
from services.stack.kafka_probe import probe_kafka
from services.stack.procs import (
    ServerRecord,
    StackError,
    free_port,
    is_alive,
    spawn,
    stop,
    wait_until,
)
from services.stack.settings import StackSettings

KAFKA_DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "kafka"
POM_PATH = KAFKA_DEPLOY_DIR / "pom.xml"
TEMPLATE_PATH = KAFKA_DEPLOY_DIR / "server.properties.template"
LOG4J_CONFIG_PATH = KAFKA_DEPLOY_DIR / "log4j2.yaml"
HOST = "127.0.0.1"
LOG_OPTS = (f"-Dlog4j2.configurationFile={LOG4J_CONFIG_PATH}", "-Dlog4j2.shutdownHookEnabled=false")
BROKER_JVM_OPTS = ("-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-Djava.awt.headless=true", *LOG_OPTS)
TOOL_JVM_OPTS = ("-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", *LOG_OPTS)
MAVEN_TIMEOUT_S = 900.0
FORMAT_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0
_MAVEN_HINT = (
    "Install Maven and make Maven Central reachable, or set ISE_KAFKA_LIBS to a directory that "
    "already holds Kafka 4.x jars (e.g. a Kafka distribution's libs/), or set "
    "ISE_KAFKA_BOOTSTRAP to use a broker that is already running."
)


def default_libs_dir() -> Path:
    """Where the broker's jars live: ``$ISE_KAFKA_LIBS`` or ``~/.cache/ise/kafka-libs``."""
    override = StackSettings().kafka_libs
    return Path(override).expanduser() if override else Path.home() / ".cache/ise/kafka-libs"


def kafka_version() -> str:
    """The Kafka version pinned in ``deploy/kafka/pom.xml``."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(POM_PATH).getroot().find("m:properties/m:kafka.version", ns)
    if node is None or not node.text:
        raise StackError(f"{POM_PATH} has no <kafka.version> property")
    return node.text.strip()


def jars_present(libs_dir: Path) -> bool:
    """True when ``libs_dir`` holds a Kafka broker jar (any 4.x version)."""
    return any(libs_dir.glob("kafka_2.13-*.jar"))


def _run_maven(output_dir: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(f"cannot fetch the Kafka jars: `mvn` is not on PATH. {_MAVEN_HINT}")
    argv = [mvn, "-q", "-B", "-f", str(POM_PATH), "dependency:copy-dependencies", f"-DoutputDirectory={output_dir}"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=MAVEN_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"`mvn` took over {MAVEN_TIMEOUT_S:.0f}s. {_MAVEN_HINT}") from exc
    if done.returncode != 0 or not jars_present(output_dir):
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        version = kafka_version()
        raise StackError(f"`mvn` could not fetch Kafka {version} jars:\n{tail}\n{_MAVEN_HINT}")


def ensure_kafka_jars(libs_dir: Path | None = None) -> Path:
    """Make sure ``libs_dir`` holds the broker's jars; fetch them with Maven the first time.

    Skips Maven (so works offline) when a Kafka broker jar is already there.  Maven fills a
    temporary sibling directory under a file lock; the jars then move in with the broker jar
    last, so an interrupted fetch never looks complete.
    """
    libs_dir = (libs_dir or default_libs_dir()).expanduser()
    if jars_present(libs_dir):
        return libs_dir
    with file_lock(libs_dir.parent / f".{libs_dir.name}.lock", MAVEN_TIMEOUT_S):
        if jars_present(libs_dir):
            return libs_dir
        staging = Path(tempfile.mkdtemp(prefix=f".{libs_dir.name}-", dir=libs_dir.parent))
        try:
            _run_maven(staging)
            libs_dir.mkdir(parents=True, exist_ok=True)
            for jar in sorted(staging.iterdir(), key=lambda j: j.name.startswith("kafka_2.13-")):
                jar.replace(libs_dir / jar.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return libs_dir


def server_properties(*, port: int, controller_port: int, log_dirs: Path | str, auto_create_topics: bool) -> str:
    """``deploy/kafka/server.properties.template`` rendered for node 1 (loopback listeners; the
    compose image overrides them at start, see ``deploy/kafka/entrypoint.sh``)."""
    return TEMPLATE_PATH.read_text().format(
        node_id=1,
        port=port,
        controller_port=controller_port,
        log_dirs=log_dirs,
        auto_create_topics=str(auto_create_topics).lower(),
    )


def java_executable() -> str:
    """``$JAVA_HOME/bin/java`` when set, else ``java`` from PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin/java").exists():
        return str(Path(java_home) / "bin/java")
    found = shutil.which("java")
    if found is None:
        raise StackError("cannot start Kafka: no `java` on PATH and no JAVA_HOME (need Java 17+)")
    return found


def new_cluster_id() -> str:
    """A random KRaft cluster id in Kafka's format (URL-safe base64 of 16 bytes, unpadded)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):  # Kafka never issues ids that look like a CLI flag
            return text


class EmbeddedKafka:
    """One Kafka 4.x broker+controller process on loopback ports, data under ``data_dir``.

    Restarting over the same ``data_dir`` keeps every topic (the storage is formatted only
    once), even on different ports.
    """

    name = "kafka"

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        controller_port: int | None = None,
        libs_dir: Path | None = None,
        auto_create_topics: bool = True,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port(HOST)
        self.controller_port = controller_port or free_port(HOST)
        while self.controller_port == self.port:
            self.controller_port = free_port(HOST)
        self.libs_dir = libs_dir
        self.auto_create_topics = auto_create_topics
        self.log_path = self.data_dir / "kafka.log"
        self.config_path = self.data_dir / "server.properties"
        self.log_dirs = self.data_dir / "log-dirs"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def record(self) -> ServerRecord:
        """What ``ise stack`` should remember to find and stop this broker later."""
        if self.pid is None:
            raise StackError("Kafka is not running")
        return ServerRecord(self.name, self.pid, self.bootstrap, str(self.log_path), str(self.data_dir))

    def start(self, timeout_s: float = 90.0) -> str:
        """Fetch jars if needed, format storage once, launch, await metadata; return bootstrap."""
        if self.pid is not None and is_alive(self.pid):
            return self.bootstrap
        classpath = f"{ensure_kafka_jars(self.libs_dir)}/*"
        self._write_config()
        if not (self.log_dirs / "meta.properties").exists():
            self._format_storage(classpath)
        argv = [java_executable(), *BROKER_JVM_OPTS, "-cp", classpath, "kafka.Kafka", str(self.config_path)]
        self._proc = spawn(argv, log_path=self.log_path, cwd=self.data_dir)
        try:
            wait_until(
                lambda: probe_kafka(HOST, self.port),
                what=f"Kafka on {self.bootstrap}",
                timeout_s=timeout_s,
                pid=self._proc.pid,
                log_path=self.log_path,
            )
        except StackError:
            self.stop()
            raise
        return self.bootstrap

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL) and reap it; a no-op when not running."""
        if self._proc is None:
            return
        stop(self._proc.pid, timeout_s=STOP_TIMEOUT_S)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=1)
        self._proc = None

    def __enter__(self) -> EmbeddedKafka:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _write_config(self) -> None:
        self.log_dirs.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            server_properties(
                port=self.port,
                controller_port=self.controller_port,
                log_dirs=self.log_dirs,
                auto_create_topics=self.auto_create_topics,
            )
        )

    def _format_storage(self, classpath: str) -> None:
        argv = [
            java_executable(),
            *TOOL_JVM_OPTS,
            "-cp",
            classpath,
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            new_cluster_id(),
            "--config",
            str(self.config_path),
            "--ignore-formatted",
        ]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=FORMAT_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise StackError(f"Kafka storage format took over {FORMAT_TIMEOUT_S:.0f}s") from exc
        if done.returncode != 0:
            output = (done.stdout + done.stderr).strip()
            raise StackError(f"Kafka storage format failed:\n{output}")
