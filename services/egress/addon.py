"""The egress proxy's mitmproxy addon: auth, host allow-list, local routes, recording, replay, control API.

Load with ``mitmdump --mode regular -s services/egress/addon.py --set ise_data_dir=...`` (see
``launcher.py``); runs inside ``.venv-egress`` (mitmproxy 11.0.2), so it uses only the standard
library, mitmproxy and ``credentials.py`` from its own folder.

Per request: (1) requests for host ``egress.ise.internal`` (plain HTTP through the proxy) are the
control API, authenticated by ``X-ISE-Control: <secret>``; (2) every other request, and every
CONNECT, needs ``Proxy-Authorization: Basic <episode_id>:<token>`` (see ``credentials.py``) or gets
407; requests inside an authenticated CONNECT tunnel inherit its episode; the header is stripped;
(3) the host (the real destination, never the Host header) must be a local route or on the
allow-list (``ise_allow``: exact hosts and ``*.suffix``) or gets 403; (4) an episode armed for replay
is answered from its recording only (key: method, URL, sha256 of the request body; repeated keys
are served in recorded order, the last one again once exhausted), a miss is 502; (5) local routes
(``ise_routes``: ``host=127.0.0.1:port``) send the request, HTTP or HTTPS, as plain HTTP to that
address with the original Host header. Every exchange of an episode, blocked and failed ones too,
is appended as one JSON line to ``<data dir>/recordings/<episode_id>.jsonl``.  Non-HTTP bytes inside
a tunnel (mitmproxy's raw TCP relay) are refused, and ``server_connect`` is a last gate: no upstream
socket is opened except to a local-route target or an allow-listed host.

Responses larger than ``ise_max_response_bytes`` are cut off by mitmproxy's own ``body_size_limit``
(set from that option; it applies to request bodies too): the client gets 502 "Response body
exceeds mitmproxy's body_size_limit." and the exchange is recorded with an ``error``.
Replay state is kept in memory (a restarted proxy has nothing armed).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import sys
import time
import weakref
from collections import deque
from pathlib import Path

from mitmproxy import ctx, exceptions, http, tcp
from mitmproxy.proxy import server_hooks

sys.path.insert(0, str(Path(__file__).resolve().parent))
import credentials

CONTROL_HOST = "egress.ise.internal"
SECRET_FILE_ENV = "ISE_EGRESS_SECRET_FILE"
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer"}
PROXY_AUTH = "Proxy-Authorization"


def text_response(status: int, text: str, headers: dict[str, str] | None = None) -> http.Response:
    return http.Response.make(
        status,
        text if text.endswith("\n") else text + "\n",
        {"Content-Type": "text/plain; charset=utf-8", **(headers or {})},
    )


def json_response(status: int, payload: object) -> http.Response:
    return http.Response.make(status, json.dumps(payload) + "\n", {"Content-Type": "application/json"})


def header_list(headers: http.Headers) -> list[list[str]]:
    return [[k.decode("latin-1"), v.decode("latin-1")] for k, v in headers.fields]


def body_fields(prefix: str, body: bytes | None, cap: int) -> dict[str, object]:
    body = body or b""
    return {
        f"{prefix}_body": base64.b64encode(body[:cap]).decode(),
        f"{prefix}_body_truncated": len(body) > cap,
        f"{prefix}_body_bytes": len(body),
        f"{prefix}_body_sha256": hashlib.sha256(body).hexdigest(),
    }


def parse_routes(spec: str) -> dict[str, tuple[str, int]]:
    routes: dict[str, tuple[str, int]] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        host, sep, target = item.partition("=")
        addr, _, port = target.rpartition(":")
        if not sep or not addr or not port.isdigit():
            raise ValueError(f"bad ise_routes entry {item!r}: want host=127.0.0.1:port")
        routes[host.strip().lower().rstrip(".")] = (addr.strip("[]"), int(port))
    return routes


class AllowList:
    """Exact hosts and ``*.suffix`` wildcards (a wildcard matches subdomains, not the bare suffix)."""

    def __init__(self, spec: str) -> None:
        items = [p.strip().lower().rstrip(".") for p in spec.split(",") if p.strip()]
        self.exact = {i for i in items if not i.startswith("*.")}
        self.suffixes = tuple(i[1:] for i in items if i.startswith("*."))

    def allows(self, host: str) -> bool:
        return host in self.exact or (bool(self.suffixes) and host.endswith(self.suffixes))


class ReplayIndex:
    """One episode's recorded responses by (method, url, request sha256), served in recorded order."""

    def __init__(self, lines: list[dict]) -> None:
        self.entries: dict[tuple[str, str, str], deque[dict]] = {}
        for line in lines:
            if line.get("status") is None or line.get("blocked") or line.get("replay") or line.get("error"):
                continue
            key = (line["method"], line["url"], line.get("request_body_sha256", ""))
            self.entries.setdefault(key, deque()).append(line)

    def __len__(self) -> int:
        return sum(len(q) for q in self.entries.values())

    def take(self, method: str, url: str, body_sha256: str) -> dict | None:
        queue = self.entries.get((method, url, body_sha256))
        if not queue:
            return None
        return queue.popleft() if len(queue) > 1 else queue[0]


def replayed_response(line: dict) -> http.Response:
    if line.get("response_body_truncated"):
        return text_response(502, "ISE egress replay: the recorded response body was truncated (ise_max_record_bytes)")
    body = base64.b64decode(line.get("response_body", ""))
    resp = http.Response.make(line["status"])
    resp.headers = http.Headers(
        [
            (k.encode("latin-1"), v.encode("latin-1"))
            for k, v in line.get("response_headers", [])
            if k.lower() not in HOP_BY_HOP
        ]
    )
    if "content-length" not in resp.headers:
        resp.headers["content-length"] = str(len(body))
    resp.headers["x-ise-egress-replay"] = "hit"
    resp.raw_content = body
    return resp


class EgressAddon:
    def __init__(self) -> None:
        self.secret = ""
        self.data_dir = Path.home() / ".cache" / "ise" / "egress"
        self.allow = AllowList("")
        self.routes: dict[str, tuple[str, int]] = {}
        self.route_targets: set[tuple[str, int]] = set()
        self.max_record = 1 << 20
        self.replays: dict[str, ReplayIndex] = {}
        self.tunnels: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # client conn -> episode
        self.raw_tcp: weakref.WeakSet = weakref.WeakSet()  # server conns of non-HTTP tunnels

    def load(self, loader) -> None:
        loader.add_option("ise_secret", str, "", f"Proxy secret (prefer a file named by ${SECRET_FILE_ENV}).")
        loader.add_option("ise_data_dir", str, "", "Where recordings/<episode_id>.jsonl are written.")
        loader.add_option("ise_allow", str, "", "Allowed hosts: comma list, *.suffix wildcards.")
        loader.add_option("ise_routes", str, "", "Local routes: host=127.0.0.1:port,... (sent as plain HTTP).")
        loader.add_option("ise_max_record_bytes", int, 1 << 20, "Bytes of each body kept in a recording.")
        loader.add_option("ise_max_response_bytes", int, 16 << 20, "Largest body passed through (else 502).")

    def configure(self, updated: set[str]) -> None:
        opts = ctx.options
        secret_file = os.environ.get(SECRET_FILE_ENV)
        self.secret = opts.ise_secret or (Path(secret_file).read_text().strip() if secret_file else "")
        if opts.ise_data_dir:
            self.data_dir = Path(opts.ise_data_dir)
        self.allow = AllowList(opts.ise_allow)
        try:
            self.routes = parse_routes(opts.ise_routes)
        except ValueError as exc:
            raise exceptions.OptionsError(str(exc)) from exc
        self.route_targets = set(self.routes.values())
        self.max_record = max(0, opts.ise_max_record_bytes)
        # Local routes name hosts DNS may not know: never connect upstream before the request is seen.
        wanted = {"connection_strategy": "lazy", "body_size_limit": str(opts.ise_max_response_bytes)}
        changes = {k: v for k, v in wanted.items() if getattr(opts, k) != v}
        if changes:
            opts.update(**changes)

    # -- recording ------------------------------------------------------------------------------------
    def recording_path(self, episode_id: str) -> Path:
        return self.data_dir / "recordings" / f"{episode_id}.jsonl"

    def append(self, episode_id: str, line: dict) -> None:
        path = self.recording_path(episode_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(line, separators=(",", ":")) + "\n")

    def start_line(self, flow: http.HTTPFlow, episode_id: str) -> dict:
        req = flow.request
        started = req.timestamp_start or time.time()
        return {
            "episode_id": episode_id,
            "started_at": dt.datetime.fromtimestamp(started, dt.UTC).isoformat(timespec="milliseconds"),
            "method": req.method,
            "url": req.url,
            "request_headers": header_list(req.headers),
            **body_fields("request", req.raw_content, self.max_record),
        }

    def finish(self, flow: http.HTTPFlow, error: str | None = None) -> None:
        line = flow.metadata.pop("ise", None)
        if line is None:
            return
        resp = flow.response
        if error is not None:
            line.update(status=502, response_headers=[], error=error)
        elif resp is not None:
            line.update(status=resp.status_code, response_headers=header_list(resp.headers))
            line.update(body_fields("response", resp.raw_content, self.max_record))
        end = (resp.timestamp_end if resp is not None and error is None else None) or time.time()
        line["duration_ms"] = round((end - (flow.request.timestamp_start or end)) * 1000, 3)
        episode_id = line.pop("episode_id")
        self.append(episode_id, line)

    # -- hooks ----------------------------------------------------------------------------------------
    def authenticate(self, flow: http.HTTPFlow) -> str | None:
        """The flow's episode (from its CONNECT tunnel or its own header); strips the header."""
        header = flow.request.headers.get(PROXY_AUTH)
        flow.request.headers.pop(PROXY_AUTH, None)
        return self.tunnels.get(flow.client_conn) or credentials.check(self.secret, header)

    def refuse_auth(self, flow: http.HTTPFlow) -> None:
        why = "no egress secret is configured" if not self.secret else "missing or invalid Proxy-Authorization"
        flow.response = text_response(
            407,
            f"ISE egress: proxy authentication required ({why}); use the episode's proxy URL "
            "http://<episode_id>:<token>@host:port",
            {"Proxy-Authenticate": 'Basic realm="ise-egress"'},
        )

    def blocked_text(self, host: str) -> str:
        return f"ISE egress: host {host} is not on the allow-list (setting ise_allow)"

    def routable(self, host: str) -> bool:
        return host in self.routes or self.allow.allows(host)

    def http_connect(self, flow: http.HTTPFlow) -> None:
        host = flow.request.host.lower().rstrip(".")
        episode_id = self.authenticate(flow)
        if episode_id is None:
            self.refuse_auth(flow)
            return
        if host == CONTROL_HOST or not self.routable(host):
            line = self.start_line(flow, episode_id)
            line.update(
                url=f"{host}:{flow.request.port}", blocked=True, status=403, response_headers=[], duration_ms=0.0
            )
            self.append(line.pop("episode_id"), line)
            text = "ISE egress: the control API is plain HTTP only" if host == CONTROL_HOST else self.blocked_text(host)
            flow.response = text_response(403, text)
            return
        self.tunnels[flow.client_conn] = episode_id

    def request(self, flow: http.HTTPFlow) -> None:
        req = flow.request
        host = req.host.lower().rstrip(".")
        if host == CONTROL_HOST and flow.client_conn not in self.tunnels:
            flow.response = self.control(req)
            return
        episode_id = self.authenticate(flow)
        if episode_id is None:
            self.refuse_auth(flow)
            return
        line = flow.metadata["ise"] = self.start_line(flow, episode_id)
        if not self.routable(host):
            line["blocked"] = True
            flow.response = text_response(403, self.blocked_text(host))
            return
        index = self.replays.get(episode_id)
        if index is not None:
            line["replay"] = True
            hit = index.take(req.method, line["url"], line["request_body_sha256"])
            if hit is None:
                line["error"] = "replay miss"
                flow.response = text_response(
                    502, f"ISE egress replay: no recorded response for {req.method} {line['url']}"
                )
            else:
                flow.response = replayed_response(hit)
            return
        route = self.routes.get(host)
        if route is not None:
            host_header = req.host_header
            req.scheme = "http"
            req.host, req.port = route
            req.host_header = host_header

    def tcp_start(self, flow: tcp.TCPFlow) -> None:
        """Non-HTTP bytes in a tunnel would be relayed unrecorded: refuse them at ``server_connect``."""
        self.raw_tcp.add(flow.server_conn)
        episode_id = self.tunnels.get(flow.client_conn)
        if episode_id is not None:
            address = flow.server_conn.address or ("?", 0)
            self.append(
                episode_id,
                {
                    "method": "TCP",
                    "url": f"{address[0]}:{address[1]}",
                    "blocked": True,
                    "status": None,
                    "error": "raw TCP (not HTTP) is not relayed",
                    "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                },
            )

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        """Last gate before any upstream socket: only local-route targets and allow-listed hosts."""
        server = data.server
        host, port = server.address or ("", 0)
        if server in self.raw_tcp:
            server.error = "ISE egress: raw TCP is not relayed"
        elif (host, port) not in self.route_targets and not self.allow.allows(host.lower().rstrip(".")):
            server.error = f"ISE egress: connection to {host}:{port} is not allowed"

    def response(self, flow: http.HTTPFlow) -> None:
        self.finish(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self.finish(flow, error=flow.error.msg if flow.error else "unknown error")

    # -- control API ----------------------------------------------------------------------------------
    def control(self, req: http.Request) -> http.Response:
        given = req.headers.get("X-ISE-Control", "")
        if not self.secret or not hmac.compare_digest(given.encode(), self.secret.encode()):
            return text_response(401, "ISE egress: control API needs header X-ISE-Control: <secret>")
        parts = req.path.split("?", 1)[0].strip("/").split("/")
        if parts == ["v1", "health"] and req.method == "GET":
            return json_response(200, {"ok": True, "pid": os.getpid(), "replay_armed": sorted(self.replays)})
        if len(parts) != 3 or parts[0] != "v1" or parts[1] not in ("recordings", "replay"):
            return text_response(404, f"ISE egress: no control route {req.method} {req.path}")
        kind, episode_id = parts[1], parts[2]
        if not credentials.valid_episode_id(episode_id):
            return text_response(400, f"ISE egress: invalid episode id {episode_id!r}: want [A-Za-z0-9_.-]{{1,128}}")
        path = self.recording_path(episode_id)
        if (kind, req.method) == ("recordings", "GET"):
            if not path.exists():
                return text_response(404, f"ISE egress: no recording for episode {episode_id}")
            return http.Response.make(200, path.read_bytes(), {"Content-Type": "application/x-ndjson"})
        if (kind, req.method) == ("recordings", "DELETE"):
            existed = path.exists()
            path.unlink(missing_ok=True)
            return json_response(200, {"deleted": existed})
        if (kind, req.method) == ("replay", "PUT"):
            try:
                lines = [json.loads(s) for s in (req.raw_content or b"").decode().splitlines() if s.strip()]
                self.replays[episode_id] = index = ReplayIndex(lines)
            except (ValueError, KeyError, TypeError) as exc:
                return text_response(400, f"ISE egress: bad replay JSONL: {exc}")
            return json_response(200, {"armed": episode_id, "exchanges": len(index)})
        if (kind, req.method) == ("replay", "DELETE"):
            return json_response(200, {"disarmed": self.replays.pop(episode_id, None) is not None})
        return text_response(405, f"ISE egress: method {req.method} not allowed on {req.path}")


addons = [EgressAddon()]
