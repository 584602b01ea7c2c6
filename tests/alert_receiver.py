"""A real HTTP receiver for Alertmanager's webhooks, run by the tests in a container of the base
image on a stack's network (standard library only: its source is passed to `python3 -c`).

POST /PATH records the JSON body and answers 200, or NNN for /status/NNN/...;
GET /received answers everything recorded so far: [{"path", "at" (epoch s), "body"}].
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = 9099
_received: list[dict[str, object]] = []
_lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body: object = json.loads(raw)
        except ValueError:
            body = raw.decode(errors="replace")
        with _lock:
            _received.append({"path": self.path, "at": time.time(), "body": body})
        parts = self.path.split("/")
        status = int(parts[2]) if len(parts) > 2 and parts[1] == "status" and parts[2].isdigit() else 200
        self._answer(status, b"refused by the test receiver" if status >= 300 else b"ok")

    def do_GET(self) -> None:
        with _lock:
            data = json.dumps(_received).encode()
        self._answer(200 if self.path == "/received" else 404, data)

    def _answer(self, status: int, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        return


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()  # noqa: S104 - inside its container
