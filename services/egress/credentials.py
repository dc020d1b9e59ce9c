"""Per-episode proxy credentials for the egress proxy (standard library only).

Owns: the token an episode's workspace uses to authenticate to the proxy (an HMAC-SHA256 of the
episode id under the proxy secret, hex, 32 characters), the proxy URL that carries it as Basic
credentials (``http://<episode_id>:<token>@host:port``), and checking a ``Proxy-Authorization``
header back to its episode id.  The proxy keeps no table of episodes: any holder of the secret can
mint credentials, and a workspace only ever sees its own episode's token.

Imported both by the services (main venv) and by the mitmproxy addon (``.venv-egress``), so it must
stay standard-library only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

EPISODE_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}")
TOKEN_CHARS = 32


def valid_episode_id(episode_id: str) -> bool:
    return EPISODE_ID_RE.fullmatch(episode_id) is not None


def token_for(secret: str, episode_id: str) -> str:
    """The episode's proxy password: HMAC-SHA256(secret, episode_id), hex, first 32 chars."""
    if not secret:
        raise ValueError("the egress secret is empty")
    if not valid_episode_id(episode_id):
        raise ValueError(f"invalid episode id {episode_id!r}: want [A-Za-z0-9_.-]{{1,128}}")
    digest = hmac.new(secret.encode(), episode_id.encode(), hashlib.sha256).hexdigest()
    return digest[:TOKEN_CHARS]


def proxy_url(host: str, port: int, secret: str, episode_id: str) -> str:
    """``http://<episode_id>:<token>@host:port``: the HTTP_PROXY/HTTPS_PROXY value for a workspace."""
    return f"http://{episode_id}:{token_for(secret, episode_id)}@{host}:{port}"


def basic_header(secret: str, episode_id: str) -> str:
    """The ``Proxy-Authorization`` value a client sends for this episode."""
    raw = f"{episode_id}:{token_for(secret, episode_id)}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def check(secret: str, header_value: str | None) -> str | None:
    """The episode id a ``Proxy-Authorization: Basic ...`` header proves, or None."""
    if not secret or not header_value:
        return None
    scheme, _, encoded = header_value.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    episode_id, sep, token = decoded.partition(":")
    if not sep or not valid_episode_id(episode_id):
        return None
    if not hmac.compare_digest(token, token_for(secret, episode_id)):
        return None
    return episode_id
