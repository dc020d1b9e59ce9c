"""Client for the egress proxy's control API (standard library ``http.client``).

Owns: talking to the addon's control routes, which it serves itself for plain-HTTP requests to host
``egress.ise.internal`` sent *through the proxy* with ``X-ISE-Control: <secret>``.  Requests go in
absolute form straight to the proxy's address, so no ``HTTP_PROXY``/``NO_PROXY`` setting of this
process can send them elsewhere.  Also the egress error root :class:`EgressError`.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterable

from services.common.errors import ISEError

CONTROL_HOST = "egress.ise.internal"


class EgressError(ISEError, RuntimeError):
    """The egress proxy could not be started, reached, or did not do what was asked."""


class EgressControl:
    """``EgressControl(("172.18.0.1", 8080), secret)``: recordings and replay of the proxy's episodes."""

    def __init__(self, address: tuple[str, int], secret: str, timeout_s: float = 10.0) -> None:
        self.address = address
        self.secret = secret
        self.timeout_s = timeout_s

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(*self.address, timeout=self.timeout_s)
        try:
            headers = {"X-ISE-Control": self.secret}
            if body is not None:
                headers["Content-Type"] = "application/x-ndjson"
            conn.request(method, f"http://{CONTROL_HOST}{path}", body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        except OSError as exc:
            raise EgressError(f"egress proxy at {self.address[0]}:{self.address[1]} unreachable: {exc}") from exc
        finally:
            conn.close()

    def call(
        self, method: str, path: str, body: bytes | None = None, ok: tuple[int, ...] = (200,)
    ) -> tuple[int, bytes]:
        status, data = self.request(method, path, body)
        if status not in ok:
            raise EgressError(f"egress control {method} {path} -> {status}: {data.decode(errors='replace').strip()}")
        return status, data

    def health(self) -> dict:
        return json.loads(self.call("GET", "/v1/health")[1])

    def fetch_recording(self, episode_id: str) -> list[dict]:
        """The episode's exchanges in order ([] when it has no recording)."""
        status, data = self.call("GET", f"/v1/recordings/{episode_id}", ok=(200, 404))
        if status == 404:
            return []
        return [json.loads(line) for line in data.decode().splitlines() if line.strip()]

    def fetch_recording_bytes(self, episode_id: str) -> bytes:
        status, data = self.call("GET", f"/v1/recordings/{episode_id}", ok=(200, 404))
        return b"" if status == 404 else data

    def arm_replay(self, episode_id: str, lines: Iterable[dict]) -> int:
        """Answer this episode's requests from ``lines`` only; returns how many exchanges can replay."""
        body = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode()
        return int(json.loads(self.call("PUT", f"/v1/replay/{episode_id}", body)[1])["exchanges"])

    def disarm_replay(self, episode_id: str) -> bool:
        return bool(json.loads(self.call("DELETE", f"/v1/replay/{episode_id}")[1])["disarmed"])

    def delete_recording(self, episode_id: str) -> bool:
        return bool(json.loads(self.call("DELETE", f"/v1/recordings/{episode_id}")[1])["deleted"])
