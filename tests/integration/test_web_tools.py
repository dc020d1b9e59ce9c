"""web_search and web_fetch end to end: real mitmdump (``.venv-egress``), the real local web (its
docs mirror and search index), a stdlib upstream for the odd pages (``big.ise.test``), real HTTP(S)
through the proxy's CA, a Toolbox over a real Docker workspace.

The first episode runs every call live; its recording then replays them for a second episode with
both upstreams stopped, and the tool results must be the same text. The proxy down or refusing the
executor is an infrastructure error (``WebUnavailable``), never a tool error.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest

from services.common.errors import TransientError
from services.egress.launcher import EgressProxy
from services.executor.errors import WebUnavailable
from services.executor.tools import Toolbox, ToolOutcome
from services.executor.web_access import WebAccess
from services.executor.workspace.base import WorkspaceLimits
from services.executor.workspace.docker_backend import DockerWorkspaceBackend
from services.stack.procs import free_port
from services.web.cache import ensure_cache
from services.web.server import LocalWeb, served_hosts
from tests.integration.test_docker_workspace import workspace_image

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
EP1, EP2 = f"web-{RUN}-live", f"web-{RUN}-replay"
BIG = "http://big.ise.test"
CSV = "https://docs.python.org/3.11/library/csv.html"
HUGE = b"<html><head><title>huge</title></head><body>" + b"<p>filler</p>" * (3 * 1024 * 1024 // 12) + b"</body></html>"
PLAIN = "plain text page\nsecond line, kept as is\n"
JSON_BODY = '{"name": "ise", "items": [1, 2, 3]}'
TARGET = b"<html><head><title>Redirect target</title></head><body><p>You arrived after two hops.</p></body></html>"

# every call of the live episode, replayed later in the same order (key -> tool, arguments)
CALLS: dict[str, tuple[str, dict[str, Any]]] = {
    "search1": ("web_search", {"query": "json dumps indent", "count": 1}),
    "search10": ("web_search", {"query": "json dumps indent", "count": 10}),
    "count0": ("web_search", {"query": "json", "count": 0}),
    "count11": ("web_search", {"query": "json", "count": 11}),
    "empty": ("web_search", {"query": ""}),
    "decade": ("web_search", {"query": "json", "freshness": "decade"}),
    "slashdate": ("web_search", {"query": "json", "date_after": "2024/01/01"}),
    "csv_md": ("web_fetch", {"url": CSV}),
    "csv_text": ("web_fetch", {"url": CSV, "extractMode": "text"}),
    "csv_short": ("web_fetch", {"url": CSV, "maxChars": 500}),
    "chain": ("web_fetch", {"url": f"{BIG}/r301"}),
    "loop": ("web_fetch", {"url": f"{BIG}/loop/0"}),
    "plain": ("web_fetch", {"url": f"{BIG}/plain"}),
    "json": ("web_fetch", {"url": f"{BIG}/data.json"}),
    "binary": ("web_fetch", {"url": f"{BIG}/file.bin"}),
    "huge": ("web_fetch", {"url": f"{BIG}/huge"}),
    "missing": ("web_fetch", {"url": "https://docs.python.org/3.11/library/no-such-page.html"}),
    "ftp": ("web_fetch", {"url": "ftp://docs.python.org/3.11/library/csv.html"}),
    "relative": ("web_fetch", {"url": "/3.11/library/csv.html"}),
    "blocked_http": ("web_fetch", {"url": "http://example.org/"}),
    "blocked_https": ("web_fetch", {"url": "https://example.org/"}),
}


class BigHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def send(self, status: int, body: bytes, ctype: str, location: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if location:
            self.send_header("Location", location)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path[1:]
        pages = {
            "huge": (200, HUGE, "text/html; charset=utf-8"),
            "file.bin": (200, bytes(range(256)) * 4, "application/octet-stream"),
            "plain": (200, PLAIN.encode(), "text/plain; charset=utf-8"),
            "data.json": (200, JSON_BODY.encode(), "application/json"),
            "page": (200, TARGET, "text/html; charset=utf-8"),
        }
        if path in pages:
            self.send(*pages[path])
        elif path in ("r301", "r302"):
            status, nxt = (301, "/r302") if path == "r301" else (302, "/page")
            self.send(status, b"", "text/plain", location=nxt)
        elif path.startswith("loop/"):  # /loop/0 -> 1 -> ... -> 5 -> 0: six hops round and round
            self.send(302, b"", "text/plain", location=f"/loop/{(int(path[5:]) + 1) % 6}")
        else:
            self.send(404, b"not here\n", "text/plain")


@pytest.fixture(scope="module")
def local_web() -> Iterator[LocalWeb]:
    web = LocalWeb(ensure_cache())
    web.start()
    yield web
    web.stop()


@pytest.fixture(scope="module")
def big() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BigHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    if server.socket.fileno() != -1:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, local_web: LocalWeb, big) -> Iterator[EgressProxy]:
    routes = dict.fromkeys(served_hosts(), local_web.address)
    routes["big.ise.test"] = ("127.0.0.1", big.server_address[1])
    with EgressProxy(tmp_path_factory.mktemp("egress"), allow=[], routes=routes) as egress:
        yield egress


@pytest.fixture(scope="module")
def web(proxy: EgressProxy) -> WebAccess:
    return WebAccess(*proxy.address, proxy.secret, str(proxy.ca_cert_path))


@pytest.fixture(scope="module")
def backend() -> Iterator[DockerWorkspaceBackend]:
    limits = WorkspaceLimits(memory_mb=256, pids=128, cpus=1.0, output_cap_bytes=64 * 1024)
    workspaces = DockerWorkspaceBackend(workspace_image(), limits, name_prefix=f"ise-wt-{RUN}")
    for ep in (EP1, EP2):
        workspaces.create(ep, f"run-web-tools-{RUN}")
    try:
        yield workspaces
    finally:
        for info in workspaces.list_workspaces():
            workspaces.close(info.episode_id)


def run_all(box: Toolbox) -> dict[str, ToolOutcome]:
    return {key: box.run(f"call-{key}", name, json.dumps(args)) for key, (name, args) in CALLS.items()}


@pytest.fixture(scope="module")
def live(backend, web: WebAccess) -> dict[str, ToolOutcome]:
    return run_all(Toolbox(backend, EP1, web=web))  # any exception here fails every test that uses it


def body(out: ToolOutcome) -> dict[str, Any]:
    assert out.meta.ok and out.meta.error is None, out.content
    return json.loads(out.content)


def failed(out: ToolOutcome, tool: str) -> str:
    assert not out.meta.ok, out.content
    assert json.loads(out.content) == {"status": "error", "tool": tool, "error": out.meta.error}, out.content
    return out.meta.error or ""


def untrusted(text: str, url: str) -> str:
    """The page text between the markers (checked)."""
    match = re.fullmatch(
        r'<<<EXTERNAL_UNTRUSTED_CONTENT id="(\w{16})">>>\nSource: (\S+)\n---\n(.*)\n'
        r'<<<END_EXTERNAL_UNTRUSTED_CONTENT id="\1">>>',
        text,
        re.S,
    )
    assert match and match.group(2) == url, text[:300]
    return match.group(3)


def test_web_search_local_provider(live: dict[str, ToolOutcome]) -> None:
    one, ten = body(live["search1"]), body(live["search10"])
    for doc, n in ((one, 1), (ten, 10)):
        assert doc["provider"] == "local" and doc["query"] == "json dumps indent", doc
        assert doc["count"] == n == len(doc["results"]) and isinstance(doc["tookMs"], int)
        first = doc["results"][0]
        assert first["url"].endswith("/library/json.html"), doc["results"]
        assert set(first) == {"title", "url", "description", "siteName"}
        assert first["siteName"] == "docs.python.org" and first["title"]
    assert len({r["url"] for r in ten["results"]}) == 10
    assert live["search1"].meta.name == "web_search" and live["search1"].meta.tool_call_id == "call-search1"


def test_web_search_bad_arguments_name_the_parameter(live: dict[str, ToolOutcome]) -> None:
    for key, param in (
        ("count0", "count"),
        ("count11", "count"),
        ("empty", "query"),
        ("decade", "freshness"),
        ("slashdate", "date_after"),
    ):
        error = failed(live[key], "web_search")
        assert error.startswith("invalid arguments for web_search") and f"{param}:" in error, (key, error)


def test_web_fetch_https_docs_page(live: dict[str, ToolOutcome]) -> None:
    md, text, short = body(live["csv_md"]), body(live["csv_text"]), body(live["csv_short"])
    for doc, mode in ((md, "markdown"), (text, "text"), (short, "markdown")):
        assert (doc["url"], doc["finalUrl"], doc["status"]) == (CSV, CSV, 200)
        assert doc["contentType"] == "text/html" and doc["extractMode"] == mode and doc["extractor"] == "trafilatura"
        assert "csv" in doc["title"].lower(), doc["title"]
        page = untrusted(doc["text"], CSV)
        assert len(page) == doc["length"] and "CSV File Reading and Writing" in page
    assert not md["truncated"] and not live["csv_md"].meta.truncated and "csv.reader" in md["text"]
    assert md["text"] != text["text"]  # markdown and plain text differ
    assert short["truncated"] and short["length"] == 500 and live["csv_short"].meta.truncated
    assert untrusted(short["text"], CSV) == untrusted(md["text"], CSV)[:500]


def test_web_fetch_redirects_and_raw_types(live: dict[str, ToolOutcome]) -> None:
    chain = body(live["chain"])
    assert chain["finalUrl"] == f"{BIG}/page" and chain["status"] == 200 and chain["title"] == "Redirect target"
    assert "two hops" in untrusted(chain["text"], f"{BIG}/page")
    assert "too many redirects" in failed(live["loop"], "web_fetch")
    plain, data = body(live["plain"]), body(live["json"])
    assert plain["extractor"] == data["extractor"] == "raw" and plain["title"] == ""
    assert (plain["contentType"], data["contentType"]) == ("text/plain", "application/json")
    assert untrusted(plain["text"], f"{BIG}/plain") == PLAIN
    assert untrusted(data["text"], f"{BIG}/data.json") == JSON_BODY


def test_web_fetch_refusals_are_tool_errors(live: dict[str, ToolOutcome]) -> None:
    binary = failed(live["binary"], "web_fetch")
    assert "application/octet-stream" in binary and "not a text page" in binary, binary
    assert "too large" in failed(live["huge"], "web_fetch")
    missing = failed(live["missing"], "web_fetch")
    assert missing.startswith("HTTP 404 from https://docs.python.org/3.11/library/no-such-page.html"), missing
    for key in ("ftp", "relative"):
        assert "absolute http or https URL" in failed(live[key], "web_fetch")
    for key in ("blocked_http", "blocked_https"):
        error = failed(live[key], "web_fetch")
        assert error.startswith("ISE egress") and "example.org" in error and "allow-list" in error, error


def test_every_request_is_recorded(live: dict[str, ToolOutcome], proxy: EgressProxy) -> None:
    lines = proxy.control.fetch_recording(EP1)
    search = "http://search.ise.test/search?q=json+dumps+indent&count="
    expected = [("GET", f"{search}1", 200, False), ("GET", f"{search}10", 200, False)]
    expected += [("GET", CSV, 200, False)] * 3
    expected += [("GET", f"{BIG}/r301", 301, False), ("GET", f"{BIG}/r302", 302, False)]
    expected += [("GET", f"{BIG}/page", 200, False)]
    expected += [("GET", f"{BIG}/loop/{i}", 302, False) for i in range(6)]
    expected += [("GET", f"{BIG}/{p}", 200, False) for p in ("plain", "data.json", "file.bin", "huge")]
    expected += [("GET", "https://docs.python.org/3.11/library/no-such-page.html", 404, False)]
    expected += [("GET", "http://example.org/", 403, True), ("CONNECT", "example.org:443", 403, True)]
    got = [(ln["method"], ln["url"], ln["status"], bool(ln.get("blocked"))) for ln in lines]
    assert got == expected
    assert not any(ln.get("replay") for ln in lines)


@pytest.fixture(scope="module")
def replayed(live, proxy: EgressProxy, local_web: LocalWeb, big, backend, web) -> dict[str, ToolOutcome]:
    lines = proxy.control.fetch_recording(EP1)
    assert proxy.control.arm_replay(EP2, lines) == len(lines) - 2  # the blocked two do not replay
    local_web.stop()
    big.shutdown()
    big.server_close()
    return run_all(Toolbox(backend, EP2, web=web))


def same(out: ToolOutcome) -> str:
    return re.sub(r'"tookMs": \d+', '"tookMs": 0', out.content)


def test_offline_replay_gives_the_same_results(live, replayed, proxy: EgressProxy) -> None:
    differ = [key for key in CALLS if key != "huge" and same(live[key]) != same(replayed[key])]
    assert differ == [], {k: (live[k].content[:200], replayed[k].content[:200]) for k in differ}
    assert [live[k].meta.ok for k in CALLS] == [replayed[k].meta.ok for k in CALLS]
    lines = proxy.control.fetch_recording(EP2)
    assert len(lines) == len(proxy.control.fetch_recording(EP1))
    assert all(ln.get("replay") is True for ln in lines if not ln.get("blocked"))
    assert not any(ln.get("error") for ln in lines), [ln for ln in lines if ln.get("error")]


def test_offline_replay_of_a_page_over_the_record_cap(live, replayed) -> None:
    """A page over the fetch limit (= the recording cap) is refused alike, live and on replay."""
    assert same(replayed["huge"]) == same(live["huge"])


@pytest.mark.parametrize("why", ["proxy down", "wrong secret"])
def test_proxy_down_or_refusing_is_an_infrastructure_error(why: str, proxy, backend) -> None:
    host, port = proxy.address
    access = WebAccess(host, free_port(host), proxy.secret) if why == "proxy down" else WebAccess(host, port, "nope")
    box = Toolbox(backend, EP1, web=access)
    for name, args in (
        ("web_search", {"query": "json"}),
        ("web_fetch", {"url": f"{BIG}/plain"}),
        ("web_fetch", {"url": CSV}),
    ):
        with pytest.raises(WebUnavailable) as caught:
            box.run("call-down", name, json.dumps(args))
        assert isinstance(caught.value, TransientError), caught.value


def test_web_off_is_a_tool_error(backend) -> None:
    box = Toolbox(backend, EP1, web=None)
    for name, args in (("web_search", {"query": "json"}), ("web_fetch", {"url": CSV})):
        out = box.run("call-off", name, json.dumps(args))
        assert "web access is off" in failed(out, name)
