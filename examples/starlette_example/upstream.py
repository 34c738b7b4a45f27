"""A stand-in for api.github.com on 127.0.0.1, so the example never leaves this machine.

Run it alone with ``python upstream.py [PORT]`` (default 8001), or call :func:`start`.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# The fields of GitHub's answer that the example and its readers care about.
OCTOCAT = {
    "login": "octocat",
    "id": 583231,
    "type": "User",
    "name": "The Octocat",
    "company": "@github",
    "public_repos": 8,
    "html_url": "https://github.com/octocat",
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep the example's output to what run.py prints

    def do_GET(self) -> None:
        if self.path == "/users/octocat":
            status, payload = 200, OCTOCAT
        else:
            status, payload = 404, {"message": "Not Found"}
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _server(port: int) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    server.daemon_threads = True
    return server


def start(port: int = 0) -> ThreadingHTTPServer:
    """Serve on 127.0.0.1:``port`` (0 = a free port) in a daemon thread; call ``shutdown()`` to stop."""
    server = _server(port)
    threading.Thread(target=server.serve_forever, name="upstream", daemon=True).start()
    return server


if __name__ == "__main__":
    server = _server(int(sys.argv[1]) if len(sys.argv) > 1 else 8001)
    print(f"upstream on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()
