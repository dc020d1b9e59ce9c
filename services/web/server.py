"""The local web's HTTP server: one threaded stdlib server on loopback that routes by host name
(the ``Host`` header, or the host of an absolute-form target as a client using it as an HTTP proxy
sends) to the docs mirror, the search API and the dumb-HTTP git repositories. Read-only."""

from __future__ import annotations

import json
import logging
import mimetypes
import shutil
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from services.web.cache import WebCache, ensure_cache
from services.web.corpus import DOCS_HOST, DOCS_PREFIX, EXTRA_ROOTS
from services.web.gitrepos import GIT_HOST, clone_url
from services.web.index import MAX_COUNT

log = logging.getLogger("ise.web.server")

SEARCH_HOST = "search.ise.test"
SEARCH_USAGE = f"GET http://{SEARCH_HOST}/search?q=<words>&count=<1-{MAX_COUNT}, default 5>"
MAX_QUERY_CHARS = 512
GIT_TYPES = {
    "pack": "application/x-git-packed-objects",
    "idx": "application/x-git-packed-objects-toc",
}


def served_hosts() -> tuple[str, ...]:
    """The host names this server answers for (the egress proxy routes these here)."""
    return (DOCS_HOST, SEARCH_HOST, GIT_HOST)


class BadPath(ValueError):
    """A request path that can never name a file (``..``, NUL, backslash, bad encoding)."""


def safe_file(
    root: Path, raw_rel: str, extra_roots: tuple[Path, ...] = (), directory_index: str | None = "index.html"
) -> Path | None:
    """The file that the still-percent-encoded relative path ``raw_rel`` names under ``root`` (or,
    through a symlink, under one of ``extra_roots``), or None; a directory means its
    ``directory_index``. Raises BadPath for a path that tries to leave."""
    try:
        rel = unquote(raw_rel, errors="strict")
    except UnicodeDecodeError:
        raise BadPath("the path is not valid percent-encoded UTF-8") from None
    if "\x00" in rel or "\\" in rel:
        raise BadPath("the path holds a NUL or a backslash")
    segments = rel.split("/")
    if any(s in {".", ".."} for s in segments):
        raise BadPath("the path holds a '.' or '..' segment")
    candidate = root.joinpath(*(s for s in segments if s))
    if rel == "" or rel.endswith("/") or candidate.is_dir():
        if directory_index is None:
            return None
        candidate = candidate / directory_index
    real = candidate.resolve()
    allowed = (root.resolve(), *(r.resolve() for r in extra_roots))
    if not any(real.is_relative_to(r) for r in allowed) or not real.is_file():
        return None
    return real


def _git_content_type(rel: str) -> str:
    """The types git-http-backend gives the files of a dumb-HTTP repository."""
    parts = rel.split("/")
    if parts[0] == "objects" and len(parts) == 3 and len(parts[1]) == 2:
        return "application/x-git-loose-object"
    return GIT_TYPES.get(rel.rsplit(".", 1)[-1], "text/plain; charset=utf-8")


def _content_type(path: Path) -> str:
    kind, encoding = mimetypes.guess_type(path.name)
    if encoding == "gzip":
        return "application/gzip"
    kind = kind or "application/octet-stream"
    return f"{kind}; charset=utf-8" if kind.startswith("text/") or kind.endswith("javascript") else kind


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    cache: WebCache

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that drops its keep-alive connection (git does, at exit) is routine."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            log.debug("client %s closed the connection", client_address)
        else:
            log.exception("error on a connection from %s", client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ise-localweb/1"
    timeout = 30  # an idle keep-alive connection is closed after this
    server: _Server

    # -- plumbing -------------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: dict[str, Any]) -> None:
        body = (json.dumps(data, ensure_ascii=False, indent=1) + "\n").encode()
        self._send(status, body, "application/json; charset=utf-8")

    def _text(self, status: int, text: str) -> None:
        self._send(status, text.encode(), "text/plain; charset=utf-8")

    def _file(self, path: Path, extra_headers: dict[str, str] | None = None, content_type: str = "") -> None:
        size = path.stat().st_size
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type or _content_type(path))
        self.send_header("Content-Length", str(size))
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            with path.open("rb") as f:
                shutil.copyfileobj(f, self.wfile)

    def _target(self) -> tuple[str, str, str]:
        """(host, path still percent-encoded, query) for origin-form and absolute-form targets."""
        raw = self.path.split("#", 1)[0]
        if raw.lower().startswith(("http://", "https://")):
            parts = urlsplit(raw)
            return (parts.hostname or "").lower().rstrip("."), parts.path or "/", parts.query
        path, _, query = raw.partition("?")
        try:  # "name:port" and "[v6]:port" alike
            host = urlsplit("//" + (self.headers.get("Host") or "").strip()).hostname or ""
        except ValueError:
            host = ""
        return host.lower().rstrip("."), path, query

    # -- methods --------------------------------------------------------------------------------
    def do_GET(self) -> None:
        try:
            self._route()
        except BrokenPipeError:
            self.close_connection = True
        except Exception as exc:
            log.exception("error serving %s", self.path)
            self.close_connection = True
            self._json(500, {"error": f"internal error: {type(exc).__name__}"})

    do_HEAD = do_GET

    def _read_only(self) -> None:
        self.close_connection = True  # the body (if any) is not read
        self._send(
            405,
            b'{"error": "this local web is read-only: use GET or HEAD"}\n',
            "application/json",
            {"Allow": "GET, HEAD"},
        )

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_PROPFIND = do_MKCOL = do_LOCK = _read_only

    def do_CONNECT(self) -> None:
        self.close_connection = True
        self._json(
            405,
            {
                "error": "no CONNECT tunnels here: send plain-HTTP requests (absolute-form targets are fine)",
                "hosts": list(served_hosts()),
            },
        )

    def _route(self) -> None:
        host, path, query = self._target()
        if not path.startswith("/"):
            self._json(400, {"error": "the request target must be a path or an absolute http:// URL"})
        elif host == DOCS_HOST:
            self._docs(path)
        elif host == SEARCH_HOST:
            self._search(path, query)
        elif host == GIT_HOST:
            self._git(path)
        else:
            self._json(
                404, {"error": f"this local web does not serve the host {host!r}", "hosts": list(served_hosts())}
            )

    # -- virtual hosts --------------------------------------------------------------------------
    def _docs_404(self, status: int, why: str) -> None:
        page = (
            f"<!DOCTYPE html><html><head><title>{status} {HTTPStatus(status).phrase}</title></head>"
            f"<body><h1>{status} {HTTPStatus(status).phrase}</h1><p>{why}</p>"
            f'<p><a href="{DOCS_PREFIX}">Python 3.11 documentation</a></p></body></html>\n'
        )
        self._send(status, page.encode(), "text/html; charset=utf-8")

    def _docs(self, path: str) -> None:
        if path in {"/", DOCS_PREFIX.rstrip("/")}:
            self._send(301, b"", "text/plain", {"Location": DOCS_PREFIX})
            return
        if not path.startswith(DOCS_PREFIX):
            self._docs_404(404, f"Only the Python 3.11 documentation is mirrored here, under {DOCS_PREFIX}.")
            return
        try:
            found = safe_file(self.server.cache.doc_root, path[len(DOCS_PREFIX) :], EXTRA_ROOTS)
        except BadPath as exc:
            self._docs_404(400, str(exc))
            return
        if found is None:
            self._docs_404(404, "No such page in the Python 3.11 documentation.")
        else:
            self._file(found)

    def _search(self, path: str, query: str) -> None:
        if path in {"/", ""}:
            self._json(200, {"usage": SEARCH_USAGE, "corpus": "Python 3.11 documentation (docs.python.org/3.11)"})
            return
        if path.rstrip("/") != "/search":
            self._json(404, {"error": f"no such endpoint {path!r}", "usage": SEARCH_USAGE})
            return
        params = parse_qs(query, keep_blank_values=True)
        q = (params.get("q") or [""])[0].strip()
        if not q:
            self._json(400, {"error": "missing query: send q=<words>", "usage": SEARCH_USAGE})
            return
        if len(q) > MAX_QUERY_CHARS:
            self._json(400, {"error": f"q is too long (at most {MAX_QUERY_CHARS} characters)", "usage": SEARCH_USAGE})
            return
        raw_count = (params.get("count") or ["5"])[0].strip()
        if not raw_count.isdigit() or not 1 <= int(raw_count) <= MAX_COUNT:
            self._json(
                400,
                {
                    "error": f"count must be a whole number from 1 to {MAX_COUNT}, got {raw_count!r}",
                    "usage": SEARCH_USAGE,
                },
            )
            return
        results = self.server.cache.index.search(q, int(raw_count))
        self._json(200, {"query": q, "results": [r.as_json() for r in results]})

    def _git(self, path: str) -> None:
        repos = self.server.cache.repos
        if path.rstrip("/") == "":
            lines = [f"{name}\t{clone_url(name)}" for name in repos]
            self._text(200, "Read-only git repositories (dumb HTTP); clone with:\n" + "\n".join(lines) + "\n")
            return
        first, _, rest = path[1:].partition("/")
        name = first.removesuffix(".git")
        if name not in repos:
            self._text(404, f"no repository {first!r}; repositories: {', '.join(repos)}\n")
            return
        try:
            found = safe_file(self.server.cache.git_dir / f"{name}.git", rest, directory_index=None)
        except BadPath as exc:
            self._text(400, f"{exc}\n")
            return
        if found is None:
            self._text(404, f"not found in {name}.git: {rest or '(the repository root)'}\n")
        else:
            self._file(found, {"Cache-Control": "no-cache"}, _git_content_type(rest))


class LocalWeb:
    """The local web, served from a thread: ``start()`` -> ``(host, port)``, ``stop()``.

    Point a client at it either by host name (``Host: docs.python.org``) or as an HTTP proxy
    (``curl -x http://HOST:PORT``, ``git -c http.proxy=http://HOST:PORT``)."""

    def __init__(self, cache: WebCache | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self._cache = cache
        self._bind = (host, port)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def cache(self) -> WebCache:
        if self._cache is None:
            self._cache = ensure_cache()
        return self._cache

    def start(self) -> tuple[str, int]:
        """Open the cache (building it on first use), bind and serve; returns the bound address."""
        if self._server is not None:
            return self.address
        cache = self.cache
        _ = cache.index  # load now, not on the first search request
        server = _Server(self._bind, _Handler)
        server.cache = cache
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="ise-localweb", daemon=True)
        self._thread.start()
        log.info("local web on http://%s:%d serving %s", *self.address, ", ".join(served_hosts()))
        return self.address

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            raise RuntimeError("the local web is not started")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def proxy_url(self) -> str:
        """``http://host:port``: use it as an HTTP proxy to reach the served hosts."""
        return "http://{}:{}".format(*self.address)

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (for the CLI)."""
        self.start()
        assert self._thread is not None
        try:
            while self._thread.is_alive():
                self._thread.join(timeout=1)
        finally:
            self.stop()

    def __enter__(self) -> LocalWeb:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
