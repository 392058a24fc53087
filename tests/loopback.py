"""The scaffolding the tests' HTTP mirrors share: a server on a free 127.0.0.1 port, answering
from a daemon thread until ``close()``."""

from __future__ import annotations

import http.server
import threading


class LoopbackServer:
    """Serves with ``handler`` (a BaseHTTPRequestHandler class); ``server_class`` may be a
    ThreadingHTTPServer subclass. ``base`` is the URL of its root."""

    server_class: type[http.server.ThreadingHTTPServer] = http.server.ThreadingHTTPServer

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self.httpd = self.server_class(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.thread.start()

    @property
    def base(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
