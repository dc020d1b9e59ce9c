"""The local web for agents, for real: the python3.11-doc corpus extracted with trafilatura and
indexed with bm25s into a fresh cache dir (built once per module by two concurrent processes, to
check the lock), served over real HTTP, fetched with curl -x and cloned with git through
http.proxy."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trafilatura

from services.web import LocalWeb, WebCache, ensure_cache, served_hosts
from services.web.gitrepos import REPOS, build_repo
from services.web.server import safe_file

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DOCS = "http://docs.python.org/3.11"


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment minus proxy settings (the tests pass the proxy explicitly)."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and not k.startswith("GIT_")}
    env.update(GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0", **extra)
    return env


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two processes build the same fresh cache at once; then this process loads it."""
    base = tmp_path_factory.mktemp("web-cache")
    env = _clean_env(ISE_WEB_CACHE_DIR=str(base), ISE_LOG_LEVEL="INFO")
    cmd = [sys.executable, "-m", "services.web", "build"]
    started = time.perf_counter()
    procs = [
        subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=900) for p in procs]
    build_s = time.perf_counter() - started
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, f"build failed:\n{out}\n{err[-3000:]}"
    started = time.perf_counter()
    cache = ensure_cache(base)
    _ = cache.index
    load_s = time.perf_counter() - started
    print(f"\nlocal web cache: built in {build_s:.1f}s (two racing processes), loaded in {load_s:.3f}s")
    return {"base": base, "cache": cache, "outputs": outputs, "build_s": build_s, "load_s": load_s}


@pytest.fixture(scope="module")
def web(built: dict[str, Any]) -> Iterator[LocalWeb]:
    with LocalWeb(built["cache"]) as server:
        yield server


def _get(
    web: LocalWeb, target: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    """One request, the target sent exactly as given (absolute-form = as to a proxy)."""
    host, port = web.address
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request(method, target, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _search(web: LocalWeb, query: str) -> tuple[int, dict[str, Any]]:
    status, _, body = _get(web, f"http://search.ise.test/search?{query}")
    return status, json.loads(body)


def test_cache_is_built_once_atomically_and_loads_fast(built: dict[str, Any]) -> None:
    base: Path = built["base"]
    cache: WebCache = built["cache"]
    described = [out for out, _ in built["outputs"]]
    assert sum("(built now" in out for out in described) == 1, described  # the lock: one build, one wait
    assert sum("(already built" in out for out in described) == 1, described
    assert not cache.built_now  # this process only loaded it
    assert [p.name for p in base.iterdir() if p.name.startswith(".build-")] == []  # no temp dir left
    assert cache.manifest["pages"] > 400 and cache.repos == [r.name for r in REPOS]
    assert (cache.root / "index" / "pages.json").is_file() and (cache.root / "index" / "bm25s").is_dir()
    again = time.perf_counter()
    reloaded = ensure_cache(base)
    assert len(reloaded.index) == cache.manifest["pages"]
    reload_s = time.perf_counter() - again
    print(f"build {built['build_s']:.1f}s vs load {built['load_s']:.3f}s (and again {reload_s:.3f}s)")
    assert built["load_s"] < 5 and reload_s < 5 and built["build_s"] > 10 * reload_s


@pytest.mark.parametrize(
    ("query", "expected", "within"),
    [
        ("json dumps indent", "library/json.html", 1),
        ("subprocess run capture output", "library/subprocess.html", 1),
        ("asyncio gather tasks", "library/asyncio-task.html", 2),
    ],
)
def test_search_finds_the_right_page(web: LocalWeb, query: str, expected: str, within: int) -> None:
    status, data = _search(web, f"q={query.replace(' ', '+')}&count=5")
    assert status == 200 and data["query"] == query
    assert 1 <= len(data["results"]) <= 5
    urls = [r["url"] for r in data["results"]]
    assert f"https://docs.python.org/3.11/{expected}" in urls[:within], urls
    top = data["results"][0]
    assert set(top) == {"title", "url", "description", "score"} and top["score"] > 0 and top["description"]
    scores = [r["score"] for r in data["results"]]
    assert scores == sorted(scores, reverse=True)


def test_search_count_default_and_unknown_words(web: LocalWeb) -> None:
    assert len(_search(web, "q=pathlib")[1]["results"]) == 5
    assert len(_search(web, "q=pathlib&count=10")[1]["results"]) == 10
    assert _search(web, "q=zzqxv+notaword") == (200, {"query": "zzqxv notaword", "results": []})


@pytest.mark.parametrize(
    "query", ["", "q=", "q=+++", "q=json&count=0", "q=json&count=11", "q=json&count=two", "count=3"]
)
def test_bad_search_params_get_400_saying_what_to_send(web: LocalWeb, query: str) -> None:
    status, data = _search(web, query)
    assert status == 400, data
    assert data["error"] and "q=<words>" in data["usage"] and "count=<1-10" in data["usage"]


def test_docs_page_through_curl_proxy(web: LocalWeb) -> None:
    out = subprocess.run(
        ["curl", "-sS", "-x", web.proxy_url, "-w", "\n%{http_code} %{content_type}", f"{DOCS}/library/json.html"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_clean_env(),
        check=True,
    )
    html, _, meta = out.stdout.rpartition("\n")
    assert meta == "200 text/html; charset=utf-8"
    text = trafilatura.extract(html) or ""
    for word in ("JSONDecodeError", "json.dumps", "indent", "sort_keys"):
        assert word in text, word


def test_docs_by_host_header_index_and_404(web: LocalWeb) -> None:
    status, headers, body = _get(web, "/3.11/", {"Host": "docs.python.org"})
    assert status == 200 and headers["content-type"].startswith("text/html") and b"Python" in body
    status, headers, _ = _get(web, "/3.11/_static/pygments.css", {"Host": "docs.python.org:443"})
    assert status == 200 and headers["content-type"].startswith("text/css")
    status, headers, _ = _get(web, "/", {"Host": "docs.python.org"})
    assert status == 301 and headers["location"] == "/3.11/"
    status, headers, body = _get(web, "/3.11/library/no-such-module.html", {"Host": "docs.python.org"})
    assert status == 404 and headers["content-type"].startswith("text/html") and b"404" in body
    assert _get(web, "/3.12/index.html", {"Host": "docs.python.org"})[0] == 404
    status, headers, body = _get(web, f"{DOCS}/library/os.html", method="HEAD")
    assert status == 200 and int(headers["content-length"]) > 10_000 and body == b""


TRAVERSALS = [
    "/3.11/../../etc/passwd",
    "/3.11/../../../../../../etc/passwd",
    "/3.11/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/3.11/%2E%2E%2F%2E%2E%2F%2E%2E%2F%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
    "/3.11/..%2f..%2f..%2f..%2f..%2fetc/passwd",
    "/3.11/%252e%252e/%252e%252e/etc/passwd",
    "/3.11/..\\..\\..\\..\\etc\\passwd",
    "/3.11/%00../etc/passwd",
    "/3.11//etc/passwd",
    "/3.11/%2Fetc%2Fpasswd",
    "/3.11/library/../../../../etc/passwd",
    "/3.11/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_path_traversal_is_impossible(web: LocalWeb, path: str) -> None:
    status, _, body = _get(web, path, {"Host": "docs.python.org"})
    assert status in {400, 404} and b"root:" not in body
    git_path = path.replace("/3.11/", "/json.git/", 1)
    status, _, body = _get(web, f"http://git.ise.test{git_path}")
    assert status in {400, 404} and b"root:" not in body


def test_path_traversal_with_curl_path_as_is(web: LocalWeb) -> None:
    for path in TRAVERSALS[:5]:
        out = subprocess.run(
            [
                "curl",
                "-s",
                "--path-as-is",
                "-x",
                web.proxy_url,
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                f"http://docs.python.org{path}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=_clean_env(),
        )
        assert out.stdout in {"400", "404"}, (path, out.stdout)


def test_symlink_out_of_the_root_is_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.txt").write_text("root:x:0:0")
    (root / "page.html").write_text("<p>ok</p>")
    (root / "leak.html").symlink_to(tmp_path / "secret.txt")
    assert safe_file(root, "page.html") == (root / "page.html").resolve()
    assert safe_file(root, "leak.html") is None
    assert safe_file(root, "leak.html", extra_roots=(tmp_path,)) == (tmp_path / "secret.txt").resolve()


def test_unknown_host_and_read_only(web: LocalWeb) -> None:
    for status, _, body in (_get(web, "http://example.com/"), _get(web, "/x", {"Host": "pypi.org"})):
        data = json.loads(body)
        assert status == 404 and data["hosts"] == list(served_hosts()) and "does not serve" in data["error"]
    assert served_hosts() == ("docs.python.org", "search.ise.test", "git.ise.test")
    for method in ("POST", "PUT", "DELETE", "PROPFIND"):
        assert _get(web, "http://git.ise.test/json.git/info/refs", method=method)[0] == 405
    assert _get(web, "docs.python.org:443", method="CONNECT")[0] == 405


def test_git_clone_through_http_proxy(web: LocalWeb, tmp_path: Path) -> None:
    for spec in REPOS:
        dest = tmp_path / spec.name
        subprocess.run(
            [
                "git",
                "-c",
                f"http.proxy={web.proxy_url}",
                "clone",
                "-q",
                f"http://git.ise.test/{spec.name}.git",
                str(dest),
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
            env=_clean_env(),
        )
        log = subprocess.run(
            ["git", "-C", str(dest), "log", "--format=%an|%ad|%s", "--date=short"],
            check=True,
            capture_output=True,
            text=True,
            env=_clean_env(),
        ).stdout.splitlines()
        assert [line.split("|")[2] for line in log] == [m for m, _ in reversed(spec.commits)]
        assert all(line.startswith("ISE Fixtures|2024-01-0") for line in log)
        files = sorted(p.name for p in (dest / spec.package).iterdir())
        assert files == sorted(f for _, added in spec.commits for f in added)
        assert (dest / "README.md").read_text().startswith(f"# {spec.name}")
    # deterministic: a second build of the same repo gives the same commit id
    rebuilt = build_repo(REPOS[0], tmp_path / "again", Path(sysconfig.get_paths()["stdlib"]))
    head = subprocess.run(
        ["git", "-C", str(tmp_path / "json"), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
        env=_clean_env(),
    ).stdout
    again = subprocess.run(
        ["git", "-C", str(rebuilt), "rev-parse", "main"], capture_output=True, text=True, check=True, env=_clean_env()
    ).stdout
    assert head == again


def test_cli_help_and_hosts() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "services.web", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert all(host in out for host in served_hosts()) and "serve" in out
    hosts = subprocess.run(
        [sys.executable, "-m", "services.web", "hosts"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    assert tuple(hosts) == served_hosts()
