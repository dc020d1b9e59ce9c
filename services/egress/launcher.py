"""Start and stop the egress proxy: ``mitmdump`` from ``.venv-egress`` with our addon, as a child process.

Owns: the mitmdump command line (``--mode regular``, listen host/port, ``confdir=<data dir>/conf`` so
its CA is generated there, quiet flags, ``-s addon.py`` and the ``ise_*`` options), the proxy secret
(given as a file named by ``ISE_EGRESS_SECRET_FILE``, never on the command line; a random one when
none is passed), waiting until ``/v1/health`` answers, and stopping the process again.

``ca_cert_path`` is the PEM workspaces must trust (``mitmproxy-ca-cert.pem`` in confdir; mitmproxy
reuses it on the next start with the same data dir).  mitmdump's output goes to
``<data dir>/mitmdump.log``.  ``ISE_EGRESS_MITMDUMP`` names another mitmdump binary.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from services.egress import credentials
from services.egress.control import EgressControl, EgressError
from services.stack.procs import free_port

REPO = Path(__file__).resolve().parents[2]
ADDON = Path(__file__).resolve().parent / "addon.py"
DEFAULT_MITMDUMP = REPO / ".venv-egress" / "bin" / "mitmdump"
RECORD_BODY_BYTES = 1 << 20  # bodies recorded whole up to this size (web_fetch's page limit is the same)


def mitmdump_path() -> Path:
    path = Path(os.environ.get("ISE_EGRESS_MITMDUMP") or DEFAULT_MITMDUMP)
    if not os.access(path, os.X_OK):
        raise EgressError(
            f"mitmdump not found at {path}: run scripts/install.sh (it installs mitmproxy into .venv-egress)"
        )
    return path


class EgressProxy:
    """One mitmdump process.  ``with EgressProxy(data_dir, allow=["pypi.org"]) as proxy: proxy.address``."""

    def __init__(
        self,
        data_dir: Path | str,
        *,
        secret: str | None = None,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        allow: Iterable[str] = (),
        routes: Mapping[str, tuple[str, int]] | None = None,
        max_record_bytes: int = RECORD_BODY_BYTES,
        max_response_bytes: int = 16 << 20,
        start_timeout_s: float = 30.0,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.secret = secret or secrets.token_hex(32)
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.allow = list(allow)
        self.routes = dict(routes or {})
        self.max_record_bytes = max_record_bytes
        self.max_response_bytes = max_response_bytes
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    # -- what callers use -----------------------------------------------------------------------------
    @property
    def address(self) -> tuple[str, int]:
        if self.proc is None:
            raise EgressError("the egress proxy is not running")
        return self.listen_host, self.port

    @property
    def confdir(self) -> Path:
        return self.data_dir / "conf"

    @property
    def ca_cert_path(self) -> Path:
        return self.confdir / "mitmproxy-ca-cert.pem"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "mitmdump.log"

    @property
    def control(self) -> EgressControl:
        return EgressControl(self.address, self.secret)

    def proxy_url(self, episode_id: str, host: str | None = None) -> str:
        """The episode's ``HTTP_PROXY``/``HTTPS_PROXY`` value (``host`` as workspaces see the proxy)."""
        return credentials.proxy_url(host or self.listen_host, self.port, self.secret, episode_id)

    # -- lifecycle ------------------------------------------------------------------------------------
    def command(self, mitmdump: Path, port: int) -> list[str]:
        routes = ",".join(f"{h}={a}:{p}" for h, (a, p) in self.routes.items())
        return [
            str(mitmdump),
            "--mode", "regular",
            "--listen-host", self.listen_host,
            "--listen-port", str(port),
            "-q",
            "--set", f"confdir={self.confdir}",
            "--set", "termlog_verbosity=warn",
            "--set", "flow_detail=0",
            "-s", str(ADDON),
            "--set", f"ise_data_dir={self.data_dir}",
            "--set", f"ise_allow={','.join(self.allow)}",
            "--set", f"ise_routes={routes}",
            "--set", f"ise_max_record_bytes={self.max_record_bytes}",
            "--set", f"ise_max_response_bytes={self.max_response_bytes}",
        ]  # fmt: skip

    def start(self) -> EgressProxy:
        mitmdump = mitmdump_path()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        secret_file = self.data_dir / "secret"
        secret_file.touch(mode=0o600)
        secret_file.write_text(self.secret)
        env = {**os.environ, "ISE_EGRESS_SECRET_FILE": str(secret_file)}
        last_error = ""
        for _attempt in range(3):  # a port picked free can be taken before mitmdump binds it
            port = self.listen_port or free_port(self.listen_host)
            with self.log_path.open("ab") as log:
                self.proc = subprocess.Popen(
                    self.command(mitmdump, port), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.data_dir
                )
            self.port = port
            last_error = self.wait_ready()
            if not last_error:
                return self
            self.stop()
            if self.listen_port:
                break
        raise EgressError(f"mitmdump did not become ready: {last_error}\n--- {self.log_path} ---\n{self.log_tail()}")

    def wait_ready(self) -> str:
        """'' once /v1/health answers and the CA exists, else why not."""
        assert self.proc is not None
        deadline = time.monotonic() + self.start_timeout_s
        error = "timed out"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"exited with code {self.proc.returncode}"
            try:
                if self.control.health().get("ok") and self.ca_cert_path.exists():
                    return ""
            except EgressError as exc:
                error = str(exc)
            time.sleep(0.1)
        return f"timed out after {self.start_timeout_s}s ({error})"

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def __enter__(self) -> EgressProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
