"""Fault injection for downloads: every way a mirror, a process or a disk can fail.

Each case ends with either a verified file or one clear error, and never with an unverified
file in the cache (checked by hashing what is left). Mirrors are a real HTTP server on
127.0.0.1 (``fault_server.FaultServer``); killed downloads and concurrent runs are real
``python -m mlp_cli download-data`` processes fetching the real MNIST files from it.
"""

from __future__ import annotations

import builtins
import errno
import gzip
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fault_disk import FullDisk, read_only
from fault_server import FaultServer
from helpers import TinyDataset, mlp

from mlp_cli.data import cache as data_module
from mlp_cli.data import partfile
from mlp_cli.data import registry as datasets
from mlp_cli.data.cache import ensure_dataset, load_dataset
from mlp_cli.data.download import RetryPolicy
from mlp_cli.data.idx import sha256_of_payload
from mlp_cli.errors import DownloadError

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
# No waiting between retries; a read timeout short enough that a stalled server costs 0.25 s.
# Small chunks, so that what arrived before a stall is on disk (urllib3 drops a partial chunk).
POLICY = RetryPolicy(tries=3, backoff=0.0, max_delay=0.0, timeout=(1.0, 0.25), chunk_size=512)


@pytest.fixture
def fault_server():
    server = FaultServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def real_gz(offline_mnist_dir: Path) -> dict[str, bytes]:
    """The four real MNIST .gz files, as a mirror serves them."""
    return {name: (offline_mnist_dir / name).read_bytes() for name in datasets.DATASETS["mnist"].files}


def untrusted(directory: Path, spec: datasets.DatasetSpec) -> list[str]:
    """Files in a dataset directory that a later run could wrongly trust, or that are left over.

    Registry files must verify against their checksum, arrays must load; partial downloads and
    temporary files must be gone. Lock files are fine (they hold nothing).
    """
    bad = []
    for path in sorted(directory.iterdir()) if directory.exists() else []:
        if path.name.endswith(".lock"):
            continue
        if path.name in spec.checksums:
            if sha256_of_payload(path) != spec.checksums[path.name]:
                bad.append(f"{path.name} (does not verify)")
        elif path.suffix == ".npy":
            np.load(path, allow_pickle=False)  # raises if truncated
        else:
            bad.append(f"{path.name} (left over)")
    return bad


def assert_complete(tiny: TinyDataset, cache: Path) -> None:
    """Every file present and verified, both splits loadable and equal to what was served."""
    assert untrusted(cache / "mnist", tiny.spec) == []
    for split in ("train", "test"):
        images, labels = load_dataset("mnist", split, data_dir=cache, download=False)
        np.testing.assert_array_equal(images, tiny.images[split])
        np.testing.assert_array_equal(labels, tiny.labels[split])


# -- a mirror that fails once, then works --------------------------------------------------------


@pytest.mark.parametrize(
    ("actions", "then"),
    [
        (("status:500",), "fresh"),
        (("status:503",), "fresh"),
        (("reset",), "either"),  # bytes sent before the reset may or may not have been read
        (("stall",), "resume"),  # half the body, then silence beyond the read timeout
        (("stall-headers",), "fresh"),  # silence before the status line
        (("truncate",), "resume"),  # Content-Length promises more than is sent
        (("truncate", "ignore-range"), "restart"),  # asked to resume, the server sends it all
    ],
    ids=lambda v: "+".join(v) if isinstance(v, tuple) else v,
)
def test_a_transient_fault_is_retried_on_the_same_mirror(
    tiny_mnist, fault_server, reporter, tmp_path, actions, then
):
    url = fault_server.add("m", tiny_mnist.gz, *actions)

    report = ensure_dataset("mnist", tmp_path, [url], reporter=reporter, policy=POLICY)

    assert [f.status for f in report.files] == ["downloaded"] * 4
    first, second = fault_server.requests_for("m", TRAIN_IMAGES)
    assert (first.action, second.action) == (actions[0], actions[1] if len(actions) > 1 else "ok")
    assert "retrying" in reporter.notes
    if then == "fresh":
        assert "Range" not in second.headers and second.status == 200
    elif then == "resume":  # from what reached the disk: all that was sent, but a partial chunk
        offset = int(re.fullmatch(r"bytes=(\d+)-", second.headers["Range"]).group(1))
        assert first.sent - POLICY.chunk_size < offset <= first.sent and second.status == 206
        assert offset + second.sent == len(tiny_mnist.gz[TRAIN_IMAGES])
    elif then == "restart":
        assert "Range" in second.headers and second.status == 200
        assert "ignored the Range request" in reporter.notes
    assert_complete(tiny_mnist, tmp_path)


# -- a mirror that always fails ------------------------------------------------------------------

WRONG_CONTENT = "wrong-gzip"  # valid gzip of the wrong bytes: served as the files themselves

PERSISTENT = [
    ("status:403", "HTTP 403 Forbidden"),
    ("status:404", "HTTP 404 Not Found"),
    ("status:503", r"HTTP 503 Service Unavailable \(gave up after 3 tries\)"),
    ("reset", "connection (broken during the transfer|failed: Connection reset by peer)"),
    ("stall", r"read timed out \(gave up after \d+ tries\)"),  # each resume is progress
    ("truncate", "connection broken during the transfer"),
    ("cut-unsized", r"not a valid gzip file \(Compressed file ended"),  # no length to check against
    (WRONG_CONTENT, "checksum mismatch"),
    ("html", "got a web page instead of the file"),
    ("empty", r"empty file \(0 bytes\)"),
    ("redirect-loop", r"redirect loop \(more than 30 redirects\)"),
]


@pytest.mark.parametrize(("action", "reason"), PERSISTENT, ids=[a for a, _ in PERSISTENT])
def test_a_broken_mirror_is_one_clear_error_then_the_next_mirror_serves(
    tiny_mnist, fault_server, mirror_server, tmp_path, action, reason
):
    if action == WRONG_CONTENT:
        wrong = {name: gzip.compress(b"\x00\x00\x08\x03" + bytes(64), mtime=0) for name in tiny_mnist.gz}
        bad = fault_server.add("bad", wrong)
    else:
        bad = fault_server.add("bad", tiny_mnist.gz, then=action)
    good = mirror_server.add("good", tiny_mnist.gz)
    directory = tmp_path / "mnist"

    with pytest.raises(DownloadError) as caught:
        ensure_dataset("mnist", tmp_path, [bad], policy=POLICY)
    message = str(caught.value)
    assert re.search(f"could not download {TRAIN_IMAGES} from any mirror: {re.escape(bad)} -> {reason}",
                     message), message
    assert "\n" not in message and "--mirror file://" in message
    assert untrusted(directory, tiny_mnist.spec) == []
    assert not [p for p in directory.iterdir() if p.suffix in (".gz", ".npy")]  # nothing kept

    report = ensure_dataset("mnist", tmp_path, [bad, good], policy=POLICY)  # the next run

    assert all(f.mirror == good for f in report.files)
    assert_complete(tiny_mnist, tmp_path)


@pytest.mark.parametrize(("action", "reason"), [
    ("html", "got a web page instead of the file"),
    ("redirect-loop", "redirect loop"),
    ("status:404", "HTTP 404"),
])
def test_cli_reports_a_broken_mirror_in_one_line_with_exit_1(
    tiny_mnist, fault_server, tmp_path, action, reason
):
    url = fault_server.add("bad", tiny_mnist.gz, then=action)

    result = mlp("download-data", "--data-dir", str(tmp_path), "--mirror", url, "-q")

    assert result.exit_code == 1
    assert result.stdout == "" and "Traceback" not in result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: could not download {TRAIN_IMAGES}") and f"{url} -> {reason}" in line
    assert untrusted(tmp_path / "mnist", tiny_mnist.spec) == []


# -- processes: killed halfway, and three at once ------------------------------------------------


def download_process(cache: Path, url: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mlp_cli", "download-data", "--data-dir", str(cache), "--mirror", url,
            *extra]


def test_sigkill_halfway_leaves_nothing_trusted_and_the_next_run_resumes(
    real_gz, fault_server, tmp_path
):
    url = fault_server.add("slow", real_gz, throttle=0.01)  # about 6 MB/s
    directory = tmp_path / "mnist"
    part = directory / f"{TRAIN_IMAGES}.part"
    total = len(real_gz[TRAIN_IMAGES])
    proc = subprocess.Popen(download_process(tmp_path, url, "-q"), stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (part.exists() and part.stat().st_size >= total // 4):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)

    assert proc.returncode == -signal.SIGKILL
    kept = part.stat().st_size
    assert total // 4 <= kept < total  # killed mid-body
    spec = datasets.DATASETS["mnist"]
    assert not [p.name for p in directory.iterdir() if p.name in spec.checksums or p.suffix == ".npy"]

    fault_server.release()  # full speed from now on
    rerun = subprocess.run(download_process(tmp_path, url, "--json"), capture_output=True, text=True,
                           timeout=120)

    assert rerun.returncode == 0, rerun.stderr
    assert [f["status"] for f in json.loads(rerun.stdout)["files"]] == ["downloaded"] * 4
    resumed = fault_server.requests_for("slow", TRAIN_IMAGES)[1]
    assert resumed.headers["Range"] == f"bytes={kept}-" and resumed.status == 206
    assert resumed.sent == total - kept  # nothing fetched twice
    assert untrusted(directory, spec) == []


def test_three_concurrent_download_data_processes_share_one_set_of_requests(
    real_gz, fault_server, tmp_path
):
    url = fault_server.add("m", real_gz, throttle=0.005)  # slow enough that all three overlap
    procs = [
        subprocess.Popen(download_process(tmp_path, url, "--json"), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]

    assert [proc.returncode for proc in procs] == [0, 0, 0], [err for _, err in outputs]
    reports = [json.loads(out) for out, _ in outputs]
    for index, filename in enumerate(real_gz):
        assert len(fault_server.requests_for("m", filename)) == 1
        statuses = sorted(r["files"][index]["status"] for r in reports)
        assert statuses == ["cached", "cached", "downloaded"]
    assert untrusted(tmp_path / "mnist", datasets.DATASETS["mnist"]) == []


# -- the disk: read-only, full, or a file where the directory should be --------------------------


@pytest.mark.parametrize("layout", ["no dataset directory", "empty dataset directory"])
def test_read_only_cache_is_one_line_naming_the_directory(tiny_mnist, mirror_server, monkeypatch,
                                                          tmp_path, layout):
    url = mirror_server.add("m", tiny_mnist.gz)
    cache = tmp_path / "cache"
    (cache / "mnist").mkdir(parents=True) if layout == "empty dataset directory" else cache.mkdir()
    read_only(monkeypatch, cache)

    result = mlp("download-data", "--data-dir", str(cache), "--mirror", url, "-q")

    assert result.exit_code == 1 and "Traceback" not in result.output
    (line,) = result.stderr.strip().splitlines()
    assert f"data directory {cache / 'mnist'}: Read-only file system" in line
    assert "choose a writable one with --data-dir or MLP_DATA_DIR" in line
    assert mirror_server.hits == []  # found out before any request
    assert sorted(p.name for p in cache.rglob("*")) == (["mnist"] if layout != "no dataset directory" else [])


def test_read_only_cache_that_is_complete_is_used_as_is(tiny_mnist, mirror_server, monkeypatch, tmp_path):
    url = mirror_server.add("m", tiny_mnist.gz)
    ensure_dataset("mnist", tmp_path, [url])
    before = sorted(p.name for p in (tmp_path / "mnist").iterdir())
    with monkeypatch.context() as patch:
        read_only(patch, tmp_path)
        result = mlp("download-data", "--data-dir", str(tmp_path), "--mirror", url, "--json")
        images, _ = load_dataset("mnist", "test", data_dir=tmp_path)

    assert result.exit_code == 0, result.output
    assert [f["status"] for f in json.loads(result.stdout)["files"]] == ["cached"] * 4
    assert len(mirror_server.hits) == 4  # the first download only
    np.testing.assert_array_equal(images, tiny_mnist.images["test"])
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == before
    assert_complete(tiny_mnist, tmp_path)


def test_disk_full_during_the_body_is_one_line_and_the_next_run_finishes(
    tiny_mnist, mirror_server, monkeypatch, tmp_path
):
    url = mirror_server.add("m", tiny_mnist.gz)
    real_open = builtins.open

    def full_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        return FullDisk(handle, room=100) if any(c in mode for c in "wa") else handle

    with monkeypatch.context() as patch:
        patch.setattr(partfile, "open", full_open, raising=False)  # the .part writes
        result = mlp("download-data", "--data-dir", str(tmp_path), "--mirror", url, "-q")

    assert result.exit_code == 1 and "Traceback" not in result.output
    (line,) = result.stderr.strip().splitlines()
    assert f"data directory {tmp_path / 'mnist'}: No space left on device" in line
    assert not (tmp_path / "mnist" / TRAIN_IMAGES).exists()  # only a .part, which is never trusted

    report = ensure_dataset("mnist", tmp_path, [url])
    assert report.files[0].status == "downloaded"
    assert_complete(tiny_mnist, tmp_path)


def test_disk_full_while_writing_the_arrays_leaves_no_array(tiny_mnist, mirror_server, monkeypatch,
                                                            tmp_path):
    url = mirror_server.add("m", tiny_mnist.gz)
    real_save = np.save

    def full_save(handle, array, *args, **kwargs):
        real_save(handle, array[: len(array) // 2], *args, **kwargs)  # half of it reaches the disk
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as patch:
        patch.setattr(data_module.np, "save", full_save)
        result = mlp("download-data", "--data-dir", str(tmp_path), "--mirror", url, "-q")

    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"data directory {tmp_path / 'mnist'}: No space left on device" in result.stderr
    names = sorted(p.name for p in (tmp_path / "mnist").iterdir())
    assert not [n for n in names if n.endswith((".npy", ".tmp"))]
    assert untrusted(tmp_path / "mnist", tiny_mnist.spec) == []  # the verified .gz files stay

    hits = len(mirror_server.hits)
    assert_complete(tiny_mnist, tmp_path)  # arrays rebuilt from the cached files
    assert len(mirror_server.hits) == hits


@pytest.mark.parametrize("how", ["--data-dir", "MLP_DATA_DIR"])
def test_a_file_where_the_cache_directory_should_be(tiny_mnist, monkeypatch, tmp_path, how):
    blocker = tmp_path / "cache"
    blocker.write_text("not a directory")
    if how == "MLP_DATA_DIR":
        monkeypatch.setenv("MLP_DATA_DIR", str(blocker))
        args = []
    else:
        args = ["--data-dir", str(blocker)]

    result = mlp("download-data", *args, "--mirror", "file:///nowhere/", "-q")

    assert result.exit_code == 1 and "Traceback" not in result.output
    (line,) = result.stderr.strip().splitlines()
    assert f"cannot create the data directory {blocker / 'mnist'}: Not a directory" in line
    assert blocker.read_text() == "not a directory"
