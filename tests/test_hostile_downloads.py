"""Hostile mirrors: every transfer bounded in bytes, time and disk, nothing followed through a
link, no password shown. Each download runs in a child process under memory, file-size and
time limits (tests/limits.py) against loopback mirrors (tests/hostile_server.py), fetching the
real MNIST test labels (10,008 bytes decompressed) with the real registry."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest
from hostile_server import HostileServer, double_gzip
from limits import GiB, MiB, mlp_command, python_command, run_limited

from mlp_cli.data.registry import DATASETS, transfer_cap
from mlp_cli.errors import DownloadError

LABELS = "t10k-labels-idx1-ubyte.gz"
SPEC = DATASETS["mnist"]
CAP = transfer_cap(SPEC.payload_size(LABELS))

# The child: fetch one file with short stall windows and deadline, progress as plain lines.
FETCH = """
import sys
from pathlib import Path
from mlp_cli.cli.download import PlainReporter
from mlp_cli.data.download import Downloader, RetryPolicy
from mlp_cli.data.registry import DATASETS
from mlp_cli.errors import MlpError
name, directory, window, deadline, *mirrors = sys.argv[1:]
spec = DATASETS["mnist"]
policy = RetryPolicy(tries=2, backoff=0.0, max_delay=0.0, timeout=(2.0, 2.0),
                     stall_window=float(window), stall_bytes=64, deadline=float(deadline))
try:
    with Downloader(PlainReporter(), policy) as downloader:
        result = downloader.fetch(name, spec.checksums[name], Path(directory), tuple(mirrors),
                                  size=spec.payload_size(name))
except MlpError as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(1)
print(result.status, result.mirror)
"""


@pytest.fixture(scope="module")
def labels_gz(offline_mnist_dir: Path) -> bytes:
    return (offline_mnist_dir / LABELS).read_bytes()


@pytest.fixture
def server(labels_gz: bytes):
    served = HostileServer({LABELS: labels_gz}, bomb=double_gzip(256 * MiB))
    yield served
    served.close()


def fetch(cache: Path, *mirrors: str, window: float = 1.0, deadline: float = 30.0, seconds: float = 30.0):
    return run_limited(python_command(FETCH, LABELS, cache, window, deadline, *mirrors),
                       memory=2 * GiB, file_size=64 * MiB, seconds=seconds)


def assert_verified(cache: Path) -> None:
    data = gzip.decompress((cache / LABELS).read_bytes())
    import hashlib

    assert hashlib.sha256(data).hexdigest() == SPEC.checksums[LABELS]


def test_a_mirror_streaming_forever_is_cut_at_the_cap_and_the_next_mirror_serves(server, tmp_path):
    outcome = fetch(tmp_path, server.url("forever"), server.url("ok"))

    assert outcome.code == 0, outcome.output
    assert f"sent more than {CAP} bytes" in outcome.stderr
    assert outcome.seconds < 15 and outcome.peak_mib < 300
    assert_verified(tmp_path)
    assert not (tmp_path / f"{LABELS}.part").exists()


def test_a_content_length_beyond_the_cap_is_refused_before_the_body(server, tmp_path):
    outcome = fetch(tmp_path, server.url("huge"))

    assert outcome.code == 1
    assert f"announces {10**12} bytes, more than the {CAP} the file can be" in outcome.stderr
    assert outcome.seconds < 10
    assert not list(tmp_path.glob("*.part"))


def test_a_mirror_sending_a_byte_at_a_time_is_a_stall_that_moves_on_and_frees_the_lock(server, tmp_path):
    import filelock

    outcome = fetch(tmp_path, server.url("trickle"), server.url("ok"), window=1.0)

    assert outcome.code == 0, outcome.output
    assert "stalled:" in outcome.stderr and outcome.seconds < 15
    assert_verified(tmp_path)
    filelock.FileLock(str(tmp_path / f"{LABELS}.lock")).acquire(timeout=0)  # nobody holds it


def test_a_slow_mirror_past_the_deadline_is_given_up_and_the_lock_released(server, tmp_path):
    import filelock

    server.slow_rate = 2000  # 14 KB at 2 KB/s: 7 s, above the stall rule (64 B/s)
    outcome = fetch(tmp_path, server.url("slow"), window=0.5, deadline=2.0)

    assert outcome.code == 1 and "not done within the 2 s allowed per file" in outcome.stderr
    assert 1.5 < outcome.seconds < 10
    filelock.FileLock(str(tmp_path / f"{LABELS}.lock")).acquire(timeout=0)
    assert not list(tmp_path.glob("*.part"))


@pytest.mark.parametrize("mode", ["dripheaders", "dripchunks"])
def test_a_slowloris_in_the_headers_or_the_chunk_framing_is_cut_at_the_deadline(server, tmp_path, mode):
    # a byte every 0.2 s: inside the 2 s read timeout and (headers) before any body the stall rule
    # counts; only the watchdog's cut at the deadline ends it, and the next mirror serves the file
    import filelock

    outcome = fetch(tmp_path, server.url(mode), server.url("ok"), window=0.5, deadline=2.0)

    assert outcome.code == 0, outcome.output
    assert "not done within the 2 s allowed per file" in outcome.stderr and outcome.seconds < 12
    assert_verified(tmp_path)
    filelock.FileLock(str(tmp_path / f"{LABELS}.lock")).acquire(timeout=0)


def test_a_double_gzip_bomb_is_decompressed_no_further_than_the_known_size(server, tmp_path):
    assert len(server.bomb) < 64 * 1024  # a few KB on the wire

    outcome = fetch(tmp_path, server.url("bomb"), server.url("ok"))

    assert outcome.code == 0, outcome.output
    assert f"decompresses to more than the {SPEC.payload_size(LABELS)} bytes" in outcome.stderr
    assert outcome.seconds < 10 and outcome.peak_mib < 300
    assert_verified(tmp_path)


def test_trailing_bytes_beyond_the_registry_size_are_refused(server, tmp_path, labels_gz):
    server.files[LABELS] = gzip.compress(gzip.decompress(labels_gz) + b"\x00", mtime=0)

    outcome = fetch(tmp_path, server.url("ok"))

    assert outcome.code == 1 and "decompresses to more than the 10008 bytes" in outcome.stderr
    assert not (tmp_path / LABELS).exists()


@pytest.mark.parametrize("planted", [f"{LABELS}.part", f"{LABELS}.part.json", f"{LABELS}.lock", LABELS,
                                     "resumable"])
def test_a_link_planted_in_a_shared_cache_is_never_followed(server, tmp_path, planted):
    cache, victim = tmp_path / "cache", tmp_path / "victim.txt"
    cache.mkdir()
    victim.write_text("precious")
    if planted == "resumable":  # a note saying the .part came from this very URL: it would be appended to
        (cache / f"{LABELS}.part.json").write_text(json.dumps({"url": server.url("ok") + LABELS, "validator": ""}))
        planted = f"{LABELS}.part"
    (cache / planted).symlink_to(victim)

    outcome = fetch(cache, server.url("ok"))

    assert outcome.code == 0, outcome.output
    assert victim.read_text() == "precious"
    assert_verified(cache)
    assert not (cache / LABELS).is_symlink()


def test_mirror_credentials_are_never_shown(server, tmp_path, offline_mnist_url):
    secret = "user:hunter2"
    failing = run_limited(mlp_command("download-data", "--data-dir", tmp_path, "--mirror",
                                      server.url("missing", secret)), seconds=60)
    assert failing.code == 1 and "hunter2" not in failing.output
    assert "http://***@127.0.0.1" in failing.stderr.splitlines()[0]  # progress
    assert "http://***@127.0.0.1" in failing.stderr.splitlines()[-1]  # the error

    served = run_limited(mlp_command("download-data", "--data-dir", tmp_path / "b", "--json",
                                     "--mirror", server.url("ok", secret), "--mirror", offline_mnist_url),
                         seconds=120)
    assert served.code == 0, served.output
    assert "hunter2" not in served.output
    report = json.loads(served.stdout)
    labels = next(f for f in report["files"] if f["file"] == LABELS)
    assert labels["mirror"] == server.url("ok", "***")
    assert server.hits["ok"] >= 1  # the credentials still reached the server
    for path in (tmp_path / "b").rglob("*"):
        assert b"hunter2" not in path.read_bytes()[:1 << 20] if path.is_file() else True


def test_partial_files_are_created_exclusively_and_never_through_links(tmp_path):
    from mlp_cli.data import partfile

    part = tmp_path / "x.part"
    victim = tmp_path / "victim"
    victim.write_text("precious")
    part.symlink_to(victim)
    with pytest.raises(DownloadError):  # O_NOFOLLOW: appending through the link is refused
        partfile.open_part(part, append=True)
    with partfile.open_part(part, append=False) as handle:  # the link removed, a new file made
        handle.write(b"new")
    assert victim.read_text() == "precious" and part.read_bytes() == b"new"
    assert not part.is_symlink()
    assert os.stat(part).st_nlink == 1


def test_credentials_in_a_refused_mirror_are_not_shown(tmp_path):
    outcome = run_limited(mlp_command("download-data", "--data-dir", tmp_path, "--mirror", "ftp://user:hunter2@host/"),
                          seconds=60)

    line = outcome.error_line()
    assert outcome.code == 2 and "mirror 'ftp://***@host/': unsupported scheme 'ftp'" in line
    assert "hunter2" not in outcome.output


def test_a_fifo_in_a_local_mirror_is_refused_not_waited_on(tmp_path):
    """Opening a FIFO waits for a writer (with the cache's lock held): the mirror is opened without
    blocking, and the FIFO is one line naming what it is."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    os.mkfifo(mirror / LABELS)

    outcome = fetch(tmp_path / "cache", mirror.as_uri() + "/", seconds=20)

    assert outcome.code == 1 and not outcome.killed, outcome.output
    assert "not a regular file" in outcome.stderr


def test_a_dataset_folder_replaced_by_a_link_is_refused_and_its_target_untouched(tmp_path, offline_mnist_url):
    elsewhere, data_dir = tmp_path / "elsewhere", tmp_path / "data"
    elsewhere.mkdir()
    data_dir.mkdir()
    (data_dir / "mnist").symlink_to(elsewhere)

    outcome = run_limited(mlp_command("download-data", "--data-dir", data_dir, "--mirror", offline_mnist_url),
                          seconds=60)

    line = outcome.error_line()
    assert outcome.code == 2 and f"the dataset directory {data_dir / 'mnist'} is a symbolic link" in line
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("password", ["p@ss", "pa/ss"])
def test_a_password_holding_an_at_or_a_slash_is_never_shown(tmp_path, password):
    outcome = run_limited(mlp_command("download-data", "--data-dir", tmp_path, "--json", "--mirror",
                                      f"http://user:{password}@127.0.0.1:9/"), seconds=60)
    assert outcome.code != 0 and password not in outcome.output and "ss@" not in outcome.output, outcome.output
    assert "http://***@127.0.0.1:9/" in outcome.output


def test_a_mirror_that_is_not_a_url_is_one_line(tmp_path):
    outcome = run_limited(mlp_command("download-data", "--data-dir", tmp_path, "--mirror", "http://user:s3cr3t@[::1/"),
                          seconds=60)
    line = outcome.error_line()
    assert outcome.code == 2 and "is not a URL" in line and "s3cr3t" not in outcome.output
