"""A loopback HTTP mirror that fails on a script: for fault-injection tests of the downloader.

Each route ``/<name>/<file>`` answers its n-th request for a file with the n-th action of its
script, and every later request with ``then``. Actions:

    ok             200 with the body, or 206 for ``Range: bytes=N-``
    ignore-range   200 with the whole body, whatever Range says
    status:<code>  that status, with a small text body
    reset          headers announcing the whole body, half of it, then a TCP reset (RST)
    stall          headers announcing the whole body, half of it, then silence until released
    stall-headers  silence before sending anything
    truncate       headers announcing the whole body, half of it, then a clean close
    cut-unsized    no Content-Length, half of the body, then a clean close
    html           200 with an HTML error page ("Service unavailable")
    empty          200 with a body of 0 bytes
    redirect-loop  302 to the same URL, forever

``throttle`` (seconds per 64 KiB chunk) slows every answer down until ``release()``; stalls
end at ``release()`` or ``close()``. ``hits`` records each request: route, file, headers,
action, status and body bytes sent.
"""

from __future__ import annotations

import http.server
import re
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Any

from loopback import LoopbackServer

HTML_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>503 Service Unavailable</title></head>\n"
    b"<body><h1>Service Unavailable</h1><p>Please try again later.</p></body></html>\n"
)
CHUNK = 1 << 16


@dataclass
class Script:
    files: dict[str, bytes]
    actions: list[str]
    then: str = "ok"
    throttle: float = 0.0  # seconds to sleep after each 64 KiB chunk
    served: dict[str, int] = field(default_factory=dict)

    def action(self, filename: str) -> str:
        count = self.served.get(filename, 0)
        self.served[filename] = count + 1
        return self.actions[count] if count < len(self.actions) else self.then


@dataclass
class Hit:
    route: str
    filename: str
    headers: dict[str, str]
    action: str
    status: int = 0
    sent: int = 0


class _QuietServer(http.server.ThreadingHTTPServer):
    """Clients that vanish mid-answer are the point here: no tracebacks on stderr (which a
    later test's CliRunner may be capturing when a leftover handler thread wakes up)."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class FaultServer(LoopbackServer):
    server_class = _QuietServer

    def __init__(self) -> None:
        self.routes: dict[str, Script] = {}
        self.hits: list[Hit] = []
        self.lock = threading.Lock()
        self.released = threading.Event()  # ends stalls and throttling
        super().__init__(_handler(self))

    def add(
        self, name: str, files: dict[str, bytes], *actions: str, then: str = "ok",
        throttle: float = 0.0,
    ) -> str:
        """Serve ``files`` under ``/<name>/`` following ``actions``; returns the mirror URL."""
        self.routes[name] = Script(dict(files), list(actions), then, throttle)
        return f"{self.base}{name}/"

    def requests_for(self, route: str, filename: str | None = None) -> list[Hit]:
        with self.lock:
            return [h for h in self.hits
                    if h.route == route and (filename is None or h.filename == filename)]

    def release(self) -> None:
        """End every stall and stop throttling."""
        self.released.set()

    def close(self) -> None:
        self.released.set()
        super().close()


def _handler(server: FaultServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802  (the http.server name)
            _, route, filename = (self.path.split("/", 2) + ["", ""])[:3]
            script = server.routes.get(route)
            with server.lock:
                action = script.action(filename) if script and filename in script.files else "404"
                hit = Hit(route, filename, dict(self.headers.items()), action)
                server.hits.append(hit)
            if action == "404":
                self._send(hit, 404, b"not found\n")
                return
            body = script.files[filename]
            half = len(body) // 2
            if action.startswith("status:"):
                self._send(hit, int(action.split(":")[1]), b"error\n")
            elif action == "html":
                self._send(hit, 200, HTML_PAGE, content_type="text/html")
            elif action == "empty":
                self._send(hit, 200, b"")
            elif action == "redirect-loop":
                self._send(hit, 302, b"", location=self.path)
            elif action == "stall-headers":
                server.released.wait(30)
                self.close_connection = True
            elif action in ("reset", "stall", "truncate", "cut-unsized"):
                sized = action != "cut-unsized"
                self._send(hit, 200, body, cut=half, sized=sized)
                if action == "stall":
                    server.released.wait(30)
                elif action == "reset":  # SO_LINGER 0: close() sends RST, not FIN
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                self.close_connection = True
            else:
                wanted = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
                if wanted and action != "ignore-range":
                    start = int(wanted.group(1))
                    if start >= len(body):
                        self._send(hit, 416, b"")
                        return
                    self._send(hit, 206, body[start:], content_range=(start, len(body)),
                               throttle=script.throttle)
                    return
                self._send(hit, 200, body, throttle=script.throttle)

        def _send(
            self, hit: Hit, status: int, body: bytes, *, cut: int | None = None,
            sized: bool = True, content_type: str = "application/octet-stream",
            location: str | None = None, content_range: tuple[int, int] | None = None,
            throttle: float = 0.0,
        ) -> None:
            hit.status = status
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                if sized:
                    self.send_header("Content-Length", str(len(body)))
                else:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.send_header("ETag", '"fault-v1"')
                if location:
                    self.send_header("Location", location)
                if content_range:
                    start, total = content_range
                    self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
                self.end_headers()
                payload = body if cut is None else body[:cut]
                for at in range(0, len(payload), CHUNK):
                    self.wfile.write(payload[at : at + CHUNK])
                    hit.sent += len(payload[at : at + CHUNK])
                    if throttle and not server.released.is_set():
                        self.wfile.flush()
                        server.released.wait(throttle)
                self.wfile.flush()
            except OSError:  # the client went away (or was killed): nothing to do
                self.close_connection = True

    return Handler
