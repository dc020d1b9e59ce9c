"""A deterministic, scripted OpenAI-compatible HTTP server standing in for a real LLM.

Used by tests, benchmarks and ``ise run --llm scripted``: the production ``openai`` client talks
to it over real HTTP. The request's ``model`` is ``"<scenario>:<role>"``: the scenario is a YAML
file ``<scenario>.yaml`` (looked up in extra script dirs first, then the built-in ``scripts/``),
the role one of ``intent``, ``user``, ``agent``. The reply rules live in ``scripted_policy``
(pure logic); this module only does HTTP, scenario loading and the request log.

Endpoints (stdlib ``ThreadingHTTPServer`` in a daemon thread)::

    POST /v1/chat/completions   non-streaming chat.completion; "stream": true -> 400
    GET  /v1/models             every "<scenario>:<role>" the scripts define
    GET  /health                {"status": "ok"}
    GET  /_scripted/requests    the last requests received (?limit=N), oldest first
    POST /_scripted/reset       clear the request log and the scenario cache

``delay_s`` (constructor, ``--delay-s``) holds every chat completion that long before it is
answered, mimicking a remote model's latency for benchmarks (``bench/bench_scale.py``). Each
connection has its own thread, so concurrent requests wait their delays at the same time.

A scenario may start with ``extends: <other>``: its role sections are merged over the other's
(two levels deep). Errors use OpenAI's shape ``{"error": {message, type, param, code}}``.

Standalone: ``python -m services.common.llm.scripted_server --port 8765`` prints the base URL
and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import signal
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from services.common.llm import scripted_policy as policy

log = logging.getLogger(__name__)

BUILTIN_SCRIPTS = Path(__file__).with_name("scripts")
DEFAULT_HISTORY = 500
_SCENARIO_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ScenarioStore:
    """Finds, loads (resolving ``extends``), validates and caches scenario YAML files."""

    def __init__(self, dirs: Iterable[Path]) -> None:
        self._dirs = [Path(d) for d in dirs]
        self._cache: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        """Every scenario name available in the script dirs."""
        return sorted({p.stem for d in self._dirs if d.is_dir() for p in d.glob("*.yaml")})

    def get(self, name: str) -> dict[str, Any]:
        """The merged, validated scenario; a 404 :class:`PolicyError` when there is none."""
        with self._lock:
            if name not in self._cache:
                self._cache[name] = self._load(name, ())
            return self._cache[name]

    def clear(self) -> None:
        """Forget cached scenarios so edited files are read again."""
        with self._lock:
            self._cache.clear()

    def _load(self, name: str, chain: tuple[str, ...]) -> dict[str, Any]:
        if name in chain:
            raise policy.ScenarioError(f"scenario extends loop: {' -> '.join((*chain, name))}")
        path = self._find(name)
        if path is None:
            raise policy.unknown_scenario(name, self.names())
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_YamlLoader) or {}
        if not isinstance(doc, Mapping):
            raise policy.ScenarioError(f"scenario {name}: {path} must hold a mapping")
        parent = doc.get("extends")
        merged = policy.merge_scenarios(self._load(str(parent), (*chain, name)), doc) if parent else dict(doc)
        policy.validate_scenario(name, merged)
        return merged

    def _find(self, name: str) -> Path | None:
        if not _SCENARIO_NAME.match(name):
            return None
        return next((d / f"{name}.yaml" for d in self._dirs if (d / f"{name}.yaml").is_file()), None)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # many replicas connect at once; the default backlog of 5 drops SYNs (1 s retries)
    app: ScriptedLLMServer


class _Handler(BaseHTTPRequestHandler):
    """Routes requests to the owning :class:`ScriptedLLMServer`."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes; avoid 40 ms delayed-ACK stalls
    server: _HTTPServer

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        try:
            raw = self._read_body() if method == "POST" else b""
            status, payload = self.server.app.handle(method, url.path.rstrip("/") or "/", parse_qs(url.query), raw)
        except Exception as exc:  # answer in OpenAI's error shape instead of dropping the connection
            log.exception("scripted llm: %s %s failed", method, self.path)
            status, payload = 500, policy.PolicyError(500, f"{type(exc).__name__}: {exc}", "internal_error").body()
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length == 0 and self.headers.get("Transfer-Encoding"):
            self.close_connection = True  # a body we do not read would corrupt the next request
        return self.rfile.read(length) if length > 0 else b""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("scripted llm: " + format, *args)


class ScriptedLLMServer:
    """The scripted OpenAI-compatible server; ``start()`` returns ``http://host:port/v1``.

    ``scripts_dirs`` are searched before the built-in ``scripts/`` directory, so tests can add
    scenarios without touching the package. ``history`` bounds the request log. ``delay_s``
    holds each chat completion that many seconds (in its own thread) before answering.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        scripts_dirs: Iterable[Path | str] = (),
        history: int = DEFAULT_HISTORY,
        delay_s: float = 0.0,
    ) -> None:
        if delay_s < 0:
            raise ValueError(f"delay_s must be 0 or more seconds, not {delay_s}")
        self.host = host
        self.delay_s = delay_s
        self.port = port
        self.scenarios = ScenarioStore([*(Path(d) for d in scripts_dirs), BUILTIN_SCRIPTS])
        self._log: deque[dict[str, Any]] = deque(maxlen=history)
        self._log_lock = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        """``http://host:port/v1`` once started."""
        if self._httpd is None:
            raise RuntimeError("ScriptedLLMServer is not started")
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> str:
        """Bind, serve in a daemon thread and return the base URL (idempotent)."""
        if self._httpd is None:
            self._httpd = _HTTPServer((self.host, self.port), _Handler)
            self._httpd.app = self
            self.port = self._httpd.server_address[1]
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, name=f"scripted-llm-{self.port}", daemon=True
            )
            self._thread.start()
        return self.base_url

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            if self._thread is not None:
                self._thread.join()
            self._httpd, self._thread = None, None

    def __enter__(self) -> ScriptedLLMServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------ request log

    def requests(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The last ``limit`` logged requests (all kept ones when None), oldest first."""
        with self._log_lock:
            items = list(self._log)
        return items[-limit:] if limit else items

    def reset(self) -> None:
        """Clear the request log and the scenario cache."""
        with self._log_lock:
            self._log.clear()
        self.scenarios.clear()

    # ------------------------------------------------------------ routing

    def handle(self, method: str, path: str, query: Mapping[str, list[str]], raw: bytes) -> tuple[int, Any]:
        """Answer one HTTP request: (status, JSON payload)."""
        route = (method, path)
        if route == ("POST", "/v1/chat/completions"):
            if self.delay_s:
                time.sleep(self.delay_s)  # this request's thread only: the others are served meanwhile
            return self._chat(raw)
        if route == ("GET", "/v1/models"):
            return 200, {"object": "list", "data": self.models()}
        if route == ("GET", "/health"):
            return 200, {"status": "ok"}
        if route == ("GET", "/_scripted/requests"):
            limit = query.get("limit", ["0"])[0]
            if not limit.isdigit():
                return 400, policy.PolicyError(400, "limit must be a whole number", "invalid_limit", "limit").body()
            return 200, {"object": "list", "data": self.requests(int(limit) or None)}
        if route == ("POST", "/_scripted/reset"):
            self.reset()
            return 200, {"status": "reset"}
        error = policy.PolicyError(404, f"no route {method} {path}", "unknown_url")
        return error.status, error.body()

    def models(self) -> list[dict[str, Any]]:
        """OpenAI model objects for every scenario role that loads."""
        ids = []
        for name in self.scenarios.names():
            try:
                ids += [f"{name}:{role}" for role in policy.roles_of(self.scenarios.get(name))]
            except (policy.PolicyError, policy.ScenarioError, yaml.YAMLError) as exc:
                log.warning("scripted llm: scenario %s does not load: %s", name, exc)
        return [{"id": i, "object": "model", "created": policy.CREATED, "owned_by": "ise-scripted"} for i in ids]

    def _chat(self, raw: bytes) -> tuple[int, Any]:
        record: dict[str, Any] = {"method": "POST", "path": "/v1/chat/completions", "model": None}
        try:
            body = _parse_body(raw)
            record.update(model=body.get("model"), body=body)
            status, payload = 200, self._complete(body)
        except policy.PolicyError as exc:
            record.setdefault("body", raw.decode("utf-8", "replace"))
            status, payload = exc.status, exc.body()
        except (policy.ScenarioError, yaml.YAMLError) as exc:
            status, payload = 500, policy.PolicyError(500, f"scenario file error: {exc}", "scenario_invalid").body()
        record.update(status=status, response=payload)
        with self._log_lock:
            self._log.append(record)
        return status, payload

    def _complete(self, body: Mapping[str, Any]) -> dict[str, Any]:
        if body.get("stream"):
            raise policy.PolicyError(
                400, "the scripted LLM does not stream; send stream=false", "stream_unsupported", "stream"
            )
        model = body.get("model")
        if not isinstance(model, str):
            raise policy.PolicyError(400, "'model' must be a string '<scenario>:<role>'", "invalid_model", "model")
        scenario_name, role = policy.split_model(model)
        scenario = self.scenarios.get(scenario_name)
        policy.check_role(scenario_name, scenario, role)
        return policy.build_completion(scenario, role, body)


def _parse_body(raw: bytes) -> dict[str, Any]:
    """The JSON object of a request body, or a 400 :class:`PolicyError`."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise policy.PolicyError(400, f"request body is not valid JSON: {exc}", "invalid_json") from exc
    if not isinstance(body, dict):
        raise policy.PolicyError(400, "request body must be a JSON object", "invalid_json")
    return body


def main(argv: list[str] | None = None) -> int:
    """Run the server in the foreground until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description="Deterministic scripted OpenAI-compatible LLM server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--scripts-dir", action="append", default=[], help="extra scenario dir (repeatable)")
    parser.add_argument(
        "--delay-s",
        type=float,
        default=0.0,
        help="seconds each chat completion waits before its answer, like a remote model (default 0)",
    )
    args = parser.parse_args(argv)
    if args.delay_s < 0:
        parser.error("--delay-s must be 0 or more seconds")
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    with ScriptedLLMServer(args.host, args.port, args.scripts_dir, delay_s=args.delay_s) as server:
        print(server.base_url, flush=True)
        stopping.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
