"""Shared fixtures: an isolated cache and environment, a loopback HTTP mirror, tiny and real data.

No test touches the user's cache or the internet: every test gets its own ``MLP_DATA_DIR``,
the mirror variables are cleared, and proxies point at a closed port so that a request meant
for a real host fails at once (loopback is exempt). Real MNIST comes from the first directory
holding its four ``.gz`` files among: ``$MLP_TEST_MNIST``, ``../shared/data/mnist`` (relative to
the repository root), and the user's own cache as ``make train`` fills it (``$MLP_DATA_DIR`` or
the per-user cache directory). Each file is verified by its SHA-256 when the tests copy it.
"""

from __future__ import annotations

import dataclasses
import gzip
import http.server
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import (
    MIRROR_ENV_VARS,
    TEST_MNIST_ENV,
    RecordingReporter,
    TinyDataset,
    closed_port,
    find_mnist_copy,
    idx_images,
    idx_labels,
    mnist_copies,
    sha256,
)
from loopback import LoopbackServer

from mlp_cli.data import download
from mlp_cli.data import registry as datasets
from mlp_cli.data.download import RetryPolicy

# Retries without waiting and short timeouts: failure paths stay fast.
FAST_POLICY = RetryPolicy(tries=3, backoff=0.0, max_delay=0.0, timeout=(2.0, 2.0))


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Own cache dir per test, no mirror variables, and no way out to the internet."""
    monkeypatch.setenv("MLP_DATA_DIR", str(tmp_path_factory.mktemp("mlp-cache")))
    for name in MIRROR_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    dead = f"http://127.0.0.1:{closed_port()}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                 "all_proxy"):
        monkeypatch.setenv(name, dead)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    monkeypatch.setattr(download, "DEFAULT_POLICY", FAST_POLICY)  # the CLI's retries, fast


# -- real MNIST -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def offline_mnist_dir() -> Path:
    """A local MNIST copy; skipped when there is none, but a failure when $CI is set."""
    found = find_mnist_copy()
    if found is None:
        looked = ", ".join(str(d) for d in mnist_copies())
        reason = (f"no MNIST copy found (looked in {looked}); run `make train` once, or set "
                  f"{TEST_MNIST_ENV} to a directory holding the four .gz files")
        if os.environ.get("CI"):
            pytest.fail(reason + "; CI must provide it")
        pytest.skip(reason)
    return found


@pytest.fixture(scope="session")
def offline_mnist_url(offline_mnist_dir: Path) -> str:
    """``file://.../shared/data/mnist/``: a mirror that needs no network."""
    return offline_mnist_dir.as_uri() + "/"


@pytest.fixture(scope="session")
def mnist_data_dir(tmp_path_factory: pytest.TempPathFactory, offline_mnist_url: str) -> Path:
    """A data dir holding verified MNIST, built once per session from the offline copy.

    Pass it explicitly: ``load_dataset("mnist", "train", data_dir=mnist_data_dir)`` (each
    test's own ``MLP_DATA_DIR`` points elsewhere). Treat it as read-only.
    """
    from mlp_cli.data.cache import ensure_dataset

    directory = tmp_path_factory.mktemp("mnist-data")
    ensure_dataset("mnist", data_dir=directory, mirrors=(offline_mnist_url,))
    return directory


# -- tiny IDX files ---------------------------------------------------------------------------


@pytest.fixture
def tiny_mnist(monkeypatch: pytest.MonkeyPatch) -> TinyDataset:
    """Registers 5 train and 3 test examples as ``mnist`` (checksums included), no defaults
    mirrors (tests name theirs)."""
    rng = np.random.default_rng(0)
    real = datasets.DATASETS["mnist"]
    gz: dict[str, bytes] = {}
    checksums: dict[str, str] = {}
    images: dict[str, np.ndarray] = {}
    labels: dict[str, np.ndarray] = {}
    splits = {}
    for split_name, count in (("train", 5), ("test", 3)):
        split = dataclasses.replace(real.splits[split_name], count=count)
        splits[split_name] = split
        images[split_name] = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels[split_name] = rng.integers(0, 10, count, dtype=np.uint8)
        for filename, payload in (
            (split.images, idx_images(images[split_name])),
            (split.labels, idx_labels(labels[split_name])),
        ):
            gz[filename] = gzip.compress(payload, mtime=0)
            checksums[filename] = sha256(payload)
    spec = real._replace(checksums=checksums, splits=splits, default_mirrors=())
    monkeypatch.setitem(datasets.DATASETS, "mnist", spec)
    return TinyDataset(gz, images, labels, spec)


# -- a loopback HTTP mirror -------------------------------------------------------------------


@dataclass
class Route:
    """How one mirror (a path prefix on the server) behaves."""

    files: dict[str, bytes]
    mode: str = "ok"  # ok | status | truncate | truncate-ignore-range | gzip-encoded | gzip-labelled
    status: int = 200  # for mode "status"
    fail_times: int | None = None  # mode "status": fail this many times, then behave "ok"
    delay: float = 0.0  # seconds before answering
    served: dict[str, int] = field(default_factory=dict)  # file -> requests answered


@dataclass
class Hit:
    mirror: str
    filename: str
    headers: dict[str, str]
    status: int = 0
    sent: int = 0  # body bytes written


class MirrorServer(LoopbackServer):
    """A threading HTTP server on 127.0.0.1 whose paths ``/<mirror>/<file>`` misbehave on
    purpose; it records every request in ``hits``."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: list[Hit] = []
        self.lock = threading.Lock()
        super().__init__(_make_handler(self))

    def add(self, name: str, files: dict[str, bytes], mode: str = "ok", **options: Any) -> str:
        """Serve ``files`` under ``/<name>/``; returns the mirror URL."""
        self.routes[name] = Route(dict(files), mode, **options)
        return f"{self.base}{name}/"

    def requests_for(self, mirror: str, filename: str | None = None) -> list[Hit]:
        with self.lock:
            return [
                h for h in self.hits
                if h.mirror == mirror and (filename is None or h.filename == filename)
            ]


def _make_handler(server: MirrorServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

        def do_GET(self) -> None:  # noqa: N802  (the http.server name)
            _, mirror, filename = (self.path.split("/", 2) + ["", ""])[:3]
            hit = Hit(mirror, filename, {k: v for k, v in self.headers.items()})
            with server.lock:
                server.hits.append(hit)
            route = server.routes.get(mirror)
            if route is None or filename not in route.files:
                self._answer(hit, 404)
                return
            if route.delay:
                time.sleep(route.delay)
            with server.lock:
                count = route.served.get(filename, 0)
                route.served[filename] = count + 1
            self._serve(route, filename, count, hit)

        def _serve(self, route: Route, filename: str, count: int, hit: Hit) -> None:
            body = route.files[filename]
            mode = route.mode
            if mode == "status" and (route.fail_times is None or count < route.fail_times):
                self._answer(hit, route.status)
                return
            if mode in ("truncate", "truncate-ignore-range") and count == 0:
                self._answer(hit, 200, body, cut=len(body) // 2)
                return
            if mode == "gzip-encoded":  # compressed again on the wire
                self._answer(hit, 200, gzip.compress(body, mtime=0), encoding="gzip")
                return
            if mode == "gzip-labelled":  # the .gz as is, labelled gzip (as some buckets do)
                self._answer(hit, 200, body, encoding="gzip")
                return
            wanted = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            if wanted and mode != "truncate-ignore-range":
                start = int(wanted.group(1))
                if start >= len(body):
                    self._answer(hit, 416)
                    return
                self._answer(hit, 206, body[start:], content_range=(start, len(body)))
                return
            self._answer(hit, 200, body)

        def _answer(
            self, hit: Hit, status: int, body: bytes = b"", *, cut: int | None = None,
            encoding: str | None = None, content_range: tuple[int, int] | None = None,
        ) -> None:
            hit.status = status
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", '"tiny-v1"')
            if encoding:
                self.send_header("Content-Encoding", encoding)
            if content_range:
                start, total = content_range
                self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
            self.end_headers()
            payload = body if cut is None else body[:cut]
            self.wfile.write(payload)
            hit.sent = len(payload)
            if cut is not None:
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

    return Handler


@pytest.fixture
def mirror_server() -> Iterator[MirrorServer]:
    server = MirrorServer()
    yield server
    server.close()


@pytest.fixture
def reporter() -> RecordingReporter:
    return RecordingReporter()


@pytest.fixture
def fast_policy() -> RetryPolicy:
    return FAST_POLICY
