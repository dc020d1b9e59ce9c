"""The viewer's HTTP server: standard-library ``ThreadingHTTPServer`` on loopback only.

Routes: ``/`` the list (query string: ``verdict``, ``domain``, ``complexity``, ``tool``, ``turns``,
``q``, ``page``), ``/t/N`` record N as a conversation, ``/t/N.json`` its raw JSON, and
``/static/viewer.css``. Pages are rendered on the server; no script runs in the browser, and a
Content-Security-Policy says so, so record text can never execute even if it slipped through.
"""

from __future__ import annotations

import errno
import json
import logging
import re
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlsplit

from services.common.errors import ConfigError
from services.viewer import render
from services.viewer.index import DatasetIndex, Query

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_RECORD = re.compile(r"/t/(\d{1,9})(\.json)?")


class ViewerServer(ThreadingHTTPServer):
    """Serves one :class:`DatasetIndex`; ``source`` is what the pages say they show."""

    daemon_threads = True

    def __init__(self, index: DatasetIndex, source: str, port: int = 0) -> None:
        self.index = index
        self.source = source
        self.stylesheet = resources.files("services.viewer").joinpath("static/viewer.css").read_bytes()
        try:
            super().__init__((HOST, port), _Handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"port {port} on {HOST} is in use; pass another --port, or leave --port out for a free one"
                ) from None
            if exc.errno == errno.EACCES:
                raise ConfigError(f"port {port} needs privileges; pass --port 1024 or above, or leave it out") from None
            raise

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}/"


class _Handler(BaseHTTPRequestHandler):
    server: ViewerServer
    server_version = "ise-view"

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        server = self.server
        if parts.path == "/":
            query = Query.parse(parse_qs(parts.query))
            self._send(HTTPStatus.OK, "text/html", render.list_page(server.index, query, server.source).encode())
            return
        if parts.path == "/static/viewer.css":
            self._send(HTTPStatus.OK, "text/css", server.stylesheet)
            return
        found = _RECORD.fullmatch(parts.path)
        if found is None:
            self._error(HTTPStatus.NOT_FOUND, f"nothing at {parts.path}: the list is at /, record N at /t/N")
            return
        self._record(int(found.group(1)), bool(found.group(2)))

    def _record(self, n: int, raw: bool) -> None:
        index = self.server.index
        try:
            if raw:
                body = json.dumps(index.record(n), ensure_ascii=False, indent=2).encode()
                self._send(HTTPStatus.OK, "application/json", body)
            else:
                self._send(HTTPStatus.OK, "text/html", render.trajectory_page(index, n, self.server.source).encode())
        except IndexError as exc:
            self._error(HTTPStatus.NOT_FOUND, str(exc))
        except (ValueError, OSError) as exc:
            message = f"{index.where(n)} could not be read again ({exc}); the file changed since `ise view` started: restart it"
            self._error(HTTPStatus.CONFLICT, message)

    def _error(self, status: HTTPStatus, message: str) -> None:
        self._send(status, "text/html", render.error_page(status.value, message, self.server.source).encode())

    def _send(self, status: HTTPStatus, kind: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", f"{kind}; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.address_string(), *args)
