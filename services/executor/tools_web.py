"""``web_search`` and ``web_fetch``: the web through the egress proxy, recorded per episode.

``web_search`` asks the configured provider (``web_search_providers``): the local web's search
index by default (no internet needed), or a real search API by key. It answers JSON
``{"query", "provider", "count", "tookMs", "results": [{title, url, description, siteName}]}``.
``web_fetch`` GETs a page (redirects followed), extracts its readable content with trafilatura
(markdown or text; plain text and JSON pass through) and answers JSON with ``url``, ``finalUrl``,
``status``, ``contentType``, ``title``, ``extractMode``, ``extractor``, ``truncated``, ``length``
and ``text``, the text wrapped in markers that flag it as external, untrusted content.
A blocked host, a bad URL, an HTTP error, a page too large or not text: a tool error. The proxy
down: ``WebUnavailable`` (an infrastructure error, retried).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import Field

from services.common.contracts.messages import ToolResultMeta
from services.egress.launcher import RECORD_BODY_BYTES
from services.executor.errors import ToolArgumentError
from services.executor.tool_common import Args, ToolLimits, ToolOutcome, elapsed_ms
from services.executor.web_access import BLOCK_MARKER, Fetched, WebAccess, get
from services.executor.web_search_providers import provider_for

# Equal to the egress proxy's recording cap per body (EgressProxy.max_record_bytes): a page web_fetch
# accepts is recorded whole, so it replays identically; a larger one is refused live and on replay.
MAX_PAGE_BYTES = RECORD_BODY_BYTES
_REPLAY_TRUNCATED = "ISE egress replay: the recorded response body was truncated"
_TEXT_TYPES = ("text/plain", "application/json", "text/markdown", "text/csv", "application/xml", "text/xml")


class WebSearchArgs(Args):
    query: str = Field(min_length=1, max_length=400)
    count: float = Field(5, ge=1, le=10)
    country: str | None = None
    language: str | None = None
    freshness: Literal["day", "week", "month", "year"] | None = None
    date_after: str | None = Field(None, pattern=r"^\d{4}-\d{2}-\d{2}$")
    date_before: str | None = Field(None, pattern=r"^\d{4}-\d{2}-\d{2}$")
    search_lang: str | None = None
    ui_lang: str | None = None


class WebFetchArgs(Args):
    url: str = Field(min_length=1, max_length=4000)
    extractMode: Literal["markdown", "text"] = "markdown"
    maxChars: float | None = Field(None, ge=100)


def wrap_untrusted(text: str, url: str) -> str:
    """The page text between markers that say it is external content, not instructions."""
    tag = hashlib.sha256(url.encode()).hexdigest()[:16]
    return (
        f'<<<EXTERNAL_UNTRUSTED_CONTENT id="{tag}">>>\nSource: {url}\n---\n{text}\n'
        f'<<<END_EXTERNAL_UNTRUSTED_CONTENT id="{tag}">>>'
    )


def extract(html: str, mode: str, url: str) -> tuple[str, str]:
    """(title, readable text) of an HTML page: trafilatura's main-content extraction."""
    import trafilatura  # imported on first use: it loads lxml and friends

    fmt = "markdown" if mode == "markdown" else "txt"
    text = trafilatura.extract(html, url=url, output_format=fmt, favor_recall=True)
    meta = trafilatura.extract_metadata(html, default_url=url)
    title = (meta.title if meta is not None and meta.title else "") or ""
    if not text:  # no main content found (a bare page): all visible text
        text = trafilatura.html2txt(html) or ""
    return title, text.strip()


class WebTools:
    """``web_search`` and ``web_fetch`` for one episode (blocking calls, worker threads)."""

    def __init__(self, web: WebAccess | None, episode_id: str, limits: ToolLimits) -> None:
        self.web = web
        self.episode_id = episode_id
        self.limits = limits

    def _client(self) -> httpx.Client:
        if self.web is None:
            raise ToolArgumentError("web access is off in this run (no egress proxy configured); work offline")
        return self.web.client(self.episode_id)

    def search(self, call_id: str, arguments: dict[str, Any]) -> ToolOutcome:
        args = WebSearchArgs.model_validate(arguments)
        started = time.monotonic()
        with self._client() as client:
            assert self.web is not None  # _client() refused otherwise
            provider = provider_for(self.web)
            results = provider.search(client, args.model_dump(exclude_none=True))
        body = {
            "query": args.query,
            "provider": provider.name,
            "count": len(results),
            "tookMs": elapsed_ms(started),
            "results": results,
        }
        return _ok(call_id, "web_search", json.dumps(body, ensure_ascii=False), started)

    def fetch(self, call_id: str, arguments: dict[str, Any]) -> ToolOutcome:
        args = WebFetchArgs.model_validate(arguments)
        started = time.monotonic()
        parts = urlsplit(args.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ToolArgumentError(f"url must be an absolute http or https URL, not {args.url!r}")
        with self._client() as client:
            try:
                response = get(client, args.url, max_bytes=MAX_PAGE_BYTES)
            except httpx.TooManyRedirects as exc:
                raise ToolArgumentError(f"too many redirects fetching {args.url}") from exc
            except httpx.TimeoutException as exc:
                raise ToolArgumentError(f"{args.url} did not answer in time ({exc.__class__.__name__})") from exc
        check_response(response, args.url)
        ctype = response.headers.get("content-type", "").split(";")[0].strip().lower()
        text = response.text
        title = ""
        if ctype in ("text/html", "application/xhtml+xml") or (not ctype and "<html" in text[:2000].lower()):
            title, text = extract(text, args.extractMode, str(response.url))
        elif not (ctype.startswith("text/") or ctype in _TEXT_TYPES):
            raise ToolArgumentError(
                f"{args.url} is {ctype or 'binary content'}, not a text page; download it with exec"
            )
        limit = int(args.maxChars or self.limits.web_max_chars)
        truncated = len(text) > limit
        text = text[:limit]
        body = {
            "url": args.url,
            "finalUrl": str(response.url),
            "status": response.status_code,
            "contentType": ctype,
            "title": title,
            "extractMode": args.extractMode,
            "extractor": "trafilatura" if title or ctype.endswith("html") else "raw",
            "truncated": truncated,
            "length": len(text),
            "text": wrap_untrusted(text, str(response.url)),
        }
        return _ok(call_id, "web_fetch", json.dumps(body, ensure_ascii=False), started, truncated)


def check_response(response: Fetched, url: str) -> None:
    """A refusal by the proxy, an HTTP error or a page over the size limit: a tool error."""
    body = response.content[:600].decode(errors="replace")
    if response.cut or body.startswith(_REPLAY_TRUNCATED):  # live, or its recording on replay: too large
        raise ToolArgumentError(f"{url} is larger than {MAX_PAGE_BYTES // 1024} KiB; too large to fetch")
    if response.status_code in (403, 502) and body.startswith(BLOCK_MARKER):
        raise ToolArgumentError(body.strip())
    if response.status_code >= 400:
        raise ToolArgumentError(f"HTTP {response.status_code} from {url}: {' '.join(body.split())[:300]}")


def _ok(call_id: str, name: str, content: str, started: float, truncated: bool = False) -> ToolOutcome:
    meta = ToolResultMeta(
        tool_call_id=call_id, name=name, ok=True, duration_ms=elapsed_ms(started), truncated=truncated
    )
    return ToolOutcome(content=content, meta=meta)
