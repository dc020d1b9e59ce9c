"""Search providers behind ``web_search``: the local web's index, or a real search API by key.

Both are called through the episode's proxied HTTP client, so every search is allow-listed and
recorded like any other request, and replays offline from the recording.

* ``local`` (the default, no internet): the local web's BM25 index at ``http://search.ise.test``
  (``services/web``), over a real documentation corpus.
* ``brave``: the Brave Search API (``ISE_WEB_SEARCH_KEY``; add ``api.search.brave.com`` to the
  proxy's allow-list).

Results are normalised to ``{title, url, description, siteName}``; a provider's error answer is a
tool error with its message.
"""

from __future__ import annotations

from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from services.executor.errors import ToolArgumentError
from services.executor.web_access import Fetched, WebAccess, get

LOCAL_SEARCH_URL = "http://search.ise.test/search"
BRAVE_URL = "https://api.search.brave.com/res/v1/web/search"
_MAX_BYTES = 1024 * 1024


class SearchProvider(Protocol):
    name: str

    def search(self, client: httpx.Client, args: dict[str, Any]) -> list[dict[str, str]]: ...


def _result(title: str, url: str, description: str) -> dict[str, str]:
    return {"title": title, "url": url, "description": description, "siteName": urlsplit(url).hostname or ""}


def _json(response: Fetched, provider: str) -> Any:
    if response.status_code >= 400:
        raise ToolArgumentError(f"{provider} search failed (HTTP {response.status_code}): {response.text[:300]}")
    try:
        return response.json()
    except ValueError as exc:
        raise ToolArgumentError(f"{provider} search answered something that is not JSON") from exc


class LocalSearch:
    name = "local"

    def search(self, client: httpx.Client, args: dict[str, Any]) -> list[dict[str, str]]:
        params = {"q": args["query"], "count": str(int(args.get("count", 5)))}
        doc = _json(get(client, LOCAL_SEARCH_URL, params=params, max_bytes=_MAX_BYTES), self.name)
        return [_result(r["title"], r["url"], r.get("description", "")) for r in doc.get("results", [])]


class BraveSearch:
    name = "brave"

    def __init__(self, key: str) -> None:
        if not key:
            raise ToolArgumentError("the brave search provider needs ISE_WEB_SEARCH_KEY")
        self.key = key

    def search(self, client: httpx.Client, args: dict[str, Any]) -> list[dict[str, str]]:
        params = {"q": args["query"], "count": str(int(args.get("count", 5)))}
        for ours, theirs in (("country", "country"), ("search_lang", "search_lang"), ("ui_lang", "ui_lang")):
            if args.get(ours):
                params[theirs] = args[ours]
        if args.get("freshness"):
            params["freshness"] = {"day": "pd", "week": "pw", "month": "pm", "year": "py"}[args["freshness"]]
        if args.get("date_after") or args.get("date_before"):
            params["freshness"] = f"{args.get('date_after', '1970-01-01')}to{args.get('date_before', '2100-01-01')}"
        headers = {"X-Subscription-Token": self.key, "Accept": "application/json"}
        doc = _json(get(client, BRAVE_URL, params=params, headers=headers, max_bytes=_MAX_BYTES), self.name)
        hits = (doc.get("web") or {}).get("results") or []
        return [_result(h.get("title", ""), h.get("url", ""), h.get("description", "")) for h in hits]


def provider_for(web: WebAccess) -> SearchProvider:
    if web.search_provider == "local":
        return LocalSearch()
    if web.search_provider == "brave":
        return BraveSearch(web.search_key)
    raise ToolArgumentError(f"unknown search provider {web.search_provider!r}; use local or brave")
