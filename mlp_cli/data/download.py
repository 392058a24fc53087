"""Fetching one dataset file from a list of mirrors: verified, bounded, safe to run twice.

For each file the :class:`Downloader`

1. returns at once when ``<dir>/<file>`` is a regular file whose decompressed SHA-256 matches
   (status ``"cached"``: no lock taken, no request made);
2. otherwise takes ``<dir>/<file>.lock`` (a :mod:`filelock`), so concurrent processes on one
   cache wait for each other and the later ones find the file cached;
3. tries the mirrors in order, each into ``<dir>/<file>.part`` (:mod:`mlp_cli.data.http` for
   ``http(s)://``, :mod:`mlp_cli.data.local` for ``file://``), then checks the SHA-256 of the
   decompressed content -- decompressing no more than the file's known size -- against the
   registry. A mismatch deletes the ``.part`` and moves on to the next mirror;
4. renames the verified ``.part`` onto the final name (atomic), so nothing unverified ever
   sits under it. When every mirror fails, the ``.part`` is deleted and :class:`DownloadError`
   lists each mirror with what it answered.

Mirrors are shown with their credentials redacted (``https://***@host/``) in every error and
progress line and in the result. Library code never prints: progress goes to a
:class:`Reporter`.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from mlp_cli.data import partfile
from mlp_cli.data.http import HttpFetcher, MirrorFailed, RetryPolicy, same_url
from mlp_cli.data.idx import sha256_of_payload
from mlp_cli.data.local import copy_local
from mlp_cli.data.registry import redact, transfer_cap
from mlp_cli.errors import DataError, DownloadError

__all__ = ["DEFAULT_POLICY", "Downloader", "FetchResult", "NullReporter", "Reporter", "RetryPolicy"]

Status = Literal["cached", "downloaded"]  # both mean "verified against the registry"

LOCAL_COPY_HINT = (
    "To use a local copy, pass --mirror file:///path/to/dir/ (a directory holding the .gz files)."
)
UNKNOWN_SIZE_CAP = 1 << 28  # bytes, for a file whose size the caller does not give


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


class _Redacted:
    """Passes progress on with any credentials in URLs replaced by ``***``."""

    def __init__(self, reporter: Reporter) -> None:
        self.inner = reporter

    def start(self, filename: str, total: int | None, mirror: str) -> None:
        self.inner.start(filename, total, redact(mirror))

    def advance(self, nbytes: int) -> None:
        self.inner.advance(nbytes)

    def done(self, filename: str, status: str) -> None:
        self.inner.done(filename, status)

    def note(self, text: str) -> None:
        self.inner.note(redact(text))


DEFAULT_POLICY = RetryPolicy()  # looked up at each use, so tests can swap it for a fast one


@dataclass(frozen=True)
class FetchResult:
    """One verified file in the cache."""

    filename: str
    path: Path
    status: Status
    mirror: str | None  # where it came from, credentials redacted; None when cached
    size: int  # bytes on disk


class Downloader:
    """Fetches files into a cache directory; holds one HTTP session, opened on first use."""

    def __init__(self, reporter: Reporter | None = None, policy: RetryPolicy | None = None):
        self.reporter: Reporter = _Redacted(reporter or NullReporter())
        self.policy = policy or DEFAULT_POLICY
        self._http = HttpFetcher(self.policy, self.reporter)
        self._down: dict[str, str] = {}  # mirror -> why it is skipped for the rest of the run
        self._offline: set[str] = set()  # mirrors whose host did not resolve or could not be reached

    @property
    def requests_made(self) -> int:
        """HTTP requests sent, all files together."""
        return self._http.requests_made

    def close(self) -> None:
        self._http.close()

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
        size: int | None = None,
    ) -> FetchResult:
        """Make ``directory/filename`` a verified copy; ``force`` downloads it again anyway.

        ``size`` is the decompressed size the registry knows: it bounds the transfer and the
        decompression."""
        final = directory / filename
        if not force and self._is_verified(final, sha256, size):
            return self._cached(final)
        try:
            with self._locked(directory, filename):
                if not force and self._is_verified(final, sha256, size):
                    return self._cached(final)  # another process fetched it while we waited
                failures, result = self._from_mirrors(filename, sha256, size, directory, mirrors)
        except BaseException:
            self.reporter.done(filename, "failed")
            raise
        if result is not None:
            self.reporter.done(filename, "downloaded")
            return result
        self.reporter.done(filename, "failed")
        tried = "; ".join(f"{mirror} -> {reason}" for mirror, reason in failures) or "none given"
        if mirrors and all(mirror in self._offline for mirror in mirrors):  # each failed at once, untried again
            reasons = "; ".join(dict.fromkeys(reason for _, reason in failures if not reason.startswith("skipped")))
            shown = ", ".join(redact(mirror) for mirror in mirrors)
            raise DownloadError(redact(f"could not download {filename}: no network reachable ({reasons or 'as before'};"
                                       f" not retried; mirrors: {shown}). {hint}"))
        raise DownloadError(redact(f"could not download {filename} from any mirror: {tried}. {hint}"))

    def _from_mirrors(
        self, filename: str, sha256: str, size: int | None, directory: Path,
        mirrors: tuple[str, ...],
    ) -> tuple[list[tuple[str, str]], FetchResult | None]:
        """Try each mirror in turn; the verified file, or what every mirror answered."""
        part, final = directory / f"{filename}.part", directory / filename
        failures: list[tuple[str, str]] = []
        for mirror in mirrors:
            shown = redact(mirror)
            if mirror in self._down:
                failures.append((shown, f"skipped: {self._down[mirror]} for an earlier file"))
                continue
            try:
                self._from_mirror(mirror, filename, sha256, size, part)
            except MirrorFailed as failed:
                failures.append((shown, failed.reason))
                self.reporter.note(f"{shown}{filename}: {failed.reason}" + (" (no network)" if failed.offline else ""))
                if failed.down:
                    self._down[mirror] = failed.reason
                if failed.offline:
                    self._offline.add(mirror)
                continue
            partfile.write_guard(directory, os.replace, part, final)  # atomic: verified or absent
            partfile.write_guard(directory, partfile.remove, partfile.meta_path(part))
            nbytes = final.stat().st_size
            return failures, FetchResult(filename, final, "downloaded", shown, nbytes)
        partfile.discard(part)
        return failures, None

    # -- the cache ----------------------------------------------------------------------------

    def _is_verified(self, path: Path, sha256: str, size: int | None) -> bool:
        """Whether ``path`` is a verified copy; a bad one (or a link) is deleted, saying why."""
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return False
        problem = "not a regular file" if not stat.S_ISREG(mode) else verify(path, sha256, size)
        if problem is None:
            return True
        self.reporter.note(f"{path}: {problem}; deleting it and downloading again")
        partfile.write_guard(path.parent, partfile.remove, path)
        return False

    def _cached(self, path: Path) -> FetchResult:
        self.reporter.done(path.name, "cached")
        return FetchResult(path.name, path, "cached", None, path.stat().st_size)

    @contextlib.contextmanager
    def _locked(self, directory: Path, filename: str) -> Any:
        import filelock

        path = directory / f"{filename}.lock"
        if path.is_symlink():  # filelock opens with O_TRUNC: never through a planted link
            partfile.write_guard(directory, partfile.remove, path)
        lock = filelock.FileLock(str(path))
        try:
            try:
                lock.acquire(timeout=0)
            except filelock.Timeout:
                self.reporter.note(f"waiting for another process downloading {filename}")
                lock.acquire()  # the holder is bounded by its deadlines, so this ends
        except filelock.Timeout:  # pragma: no cover  (an OSError too: keep it apart)
            raise
        except OSError as err:  # the lock file cannot be created
            raise partfile.unwritable(directory, err) from err
        try:
            yield
        finally:
            lock.release()

    # -- one mirror ---------------------------------------------------------------------------

    def _from_mirror(
        self, mirror: str, filename: str, sha256: str, size: int | None, part: Path
    ) -> None:
        """Leave a verified ``part`` or raise :class:`MirrorFailed`."""
        url, shown = mirror + filename, redact(mirror)
        cap = transfer_cap(size) if size is not None else UNKNOWN_SIZE_CAP
        if partfile.part_size(part) and not same_url(part, url):
            partfile.write_guard(part.parent, partfile.remove, part)  # a leftover from elsewhere
        restarted = False
        while True:
            if url.startswith("file:"):
                resumed = False
                copy_local(url, shown, filename, part, cap, self.reporter)
            else:
                resumed = self._http.fetch(url, shown, filename, part, cap)
            problem = verify(part, sha256, size)
            if problem is None:
                return
            partfile.write_guard(part.parent, partfile.remove, part)
            if resumed and not restarted:  # old bytes may be the culprit, not the mirror
                restarted = True
                self.reporter.note(f"{shown}{filename}: {problem} after resuming; downloading it whole")
                continue
            raise MirrorFailed(problem)


def verify(path: Path, sha256: str, size: int | None = None) -> str | None:
    """None when the decompressed content of ``path`` has digest ``sha256`` (and, when given,
    ``size`` bytes, never decompressing more than that), else why not."""
    try:
        digest = sha256_of_payload(path, max_bytes=size)
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
