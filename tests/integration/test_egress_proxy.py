"""The egress proxy end to end: real mitmdump (``.venv-egress``), real upstream HTTP servers, a real
workspace container on the internal egress network running ``curl`` and ``python3``.

Upstreams are stdlib ``ThreadingHTTPServer`` on loopback, reached through the proxy's local routes
(``docs.ise.test``, ``replay.ise.test``).  The proxy listens on the egress network's gateway IP; the
host talks to it there too.  Prints the proxy's added latency and recording bytes per request.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import shlex
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import docker
import pytest

from services.egress import credentials
from services.egress.launcher import EgressProxy
from services.egress.network import (
    CA_PATH_IN_WORKSPACE,
    ca_mount,
    ensure_egress_network,
    release_host_port,
    remove_egress_network,
    remove_host_restriction,
    restrict_host_ports,
    workspace_env,
)

pytestmark = pytest.mark.integration

MAX_RESPONSE = 256 * 1024
PAGE = ("<html><body><h1>ISE docs</h1>" + "<p>lorem ipsum dolor sit amet</p>" * 60 + "</body></html>").encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def send(self, status: int, body: bytes, ctype: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Seen-Host", self.headers.get("Host", ""))
        self.send_header("X-Seen-Proxy-Auth", "yes" if "Proxy-Authorization" in self.headers else "no")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        server: Upstream = self.server  # type: ignore[assignment]
        server.hits += 1
        if self.path == "/page":
            self.send(200, PAGE, "text/html")
        elif self.path == "/counter":
            self.send(200, f"hit {server.hits} {uuid.uuid4().hex}".encode())
        elif self.path == "/big":
            self.send(200, b"x" * (MAX_RESPONSE + 1))
        elif self.path == "/bigchunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(5):
                chunk = b"y" * (MAX_RESPONSE // 4)
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send(404, b"not found")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send(200, f"sha256={hashlib.sha256(body).hexdigest()} {uuid.uuid4().hex}".encode())


class Upstream(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__((host, 0), Handler)
        self.hits = 0
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def via_proxy(proxy: EgressProxy, episode: str | None, method: str, url: str, body: bytes | None = None):
    """One request through the proxy from the host (fresh connection): (status, body, headers)."""
    conn = http.client.HTTPConnection(*proxy.address, timeout=15)
    headers = {"Proxy-Authorization": credentials.basic_header(proxy.secret, episode)} if episode else {}
    try:
        conn.request(method, url, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read(), dict(resp.getheaders())
    finally:
        conn.close()


@pytest.fixture(scope="module")
def docker_client() -> docker.DockerClient:
    from services.stack.docker_daemon import ensure_docker
    from services.stack.workspace_image import DEFAULT_TAG, ensure_workspace_image

    ensure_docker()
    ensure_workspace_image(DEFAULT_TAG)
    return docker.from_env()


@pytest.fixture(scope="module")
def net(docker_client: docker.DockerClient):
    name = f"iseg-{uuid.uuid4().hex[:6]}"
    network = ensure_egress_network(docker_client, name)
    assert ensure_egress_network(docker_client, name) == network  # idempotent
    yield network
    remove_egress_network(docker_client, name)
    remove_host_restriction(network)


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, Upstream]]:
    servers = {"docs": Upstream(), "replay": Upstream()}
    yield servers
    for server in servers.values():
        if server.socket.fileno() != -1:
            server.stop()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, net, upstreams) -> Iterator[EgressProxy]:
    routes = {f"{k}.ise.test": ("127.0.0.1", s.port) for k, s in upstreams.items()}
    egress = EgressProxy(
        tmp_path_factory.mktemp("egress"),
        listen_host=net.gateway_ip,
        allow=["localhost", "*.wild.test"],
        routes=routes,
        max_record_bytes=64 * 1024,
        max_response_bytes=MAX_RESPONSE,
    )
    with egress:
        restrict_host_ports(net, [egress.port])
        yield egress
        release_host_port(net, egress.port)


@pytest.fixture(scope="module")
def workspace(docker_client: docker.DockerClient, net, proxy: EgressProxy):
    from services.stack.workspace_image import DEFAULT_TAG

    container = docker_client.containers.run(
        DEFAULT_TAG,
        ["sleep", "infinity"],
        name=f"ise-egress-it-{uuid.uuid4().hex[:8]}",
        network=net.name,
        volumes=ca_mount(proxy.ca_cert_path),
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        init=True,
        detach=True,
    )
    yield container
    container.remove(force=True)


def sh(container, episode: str | None, script: str, proxy: EgressProxy | None = None) -> tuple[int, str]:
    env = workspace_env(proxy.proxy_url(episode)) if proxy and episode else {}
    code, out = container.exec_run(["sh", "-c", script], environment=env)
    return code, out.decode(errors="replace")


def curl(url: str, *flags: str) -> str:
    return "curl -sS -m 10 -w '\\n%{http_code}' " + " ".join(flags) + " " + shlex.quote(url)


def episode() -> str:
    return f"ep-{uuid.uuid4().hex[:10]}"


def test_credentials_roundtrip() -> None:
    token = credentials.token_for("s3cret", "ep-1")
    assert len(token) == 32 and token == credentials.token_for("s3cret", "ep-1")
    assert credentials.proxy_url("10.0.0.1", 8080, "s3cret", "ep-1") == f"http://ep-1:{token}@10.0.0.1:8080"
    assert credentials.check("s3cret", credentials.basic_header("s3cret", "ep-1")) == "ep-1"
    assert credentials.check("other", credentials.basic_header("s3cret", "ep-1")) is None
    assert credentials.check("s3cret", "Basic " + base64.b64encode(b"ep-1:wrong").decode()) is None
    assert credentials.check("s3cret", None) is None
    with pytest.raises(ValueError):
        credentials.token_for("s3cret", "../etc")


def test_allowed_local_route_from_workspace_is_recorded(workspace, proxy: EgressProxy) -> None:
    ep = episode()
    code, out = sh(workspace, ep, curl("http://docs.ise.test/page", "-D -"), proxy)
    assert code == 0 and out.endswith("\n200"), out
    assert PAGE.decode() in out
    assert "X-Seen-Host: docs.ise.test" in out and "X-Seen-Proxy-Auth: no" in out
    [line] = proxy.control.fetch_recording(ep)
    assert line["method"] == "GET" and line["url"] == "http://docs.ise.test/page" and line["status"] == 200
    assert base64.b64decode(line["response_body"]) == PAGE
    assert line["response_body_sha256"] == hashlib.sha256(PAGE).hexdigest()
    assert not any(k.lower() == "proxy-authorization" for k, _ in line["request_headers"])
    assert line["duration_ms"] >= 0 and line["started_at"].endswith("+00:00")


def test_allow_list_exact_and_wildcard(proxy: EgressProxy, upstreams) -> None:
    ep = episode()
    status, body, _ = via_proxy(proxy, ep, "GET", f"http://localhost:{upstreams['docs'].port}/page")
    assert (status, body) == (200, PAGE)
    status, body, _ = via_proxy(proxy, ep, "GET", "http://a.wild.test/")  # allowed, but no such host
    assert status == 502
    status, body, _ = via_proxy(proxy, ep, "GET", "http://wild.test/")  # *.x does not match x itself
    assert status == 403
    lines = proxy.control.fetch_recording(ep)
    assert [ln["status"] for ln in lines] == [200, 502, 403]
    assert "error" in lines[1] and lines[2]["blocked"] is True


def test_blocked_host_is_403_and_recorded(workspace, proxy: EgressProxy) -> None:
    ep = episode()
    code, out = sh(workspace, ep, curl("http://deb.debian.org/debian/"), proxy)
    assert out.endswith("\n403"), out
    assert "ISE egress: host deb.debian.org is not on the allow-list (setting ise_allow)" in out
    code, out = sh(workspace, ep, curl("https://pypi.org/simple/", "-w '%{http_connect}'"), proxy)
    assert code != 0 and "403" in out, out  # CONNECT refused
    lines = proxy.control.fetch_recording(ep)
    assert [(ln["method"], ln["url"], ln["status"], ln["blocked"]) for ln in lines] == [
        ("GET", "http://deb.debian.org/debian/", 403, True),
        ("CONNECT", "pypi.org:443", 403, True),
    ]


def test_missing_or_wrong_credentials_get_407(workspace, proxy: EgressProxy, net) -> None:
    host, port = proxy.address
    code, out = sh(workspace, None, curl("http://docs.ise.test/page", f"-x http://{host}:{port}"))
    assert out.endswith("\n407") and "proxy authentication required" in out, out
    code, out = sh(workspace, None, curl("http://docs.ise.test/page", f"-x http://ep-1:{'0' * 32}@{host}:{port}"))
    assert out.endswith("\n407"), out
    code, out = sh(workspace, None, curl("https://docs.ise.test/page", f"-x http://{host}:{port} -k"))
    assert code != 0, out  # CONNECT without credentials is refused too


def test_https_local_route_with_proxy_ca(workspace, proxy: EgressProxy) -> None:
    ep = episode()
    code, out = sh(workspace, ep, curl("https://docs.ise.test/page"), proxy)  # CA from CURL_CA_BUNDLE
    assert code == 0 and out.endswith("\n200") and PAGE.decode() in out, out
    code, out = sh(workspace, ep, curl("https://docs.ise.test/page", f"--cacert {CA_PATH_IN_WORKSPACE}"), proxy)
    assert code == 0 and out.endswith("\n200"), out
    py = "import urllib.request; print(len(urllib.request.urlopen('https://docs.ise.test/page').read()))"
    code, out = sh(workspace, ep, f"python3 -c {shlex.quote(py)}", proxy)  # SSL_CERT_FILE
    assert code == 0 and out.strip() == str(len(PAGE)), out
    code, out = sh(workspace, ep, "unset CURL_CA_BUNDLE SSL_CERT_FILE; " + curl("https://docs.ise.test/page"), proxy)
    assert code == 60, out  # without the proxy's CA the certificate is not trusted
    urls = [ln["url"] for ln in proxy.control.fetch_recording(ep)]
    assert urls == ["https://docs.ise.test/page"] * 3


def test_replay_with_upstream_stopped_is_byte_identical(proxy: EgressProxy, upstreams) -> None:
    ep, again = episode(), episode()
    requests = [("GET", "http://replay.ise.test/counter", None)] * 2 + [
        ("POST", "http://replay.ise.test/echo", b'{"q": 1}'),
        ("POST", "http://replay.ise.test/echo", b'{"q": 2}'),
    ]
    originals = [via_proxy(proxy, ep, m, u, b)[:2] for m, u, b in requests]
    assert all(status == 200 for status, _ in originals) and originals[0][1] != originals[1][1]
    lines = proxy.control.fetch_recording(ep)
    assert proxy.control.arm_replay(again, lines) == 4
    upstreams["replay"].stop()
    hits = upstreams["replay"].hits
    replayed = [via_proxy(proxy, again, m, u, b) for m, u, b in requests]
    assert [(s, body) for s, body, _ in replayed] == originals  # same order, byte-identical
    assert all(h.get("x-ise-egress-replay") == "hit" for _, _, h in replayed)
    status, body, _ = via_proxy(proxy, again, "POST", "http://replay.ise.test/echo", b'{"q": 3}')
    assert (
        status == 502
        and body.decode().strip() == "ISE egress replay: no recorded response for POST http://replay.ise.test/echo"
    )
    assert upstreams["replay"].hits == hits
    replay_lines = proxy.control.fetch_recording(again)
    assert all(ln["replay"] for ln in replay_lines) and replay_lines[-1]["error"] == "replay miss"
    assert proxy.control.disarm_replay(again) is True
    status, _, _ = via_proxy(proxy, again, "GET", "http://replay.ise.test/counter")
    assert status == 502  # disarmed: goes upstream, which is stopped


def test_too_large_response_is_502(workspace, proxy: EgressProxy) -> None:
    ep = episode()
    for path in ("/big", "/bigchunked"):
        _code, out = sh(workspace, ep, curl(f"http://docs.ise.test{path}"), proxy)
        assert out.endswith("\n502") and "body_size_limit" in out, out
    lines = proxy.control.fetch_recording(ep)
    assert [ln["status"] for ln in lines] == [502, 502]
    assert all("body_size_limit" in ln["error"] for ln in lines)


def test_control_api(proxy: EgressProxy) -> None:
    ep = episode()
    assert proxy.control.fetch_recording(ep) == []
    via_proxy(proxy, ep, "GET", "http://docs.ise.test/page")
    assert len(proxy.control.fetch_recording(ep)) == 1
    assert proxy.control.delete_recording(ep) is True
    assert proxy.control.fetch_recording(ep) == []
    assert proxy.control.request("GET", "/v1/recordings/bad%20id")[0] == 400
    assert proxy.control.request("PUT", "/v1/replay/" + "x" * 129, b"")[0] == 400
    wrong = type(proxy.control)(proxy.address, "not-the-secret")
    assert wrong.request("GET", "/v1/health")[0] == 401
    assert proxy.control.health()["ok"] is True


def test_workspace_reaches_only_the_proxy(workspace, proxy: EgressProxy, net, upstreams) -> None:
    bystander = Upstream("0.0.0.0")  # a host service on every host address
    try:
        host_ips = ["172.17.0.1", net.gateway_ip]
        probes = [f"http://{ip}:{bystander.port}/page" for ip in host_ips]
        probes += [f"http://127.0.0.1:{upstreams['docs'].port}/page", "http://1.1.1.1/", "http://deb.debian.org/"]
        for url in probes:
            code, out = sh(workspace, None, curl(url, "--noproxy '*' -m 4"))
            assert code != 0, f"{url} reachable from the workspace: {out}"
        code, out = sh(workspace, None, "getent hosts deb.debian.org")
        assert code != 0, out
        code, out = sh(workspace, None, curl(f"http://{net.gateway_ip}:{proxy.port}/", "--noproxy '*'"))
        assert code == 0, out  # the proxy port answers (any status)
        assert bystander.hits == 0
    finally:
        bystander.stop()


def test_latency_and_recording_size(proxy: EgressProxy, upstreams) -> None:
    ep, n = episode(), 50
    port = upstreams["docs"].port

    def timed(fn) -> list[float]:
        fn()  # warm up
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1000)
        return sorted(out)

    def direct() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/page")
        assert conn.getresponse().read() == PAGE
        conn.close()

    def proxied() -> None:
        assert via_proxy(proxy, ep, "GET", "http://docs.ise.test/page")[1] == PAGE

    d, p = timed(direct), timed(proxied)
    pct = {"p50": lambda xs: statistics.median(xs), "p99": lambda xs: xs[min(len(xs) - 1, int(0.99 * len(xs)))]}
    size = len(proxy.control.fetch_recording_bytes(ep))
    print(f"\negress latency over {n} requests ({len(PAGE)} B page, fresh connection each):")
    for name, f in pct.items():
        print(f"  {name}: direct {f(d):.2f} ms, via proxy {f(p):.2f} ms, added {f(p) - f(d):.2f} ms")
    print(f"  recording: {size / (n + 1):.0f} bytes per request ({len(PAGE)} B body, base64)")
    assert statistics.median(p) < 200


def test_raw_tcp_in_a_tunnel_is_refused(proxy: EgressProxy, upstreams) -> None:
    import socket

    ep, port = episode(), upstreams["docs"].port
    hits = upstreams["docs"].hits
    auth = credentials.basic_header(proxy.secret, ep)
    with socket.create_connection(proxy.address, timeout=10) as sock:
        sock.sendall(
            f"CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\nProxy-Authorization: {auth}\r\n\r\n".encode()
        )
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        sock.sendall(b"\x00\x01\x02 not http, not tls\r\n\r\n")
        assert sock.recv(4096) == b""  # closed, nothing relayed
    assert upstreams["docs"].hits == hits
    [line] = proxy.control.fetch_recording(ep)
    assert line["method"] == "TCP" and line["blocked"] is True
