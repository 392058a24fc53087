"""A deadline that requests does not have: a watchdog that cuts a mirror's connection when time is up.

requests' timeouts bound each wait for the next bytes, not a whole transfer: a server that sends
its response headers, or a chunked body's framing, a byte every few seconds never trips them and
would hold the download, and the cache's lock, for as long as it likes (urllib3's ``total``
timeout is the same per-read bound). ``Watchdog`` shuts down the socket of every response read
under it once its deadline passes: the blocked read then ends like a dropped connection, and the
fetch loop (``data.http``), past its deadline, gives the mirror up.

The sockets are found where urllib3 starts reading a response (``getresponse``), through the
connection classes of ``WatchedAdapter``, which the download session mounts for http and https.
Imports requests and urllib3: imported only when a download starts.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

import requests.adapters
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_current = threading.local()  # the watchdog of the request this thread is making, if any


class Watchdog:
    """``with Watchdog(deadline):`` (a ``time.monotonic()`` value) around a request and its body."""

    def __init__(self, deadline: float) -> None:
        self.fired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._cut)
        self._timer.daemon = True

    def __enter__(self) -> Watchdog:
        _current.watchdog = self
        self._timer.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._timer.cancel()
        _current.watchdog = None

    def watch(self, sock: socket.socket) -> None:
        """Cut ``sock`` at the deadline (at once if it has passed)."""
        with self._lock:
            self._sockets.append(sock)
            if self.fired:
                _shut(sock)

    def _cut(self) -> None:
        with self._lock:
            self.fired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)  # the reader blocked in recv gets end-of-file
    except OSError:
        pass  # already closed


def _watched(sock: socket.socket | None) -> None:
    watchdog = getattr(_current, "watchdog", None)
    if watchdog is not None and sock is not None:
        watchdog.watch(sock)


class _WatchedHTTPConnection(HTTPConnection):
    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        _watched(self.sock)  # the headers and then the body are read from it
        return super().getresponse(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        _watched(self.sock)
        return super().getresponse(*args, **kwargs)


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class WatchedAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter whose connections (direct or through an HTTP proxy) a ``Watchdog`` can cut."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS pools have connection classes of their own
            manager.pool_classes_by_scheme = dict(POOLS)
        return manager
