"""How the executor reaches the web for an episode: through the egress proxy, as that episode.

Every web request of an agent (``web_search``, ``web_fetch``; ``curl`` and ``git`` inside a
workspace that has egress) goes through the egress proxy (``services/egress``) with the episode's
own credentials, so the proxy applies the host allow-list and records the exchange in that
episode's recording. ``WebAccess`` carries the proxy's address, the shared secret its
credentials derive from, the CA that signs its HTTPS interception, and the search provider.
The proxy down is an infrastructure failure (``WebUnavailable``: the turn is retried), never a
tool error the model would learn from.
"""

from __future__ import annotations

import functools
import json
import ssl
from dataclasses import dataclass

import httpx

from services.egress.credentials import proxy_url
from services.executor.errors import ToolArgumentError, WebUnavailable

BLOCK_MARKER = "ISE egress"  # the proxy's own refusals start their body with this
USER_AGENT = "ise-trace-agent/1.0 (+https://github.com/ise-trace)"


@dataclass(frozen=True)
class WebAccess:
    proxy_host: str
    proxy_port: int
    secret: str
    ca_path: str | None = None
    search_provider: str = "local"  # local | brave
    search_key: str = ""
    timeout_s: float = 20.0

    def proxy_for(self, episode_id: str) -> str:
        return proxy_url(self.proxy_host, self.proxy_port, self.secret, episode_id)

    def client(self, episode_id: str) -> httpx.Client:
        """An HTTP client whose every request goes through the proxy as ``episode_id``."""
        return httpx.Client(
            proxy=self.proxy_for(episode_id),
            verify=_tls_context(self.ca_path),
            timeout=self.timeout_s,
            follow_redirects=True,
            max_redirects=5,
            headers={"User-Agent": USER_AGENT},
            trust_env=False,
        )


@functools.cache
def _tls_context(ca_path: str | None) -> ssl.SSLContext:
    """TLS trusting the proxy's CA (it re-signs every HTTPS site), or the system's CAs without one."""
    return ssl.create_default_context(cafile=ca_path) if ca_path else ssl.create_default_context()


@dataclass(frozen=True)
class Fetched:
    """A response read through the proxy, its body cut at the caller's limit."""

    status_code: int
    url: str
    headers: httpx.Headers
    content: bytes
    cut: bool

    @property
    def text(self) -> str:
        charset = (
            self.headers.get_list("content-type")[0].partition("charset=")[2] if "content-type" in self.headers else ""
        )
        return self.content.decode(charset.strip().strip('"') or "utf-8", errors="replace")

    def json(self) -> object:
        return json.loads(self.content)


def get(
    client: httpx.Client,
    url: str,
    *,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    max_bytes: int,
) -> Fetched:
    """GET through the proxy, reading at most ``max_bytes`` of the body."""
    try:
        with client.stream("GET", url, params=params, headers=headers) as response:
            body = bytearray()
            for part in response.iter_bytes():
                body += part
                if len(body) > max_bytes:
                    break
            if response.status_code == 407:
                raise WebUnavailable("the egress proxy refused the executor's credentials (secret mismatch?)")
            return Fetched(
                response.status_code,
                str(response.url),
                response.headers,
                bytes(body[:max_bytes]),
                len(body) > max_bytes,
            )
    except httpx.ProxyError as exc:
        if "403" in str(exc):  # an HTTPS CONNECT the proxy refused: the host is not allowed
            host = httpx.URL(url).host
            raise ToolArgumentError(
                f"{BLOCK_MARKER}: host {host} is not on the allow-list (the run's ISE_EGRESS_ALLOW)"
            ) from exc
        raise WebUnavailable(f"the egress proxy refused the connection: {exc}") from exc
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        # every connection goes to the proxy (upstream failures come back as its 502s)
        raise WebUnavailable(f"the egress proxy is unreachable: {exc}") from exc
