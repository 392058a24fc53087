"""A loopback mirror that a compromised or broken server could be: for the hostile download tests.

``/<mode>/<file>`` answers with ``files[file]`` as the mode says:

    ok        200 with the body and its Content-Length
    forever   200 without Content-Length, then zeros for as long as the client reads
    trickle   200 with the Content-Length, then one byte every ``trickle_every`` seconds
    slow      200, then ``slow_rate`` bytes per second (above the stall rule, below any deadline)
    huge      200 announcing a Content-Length of 10**12 bytes
    bomb      200 with ``bomb`` as the body (a gzip of a gzip of a large payload)
    dripheaders  the status line, then a header one byte every ``trickle_every`` seconds, forever
    dripchunks   200, chunked, then a chunk-size line's extension one byte at a time, forever

``hits`` counts the requests per mode; every request's path (with any credentials the client
sent in an Authorization header) is kept in ``seen``.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections import Counter
from typing import Any

from loopback import LoopbackServer


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hang up on these answers on purpose


class HostileServer(LoopbackServer):
    server_class = _QuietServer

    def __init__(self, files: dict[str, bytes], bomb: bytes = b"") -> None:
        self.files = files
        self.bomb = bomb
        self.trickle_every = 0.2
        self.slow_rate = 4096
        self.hits: Counter[str] = Counter()
        self.seen: list[tuple[str, str]] = []
        self.stop = threading.Event()
        super().__init__(_handler(self))

    def url(self, mode: str, credentials: str = "") -> str:
        base = self.base
        if credentials:
            base = base.replace("http://", f"http://{credentials}@")
        return f"{base}{mode}/"

    def close(self) -> None:
        self.stop.set()
        super().close()


def _handler(server: HostileServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802  (the http.server name)
            mode, _, filename = self.path.strip("/").partition("/")
            server.hits[mode] += 1
            server.seen.append((self.path, self.headers.get("Authorization", "")))
            body = server.bomb if mode == "bomb" else server.files.get(filename)
            if body is None:
                self.send_error(404)
                return
            if mode.startswith("drip"):  # a slowloris: every byte within any read timeout, never done
                head = b"HTTP/1.1 200 OK\r\nX-Drip: " if mode == "dripheaders" else (
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n1;x=")
                self._drip(head)
                return
            self.send_response(200)
            if mode == "huge":
                self.send_header("Content-Length", str(10**12))
            elif mode != "forever":
                self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                getattr(self, f"_{mode}", self._ok)(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def _ok(self, body: bytes) -> None:
            self.wfile.write(body)

        def _bomb(self, body: bytes) -> None:
            self.wfile.write(body)

        def _forever(self, body: bytes) -> None:
            zeros = bytes(1 << 16)
            while not server.stop.is_set():
                self.wfile.write(zeros)

        def _huge(self, body: bytes) -> None:
            self._forever(body)

        def _trickle(self, body: bytes) -> None:
            for i in range(len(body)):
                if server.stop.wait(server.trickle_every):
                    return
                self.wfile.write(body[i : i + 1])
                self.wfile.flush()

        def _drip(self, head: bytes) -> None:
            try:
                self.wfile.write(head)
                while not server.stop.wait(server.trickle_every):
                    self.wfile.write(b"a")
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass

        def _slow(self, body: bytes) -> None:
            step = max(1, server.slow_rate // 10)
            for start in range(0, len(body), step):
                if server.stop.wait(0.1):
                    return
                self.wfile.write(body[start : start + step])
                self.wfile.flush()

    return Handler


def double_gzip(payload_bytes: int) -> bytes:
    """gzip(gzip(zeros)): a few KB that decompress to ``payload_bytes``."""
    import zlib

    inner = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(1 << 20)
    parts = [inner.compress(chunk) for _ in range(payload_bytes >> 20)]
    parts.append(inner.flush())
    outer = zlib.compressobj(9, zlib.DEFLATED, 31)
    return outer.compress(b"".join(parts)) + outer.flush()


def wait_until(predicate: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()
