"""One file from one HTTP mirror into a ``.part``: resumable, retried, and bounded.

* 401/403/404/410 and other client errors, a redirect loop: :class:`MirrorFailed` at once;
* a host name that does not resolve, an unreachable network: :class:`MirrorFailed` at once,
  marked ``offline`` (retrying does not bring a network back); a proxy that fails the
  connection: :class:`MirrorFailed` at once too;
* 429, 5xx, other connection errors, timeouts, a body cut short: retried on the same mirror with
  exponential backoff, resuming the ``.part`` with ``Range: bytes=N-`` (and ``If-Range``);
  a server that ignores the range and answers 200 is read again from byte zero;
* ``Accept-Encoding: identity`` is asked for; a server that compresses anyway is stored as it
  sent the bytes, so byte ranges always refer to what is on disk.

Bounds, so that no mirror can hold the disk, the cache lock or the clock: a transfer never
exceeds ``cap`` bytes (the largest a faithful gzip of the known file can be; a larger
Content-Length is refused before the body); a mirror that sends fewer than
``policy.stall_bytes`` in ``policy.stall_window`` seconds, or is not done within
``policy.deadline`` seconds (its connection cut wherever it waits, headers included:
``data.deadline``), is given up for the next one.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlp_cli.data.partfile import open_part, part_size, read_meta, remove, url_id, write_guard, write_meta
from mlp_cli.version import __version__

if TYPE_CHECKING:
    import requests

GIVE_UP_AT_ONCE = frozenset({401, 403, 404, 410})


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one mirror before moving on to the next."""

    tries: int = 4  # attempts per mirror that make no progress
    backoff: float = 0.5  # seconds before the first retry; doubles each time
    max_delay: float = 30.0  # cap on one wait, Retry-After included
    timeout: tuple[float, float] = (10.0, 60.0)  # (connect, read) seconds
    chunk_size: int = 1 << 16
    stall_window: float = 30.0  # seconds over which the stall rule counts bytes
    stall_bytes: int = 16 << 10  # fewer bytes than this in a window: the mirror is stalled
    deadline: float = 900.0  # seconds one mirror may take for one file, retries included

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        wanted = self.backoff * 2 ** (failures - 1) if retry_after is None else retry_after
        return max(0.0, min(wanted, self.max_delay))


class Retry(Exception):
    """A transient failure: try the same mirror again (resuming)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class MirrorFailed(Exception):
    """This mirror cannot deliver the file: move on to the next one.

    ``down`` marks a mirror that kept failing for reasons unrelated to the file (no
    connection, server errors after every retry): the same run skips it for later files.
    """

    def __init__(self, reason: str, down: bool = False, offline: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.down = down
        self.offline = offline  # the host name does not resolve or the network is unreachable


class HttpFetcher:
    """Streams URLs into ``.part`` files over one HTTP session, opened on first use."""

    def __init__(self, policy: RetryPolicy, reporter: Any) -> None:
        self.policy = policy
        self.reporter = reporter
        self.requests_made = 0
        self._session: requests.Session | None = None

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def fetch(self, url: str, shown: str, filename: str, part: Path, cap: int) -> bool:
        """Leave the whole body in ``part``; True when it was resumed from earlier bytes.

        ``shown`` is the mirror as it may be printed (credentials redacted)."""
        deadline = time.monotonic() + self.policy.deadline
        failures = attempts = 0
        resumed = False
        while True:
            attempts += 1
            before = part_size(part)
            try:
                resumed |= self._attempt(url, shown, filename, part, cap, deadline)
                return resumed
            except Retry as retry:
                if part_size(part) <= before:  # progress (a longer .part) does not use up a try
                    failures += 1
                if failures >= self.policy.tries or attempts >= 20 * self.policy.tries:
                    gave_up = f"{retry.reason} (gave up after {attempts} tries)"
                    raise MirrorFailed(gave_up, down=True) from None
                wait = self.policy.delay(max(failures, 1), retry.retry_after)
                if time.monotonic() + wait > deadline:
                    raise MirrorFailed(f"{retry.reason}; {self._late()}") from None
                self.reporter.note(f"{shown}{filename}: {retry.reason}; retrying in {wait:.1f} s")
                time.sleep(wait)

    def _late(self) -> str:
        return f"not done within the {self.policy.deadline:g} s allowed per file"

    def _attempt(self, url: str, shown: str, filename: str, part: Path, cap: int,
                 deadline: float) -> bool:
        """One GET appending to ``part``; True when it resumed. Returns with the whole body, or
        raises; the connection is cut at ``deadline`` wherever it waits (``data.deadline``)."""
        from mlp_cli.data.deadline import Watchdog

        with Watchdog(deadline) as watchdog:
            try:
                resumed = self._get(url, shown, filename, part, cap, deadline)
            except Retry as retry:
                if watchdog.fired:  # no time is left to retry in
                    raise MirrorFailed(f"{retry.reason}; {self._late()}") from None
                raise
        if watchdog.fired:  # cut at the deadline: what arrived may end there (headers cut look complete)
            raise MirrorFailed(self._late())
        return resumed

    def _get(self, url: str, shown: str, filename: str, part: Path, cap: int, deadline: float) -> bool:
        import requests

        offset = part_size(part)
        headers: dict[str, str] = {}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            validator = read_meta(part).get("validator")
            if validator:
                headers["If-Range"] = validator
        self.requests_made += 1
        connect, read = self.policy.timeout
        timeout = (connect, min(read, self.policy.stall_window))  # silence is a stall too
        try:
            response = self._http().get(url, headers=headers, stream=True, timeout=timeout)
        except requests.TooManyRedirects as err:  # a loop does not heal by asking again
            limit = self._http().max_redirects
            raise MirrorFailed(f"redirect loop (more than {limit} redirects)") from err
        except requests.RequestException as err:
            if no_network(err):  # asking again does not bring a network back: fail fast
                raise MirrorFailed(describe(err), down=True, offline=True) from err
            if isinstance(err, requests.exceptions.ProxyError):  # the user's proxy, not the mirror: retrying
                raise MirrorFailed(f"proxy {describe(err)}", down=True) from err  # within seconds mends neither
            raise Retry(describe(err)) from err
        with response:
            total, append = self._check_response(response, shown + filename, offset, part, cap)
            if not append:
                offset = 0
                write_meta(part, url, response.headers)
            self.reporter.start(filename, total, shown)
            if offset:
                self.reporter.advance(offset)
            self._stream_body(response, part, append, cap, deadline)
        size = part_size(part)
        if total is not None and size < total:
            raise Retry(f"connection closed after {size} of {total} bytes")
        if total is not None and size > total:
            write_guard(part.parent, remove, part)
            raise Retry(f"received {size} bytes, {total} announced")
        return append

    def _check_response(
        self, response: Any, shown: str, offset: int, part: Path, cap: int
    ) -> tuple[int | None, bool]:
        """Status code -> (total size if known, whether to append), or raise what to do."""
        status = response.status_code
        reason = f"HTTP {status} {response.reason or ''}".strip()
        if status in GIVE_UP_AT_ONCE:
            raise MirrorFailed(reason)
        if status == 429 or status >= 500:
            raise Retry(reason, _retry_after(response.headers.get("Retry-After")))
        if status == 416:  # our range starts at or past the end: the .part is not trustworthy
            write_guard(part.parent, remove, part)
            raise Retry(f"{reason}; starting again from zero")
        total: int | None
        if status == 206 and offset:
            span = _content_range(response.headers.get("Content-Range", ""))
            if span is None or span[0] != offset:
                write_guard(part.parent, remove, part)
                raise Retry("unexpected Content-Range; starting again from zero")
            total, append = span[1], True
        elif status == 200:
            if offset:
                self.reporter.note(f"{shown}: server ignored the Range request; restarting")
            length = response.headers.get("Content-Length", "")
            total, append = (int(length) if length.isdigit() and len(length) < 20 else None), False
        else:
            raise MirrorFailed(reason)
        if total is not None and total > cap:
            raise MirrorFailed(f"announces {total} bytes, more than the {cap} the file can be")
        return total, append

    def _stream_body(self, response: Any, part: Path, append: bool, cap: int,
                     deadline: float) -> None:
        """Copy the raw (still content-encoded) body into ``part``, within the bounds."""
        errors = _network_errors()
        policy = self.policy
        with open_part(part, append) as handle:
            size = part_size(part)
            window_start, window_bytes = time.monotonic(), 0
            while True:
                try:
                    chunk = response.raw.read1(policy.chunk_size, decode_content=False)
                except errors as err:
                    handle.flush()
                    raise Retry(describe(err)) from err
                if not chunk:
                    break
                size += len(chunk)
                if size > cap:
                    raise MirrorFailed(f"sent more than {cap} bytes, the most the file can be")
                write_guard(part.parent, handle.write, chunk)
                self.reporter.advance(len(chunk))
                now, window_bytes = time.monotonic(), window_bytes + len(chunk)
                if now > deadline:
                    raise MirrorFailed(self._late())
                if now - window_start >= policy.stall_window:
                    if window_bytes < policy.stall_bytes:
                        raise MirrorFailed(
                            f"stalled: {window_bytes} bytes in {now - window_start:.1f} s "
                            f"(at least {policy.stall_bytes} expected)"
                        )
                    window_start, window_bytes = now, 0
            handle.flush()
            os.fsync(handle.fileno())

    def _http(self) -> requests.Session:
        if self._session is None:
            import requests

            from mlp_cli.data.deadline import WatchedAdapter

            self._session = requests.Session()
            for scheme in ("http://", "https://"):  # connections a deadline can cut
                self._session.mount(scheme, WatchedAdapter())
            self._session.headers.update(
                {"Accept-Encoding": "identity", "User-Agent": f"mlp/{__version__}"}
            )
        return self._session


def same_url(part: Path, url: str) -> bool:
    """Whether the ``.part`` was started from ``url`` (so resuming it is meaningful); notes
    written before the URL was stored as a digest hold it in the clear."""
    meta = read_meta(part)
    return meta.get("url_sha256") == url_id(url) or meta.get("url") == url


def _content_range(value: str) -> tuple[int, int | None] | None:
    """``bytes 100-199/200`` -> (100, 200); total None when ``*``."""
    match = re.fullmatch(r"\s*bytes\s+(\d{1,18})-(\d{1,18})/(\d{1,18}|\*)\s*", value)
    if match is None:
        return None
    total = match.group(3)
    return int(match.group(1)), (None if total == "*" else int(total))


def _retry_after(value: str | None) -> float | None:
    if value is None or not value.strip().isdigit() or len(value.strip()) > 6:
        return None  # the HTTP-date form is rare for 429/503; fall back to backoff
    return float(value.strip())


def _network_errors() -> tuple[type[BaseException], ...]:
    import http.client

    import requests
    import urllib3.exceptions

    return (
        requests.RequestException,
        urllib3.exceptions.HTTPError,
        http.client.HTTPException,
        ConnectionError,
        TimeoutError,
    )


NO_NETWORK_ERRNOS = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN})


def no_network(err: BaseException) -> bool:
    """Whether ``err`` (or an error it wraps) says there is no network to ask at all: the host
    name does not resolve (socket.gaierror), or the network or host is unreachable."""
    seen: set[int] = set()
    stack: list[object] = [err]
    while stack:
        item = stack.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, socket.gaierror) or getattr(item, "errno", None) in NO_NETWORK_ERRNOS:
            return True
        stack += [item.__cause__, item.__context__, getattr(item, "reason", None), *item.args]
    return False


def describe(err: BaseException) -> str:
    """A short human reason for a network error (requests' own messages run to 300 chars)."""
    import requests
    import urllib3.exceptions

    if isinstance(err, requests.ConnectTimeout):
        return "connection timed out"
    if isinstance(err, requests.ReadTimeout | urllib3.exceptions.ReadTimeoutError):
        return "read timed out"
    if isinstance(err, requests.exceptions.SSLError):
        return "TLS error"
    text = str(err)
    errno_text = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if errno_text:
        return "connection failed: " + errno_text.group(1).strip().rstrip(".")
    if isinstance(
        err,
        requests.exceptions.ChunkedEncodingError | urllib3.exceptions.ProtocolError,
    ):
        return "connection broken during the transfer"
    return f"{type(err).__name__}: {text[:120]}" if text else type(err).__name__
