"""Fetching one dataset file from a list of mirrors: verified, resumable, safe to run twice.

For each file the :class:`Downloader`

1. returns at once when ``<dir>/<file>`` exists and its decompressed SHA-256 matches
   (status ``"cached"``: no lock taken, no request made);
2. otherwise takes ``<dir>/<file>.lock`` (a :mod:`filelock`), so concurrent processes on one
   cache wait for each other and the later ones find the file cached;
3. tries the mirrors in order, streaming into ``<dir>/<file>.part``:

   * 401/403/404/410 and other client errors, a redirect loop: next mirror at once;
   * 429, 5xx, connection errors, timeouts, a body cut short: retry the same mirror with
     exponential backoff, resuming the ``.part`` with ``Range: bytes=N-`` (and ``If-Range``);
     a server that ignores the range and answers 200 is read again from byte zero;
   * ``Accept-Encoding: identity`` is asked for; a server that compresses anyway is stored
     as it sent the bytes (the ``.gz`` compressed once more) and verification peels both
     gzip layers, so byte ranges always refer to what is on disk;
   * after the body: SHA-256 of the decompressed content against the registry. A mismatch
     deletes the ``.part`` and moves on to the next mirror;

4. renames the verified ``.part`` onto the final name (atomic), so nothing unverified ever
   sits under it. When every mirror fails, the ``.part`` is deleted and :class:`DownloadError`
   lists each mirror with what it answered.

``file://`` mirrors are copied from disk. Library code never prints: progress goes to a
:class:`Reporter`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import urlparse

from mlp_cli import __version__
from mlp_cli.data.idx import sha256_of_payload
from mlp_cli.errors import DataError, DownloadError

if TYPE_CHECKING:
    import requests

Status = Literal["cached", "downloaded"]  # both mean "verified against the registry"

GIVE_UP_AT_ONCE = frozenset({401, 403, 404, 410})
LOCAL_COPY_HINT = (
    "To use a local copy, pass --mirror file:///path/to/dir/ (a directory holding the .gz files)."
)


class Reporter(Protocol):
    """Where progress goes. ``start`` may be called again for one file: it then restarts."""

    def start(self, filename: str, total: int | None, mirror: str) -> None: ...

    def advance(self, nbytes: int) -> None: ...

    def done(self, filename: str, status: str) -> None: ...

    def note(self, text: str) -> None: ...


class NullReporter:
    """A reporter that reports nothing."""

    def start(self, filename: str, total: int | None, mirror: str) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass

    def done(self, filename: str, status: str) -> None:
        pass

    def note(self, text: str) -> None:
        pass


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one mirror before moving on to the next."""

    tries: int = 4  # attempts per mirror that make no progress
    backoff: float = 0.5  # seconds before the first retry; doubles each time
    max_delay: float = 30.0  # cap on one wait, Retry-After included
    timeout: tuple[float, float] = (10.0, 60.0)  # (connect, read) seconds
    chunk_size: int = 1 << 16

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        wanted = self.backoff * 2 ** (failures - 1) if retry_after is None else retry_after
        return max(0.0, min(wanted, self.max_delay))


DEFAULT_POLICY = RetryPolicy()  # looked up at each use, so tests can swap it for a fast one


@dataclass(frozen=True)
class FetchResult:
    """One verified file in the cache."""

    filename: str
    path: Path
    status: Status
    mirror: str | None  # where it came from; None when cached
    size: int  # bytes on disk


class _Retry(Exception):
    """A transient failure: try the same mirror again (resuming)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class _MirrorFailed(Exception):
    """This mirror cannot deliver the file: move on to the next one.

    ``down`` marks a mirror that kept failing for reasons unrelated to the file (no
    connection, server errors after every retry): the same run skips it for later files.
    """

    def __init__(self, reason: str, down: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.down = down


class Downloader:
    """Fetches files into a cache directory; holds one HTTP session, opened on first use."""

    def __init__(self, reporter: Reporter | None = None, policy: RetryPolicy | None = None):
        self.reporter: Reporter = reporter or NullReporter()
        self.policy = policy or DEFAULT_POLICY
        self.requests_made = 0  # HTTP requests sent, all files together
        self._down: dict[str, str] = {}  # mirror -> why it is skipped for the rest of the run
        self._session: requests.Session | None = None
        self._appended = False  # the current .part was extended by a range request

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self) -> Downloader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fetch(
        self,
        filename: str,
        sha256: str,
        directory: Path,
        mirrors: tuple[str, ...],
        *,
        force: bool = False,
        hint: str = LOCAL_COPY_HINT,
    ) -> FetchResult:
        """Make ``directory/filename`` a verified copy; ``force`` downloads it again anyway."""
        final = directory / filename
        if not force and self._is_verified(final, sha256, drop_if_bad=True):
            return self._cached(final)
        try:
            with self._locked(directory, filename):
                if not force and self._is_verified(final, sha256, drop_if_bad=True):
                    return self._cached(final)  # another process fetched it while we waited
                failures, result = self._from_mirrors(filename, sha256, directory, mirrors)
        except BaseException:
            self.reporter.done(filename, "failed")
            raise
        if result is not None:
            self.reporter.done(filename, "downloaded")
            return result
        self.reporter.done(filename, "failed")
        tried = "; ".join(f"{mirror} -> {reason}" for mirror, reason in failures) or "none given"
        raise DownloadError(f"could not download {filename} from any mirror: {tried}. {hint}")

    def _from_mirrors(
        self, filename: str, sha256: str, directory: Path, mirrors: tuple[str, ...]
    ) -> tuple[list[tuple[str, str]], FetchResult | None]:
        """Try each mirror in turn; the verified file, or what every mirror answered."""
        part, final = directory / f"{filename}.part", directory / filename
        failures: list[tuple[str, str]] = []
        for mirror in mirrors:
            if mirror in self._down:
                failures.append((mirror, f"skipped: {self._down[mirror]} for an earlier file"))
                continue
            try:
                self._from_mirror(mirror, filename, sha256, part)
            except _MirrorFailed as failed:
                failures.append((mirror, failed.reason))
                self.reporter.note(f"{mirror}{filename}: {failed.reason}")
                if failed.down:
                    self._down[mirror] = failed.reason
                continue
            _write_guard(directory, os.replace, part, final)  # atomic: verified or absent
            _remove(_meta_path(part))
            size = final.stat().st_size
            return failures, FetchResult(filename, final, "downloaded", mirror, size)
        _remove(part)
        _remove(_meta_path(part))
        return failures, None

    # -- the cache ----------------------------------------------------------------------------

    def _is_verified(self, path: Path, sha256: str, drop_if_bad: bool) -> bool:
        if not path.is_file():
            return False
        problem = _verify(path, sha256)
        if problem is None:
            return True
        if drop_if_bad:
            self.reporter.note(f"{path}: {problem}; deleting it and downloading again")
            _write_guard(path.parent, _remove, path)
        return False

    def _cached(self, path: Path) -> FetchResult:
        self.reporter.done(path.name, "cached")
        return FetchResult(path.name, path, "cached", None, path.stat().st_size)

    @contextlib.contextmanager
    def _locked(self, directory: Path, filename: str) -> Any:
        import filelock

        lock = filelock.FileLock(str(directory / f"{filename}.lock"))
        try:
            try:
                lock.acquire(timeout=0)
            except filelock.Timeout:
                self.reporter.note(f"waiting for another process downloading {filename}")
                lock.acquire()  # blocks; never times out
        except filelock.Timeout:  # pragma: no cover  (an OSError too: keep it apart)
            raise
        except OSError as err:  # the lock file cannot be created
            raise _unwritable(directory, err) from err
        try:
            yield
        finally:
            lock.release()

    # -- one mirror ---------------------------------------------------------------------------

    def _from_mirror(self, mirror: str, filename: str, sha256: str, part: Path) -> None:
        """Leave a verified ``part`` or raise :class:`_MirrorFailed`."""
        url = mirror + filename
        meta = _read_meta(part)
        if part.exists() and meta.get("url") != url:
            _write_guard(part.parent, _remove, part)  # a leftover from another mirror
        restarted = False
        while True:
            self._appended = False
            if url.startswith("file:"):
                self._copy_local(url, mirror, filename, part)
            else:
                self._http_with_retries(url, mirror, filename, part)
            problem = _verify(part, sha256)
            if problem is None:
                return
            _write_guard(part.parent, _remove, part)
            if self._appended and not restarted:  # old bytes may be the culprit, not the mirror
                restarted = True
                self.reporter.note(f"{url}: {problem} after resuming; downloading it whole")
                continue
            raise _MirrorFailed(problem)

    def _http_with_retries(self, url: str, mirror: str, filename: str, part: Path) -> None:
        failures = 0
        attempts = 0
        while True:
            attempts += 1
            before = part.stat().st_size if part.exists() else 0
            try:
                self._http_attempt(url, mirror, filename, part)
                return
            except _Retry as retry:
                after = part.stat().st_size if part.exists() else 0
                if after <= before:  # progress (a longer .part) does not use up a try
                    failures += 1
                if failures >= self.policy.tries or attempts >= 20 * self.policy.tries:
                    gave_up = f"{retry.reason} (gave up after {attempts} tries)"
                    raise _MirrorFailed(gave_up, down=True) from None
                wait = self.policy.delay(max(failures, 1), retry.retry_after)
                self.reporter.note(f"{url}: {retry.reason}; retrying in {wait:.1f} s")
                time.sleep(wait)

    def _http_attempt(self, url: str, mirror: str, filename: str, part: Path) -> None:
        """One GET, appending to ``part``; returns when the whole body is on disk."""
        import requests

        offset = part.stat().st_size if part.exists() else 0
        headers: dict[str, str] = {}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            validator = _read_meta(part).get("validator")
            if validator:
                headers["If-Range"] = validator
        self.requests_made += 1
        try:
            response = self._http().get(
                url, headers=headers, stream=True, timeout=self.policy.timeout
            )
        except requests.TooManyRedirects as err:  # a loop does not heal by asking again
            limit = self._http().max_redirects
            raise _MirrorFailed(f"redirect loop (more than {limit} redirects)") from err
        except requests.RequestException as err:
            raise _Retry(_describe(err)) from err
        with response:
            total, mode = self._check_response(response, url, offset, part)
            if mode == "wb":
                offset = 0
                _write_guard(part.parent, _write_meta, part, url, response.headers)
            else:
                self._appended = True
            self.reporter.start(filename, total, mirror)
            if offset:
                self.reporter.advance(offset)
            self._stream_body(response, part, mode)
        size = part.stat().st_size
        if total is not None and size < total:
            raise _Retry(f"connection closed after {size} of {total} bytes")
        if total is not None and size > total:
            _write_guard(part.parent, _remove, part)
            raise _Retry(f"received {size} bytes, {total} announced")

    def _check_response(
        self, response: Any, url: str, offset: int, part: Path
    ) -> tuple[int | None, str]:
        """Status code -> (total size if known, file mode), or raise what to do instead."""
        status = response.status_code
        reason = f"HTTP {status} {response.reason or ''}".strip()
        if status in GIVE_UP_AT_ONCE:
            raise _MirrorFailed(reason)
        if status == 429 or status >= 500:
            raise _Retry(reason, _retry_after(response.headers.get("Retry-After")))
        if status == 416:  # our range starts at or past the end: the .part is not trustworthy
            _write_guard(part.parent, _remove, part)
            raise _Retry(f"{reason}; starting again from zero")
        if status == 206 and offset:
            span = _content_range(response.headers.get("Content-Range", ""))
            if span is None or span[0] != offset:
                _write_guard(part.parent, _remove, part)
                raise _Retry("unexpected Content-Range; starting again from zero")
            return span[1], "ab"
        if status == 200:
            if offset:
                self.reporter.note(f"{url}: server ignored the Range request; restarting")
            length = response.headers.get("Content-Length")
            return (int(length) if length and length.isdigit() else None), "wb"
        raise _MirrorFailed(reason)

    def _stream_body(self, response: Any, part: Path, mode: str) -> None:
        """Copy the raw (still content-encoded) body into ``part``; network errors -> retry."""
        errors = _network_errors()
        try:
            handle = open(part, mode)  # closed by the with below
        except OSError as err:
            raise _unwritable(part.parent, err) from err
        with handle:
            chunks = response.raw.stream(self.policy.chunk_size, decode_content=False)
            while True:
                try:
                    chunk = next(chunks)
                except StopIteration:
                    break
                except errors as err:
                    handle.flush()
                    raise _Retry(_describe(err)) from err
                _write_guard(part.parent, handle.write, chunk)
                self.reporter.advance(len(chunk))
            handle.flush()
            os.fsync(handle.fileno())

    def _copy_local(self, url: str, mirror: str, filename: str, part: Path) -> None:
        parsed = urlparse(url)
        if parsed.netloc not in ("", "localhost"):
            raise _MirrorFailed(f"file URL with host {parsed.netloc!r} is not supported")
        from urllib.request import url2pathname  # here: urllib.request costs ~30 ms to import

        source = Path(url2pathname(parsed.path))
        if not source.is_file():
            raise _MirrorFailed("not found")
        try:
            src = open(source, "rb")  # closed by the with below
        except OSError as err:
            raise _MirrorFailed(f"cannot read ({err.strerror or err})") from err
        with src:
            self.reporter.start(filename, source.stat().st_size, mirror)
            try:
                handle = open(part, "wb")  # closed by the with below
            except OSError as err:
                raise _unwritable(part.parent, err) from err
            with handle:
                while True:
                    try:
                        chunk = src.read(1 << 20)
                    except OSError as err:
                        raise _MirrorFailed(f"cannot read ({err.strerror or err})") from err
                    if not chunk:
                        break
                    _write_guard(part.parent, handle.write, chunk)
                    self.reporter.advance(len(chunk))
                handle.flush()
                os.fsync(handle.fileno())
        _remove(_meta_path(part))

    def _http(self) -> requests.Session:
        if self._session is None:
            import requests

            self._session = requests.Session()
            self._session.headers.update(
                {"Accept-Encoding": "identity", "User-Agent": f"mlp/{__version__}"}
            )
        return self._session


# -- helpers ----------------------------------------------------------------------------------


def _verify(path: Path, sha256: str) -> str | None:
    """None when the decompressed content of ``path`` has digest ``sha256``, else why not."""
    try:
        digest = sha256_of_payload(path)
    except DataError as err:
        return str(err).removeprefix(f"{path}: ")
    if digest != sha256:
        return _what_is_wrong(path) or (
            f"checksum mismatch (content sha256 {digest[:12]}..., expected {sha256[:12]}...)"
        )
    return None


def _what_is_wrong(path: Path) -> str | None:
    """A plain reason when the bytes are plainly not the file: nothing, or a web page."""
    try:
        with open(path, "rb") as handle:  # closed by the with
            head = handle.read(512)
    except OSError:
        return None
    if not head:
        return "empty file (0 bytes)"
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")):
        return "got a web page instead of the file (an error or login page?)"
    return None


def _meta_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _read_meta(part: Path) -> dict[str, str]:
    """Where a ``.part`` came from, so a later run resumes it only from the same URL."""
    try:
        meta = json.loads(_meta_path(part).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _write_meta(part: Path, url: str, headers: Any) -> None:
    from mlp_cli.atomic import atomic_write_text

    etag = headers.get("ETag") or ""
    validator = etag if etag and not etag.startswith("W/") else headers.get("Last-Modified", "")
    atomic_write_text(_meta_path(part), json.dumps({"url": url, "validator": validator}))


def _content_range(value: str) -> tuple[int, int | None] | None:
    """``bytes 100-199/200`` -> (100, 200); total None when ``*``."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", value)
    if match is None:
        return None
    total = match.group(3)
    return int(match.group(1)), (None if total == "*" else int(total))


def _retry_after(value: str | None) -> float | None:
    if value is None or not value.strip().isdigit():
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


def _describe(err: BaseException) -> str:
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


def _write_guard(directory: Path, action: Any, *args: Any) -> Any:
    """Run a file-system write; turn OSError into a DownloadError naming ``directory``."""
    try:
        return action(*args)
    except OSError as err:
        raise _unwritable(directory, err) from err


def _unwritable(directory: Path, err: OSError) -> DownloadError:
    return DownloadError(
        f"cannot write to the data directory {directory}: {err.strerror or err}; "
        "choose a writable one with --data-dir or MLP_DATA_DIR"
    )


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
