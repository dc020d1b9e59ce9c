"""A local mock HTTP API serving canned JSON responses from a routes file (standard library only).

Usage: python3 mock_api.py ROUTES.json [PORT]   (listens on 127.0.0.1, default port 8765)
ROUTES.json maps "METHOD /path" to a response, e.g.
  {"GET /v1/users/1": {"status": 200, "body": {"id": 1}},
   "POST /v1/users": {"status": 201, "body": {"id": 2}, "headers": {"Location": "/v1/users/2"}},
   "GET /v1/slow": {"status": 200, "body": [], "delay_s": 3}}
Query strings are ignored when matching; unknown routes answer 404. Each request is printed to
stdout as one JSON line (method, path, headers, body), so redirect stdout to a log file.
"""

from __future__ import annotations

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ROUTES: dict[str, dict[str, Any]] = {}


class Handler(BaseHTTPRequestHandler):
    def handle_any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        route = f"{self.command} {self.path.split('?')[0]}"
        record = {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
        print(json.dumps(record), flush=True)
        spec = ROUTES.get(route, {"status": 404, "body": {"error": f"no mock route for {route}"}})
        time.sleep(float(spec.get("delay_s", 0)))
        data = json.dumps(spec.get("body")).encode()
        self.send_response(int(spec.get("status", 200)))
        self.send_header("Content-Type", "application/json")
        for name, value in spec.get("headers", {}).items():
            self.send_header(name, str(value))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any

    def log_message(self, format: str, *args: Any) -> None:  # requests are logged as JSON above
        pass


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as f:
        ROUTES.update(json.load(f))
    port = int(argv[1]) if len(argv) > 1 else 8765
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(json.dumps({"listening": f"http://127.0.0.1:{port}", "routes": sorted(ROUTES)}), flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
