"""Fetching against a real loopback HTTP server that fails in every way a mirror can."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers import RecordingReporter, TinyDataset, closed_port, no_proxies, sha256

from mlp_cli.data.cache import ensure_dataset, load_dataset
from mlp_cli.data.download import Downloader, RetryPolicy
from mlp_cli.errors import DownloadError

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"


def leftovers(directory: Path) -> list[str]:
    """Files that must never survive a fetch: partial downloads and temporary files."""
    return sorted(p.name for p in directory.iterdir() if ".part" in p.name or ".tmp" in p.name)


def assert_loads_tiny(tiny: TinyDataset, data_dir: Path) -> None:
    for split in ("train", "test"):
        images, labels = load_dataset("mnist", split, data_dir=data_dir, download=False)
        np.testing.assert_array_equal(images, tiny.images[split])
        np.testing.assert_array_equal(labels, tiny.labels[split])


def test_downloads_verifies_and_caches(tiny_mnist, mirror_server, reporter, fast_policy, tmp_path):
    url = mirror_server.add("m", tiny_mnist.gz)

    report = ensure_dataset("mnist", tmp_path, [url], reporter=reporter, policy=fast_policy)

    assert [f.status for f in report.files] == ["downloaded"] * 4
    assert all(f.mirror == url for f in report.files)
    assert report.requests == 4 and len(mirror_server.hits) == 4
    assert all(h.headers["Accept-Encoding"] == "identity" for h in mirror_server.hits)
    assert report.rebuilt == ("train", "test")
    for f in report.files:
        assert f.path.read_bytes() == tiny_mnist.gz[f.filename]
    assert leftovers(report.directory) == []
    assert reporter.statuses() == dict.fromkeys(tiny_mnist.files, "downloaded")
    assert_loads_tiny(tiny_mnist, tmp_path)


def test_second_run_sends_no_request(tiny_mnist, mirror_server, reporter, fast_policy, tmp_path):
    url = mirror_server.add("m", tiny_mnist.gz)
    ensure_dataset("mnist", tmp_path, [url], policy=fast_policy)
    hits_before = len(mirror_server.hits)

    report = ensure_dataset("mnist", tmp_path, [url], reporter=reporter, policy=fast_policy)

    assert len(mirror_server.hits) == hits_before
    assert report.requests == 0
    assert report.cached == tiny_mnist.files and report.downloaded == ()
    assert report.rebuilt == ()
    assert "no network request" in reporter.notes


@pytest.mark.parametrize("status", [401, 403, 404, 410])
def test_client_errors_move_to_next_mirror_at_once(
    tiny_mnist, mirror_server, reporter, fast_policy, tmp_path, status
):
    bad = mirror_server.add("bad", tiny_mnist.gz, mode="status", status=status)
    good = mirror_server.add("good", tiny_mnist.gz)

    report = ensure_dataset("mnist", tmp_path, [bad, good], reporter=reporter, policy=fast_policy)

    assert all(f.mirror == good for f in report.files)
    for filename in tiny_mnist.files:  # no retry against a mirror that refused
        assert len(mirror_server.requests_for("bad", filename)) == 1
    assert f"HTTP {status}" in reporter.notes
    assert_loads_tiny(tiny_mnist, tmp_path)


def test_server_errors_are_retried_then_next_mirror(
    tiny_mnist, mirror_server, reporter, fast_policy, tmp_path
):
    flaky = mirror_server.add("flaky", tiny_mnist.gz, mode="status", status=500)
    good = mirror_server.add("good", tiny_mnist.gz)

    report = ensure_dataset("mnist", tmp_path, [flaky, good], reporter=reporter, policy=fast_policy)

    assert all(f.mirror == good for f in report.files)
    assert len(mirror_server.requests_for("flaky", TRAIN_IMAGES)) == fast_policy.tries
    assert "retrying" in reporter.notes and "HTTP 500" in reporter.notes
    # a mirror that is down is not asked again for the other three files
    assert len(mirror_server.requests_for("flaky")) == fast_policy.tries


def test_rate_limit_is_retried_on_the_same_mirror(tiny_mnist, mirror_server, fast_policy, tmp_path):
    url = mirror_server.add("m", tiny_mnist.gz, mode="status", status=429, fail_times=1)

    report = ensure_dataset("mnist", tmp_path, [url], policy=fast_policy)

    assert [f.status for f in report.files] == ["downloaded"] * 4
    assert [h.status for h in mirror_server.requests_for("m", TRAIN_IMAGES)] == [429, 200]


def test_truncated_body_is_resumed_with_range(tiny_mnist, mirror_server, reporter, fast_policy,
                                              tmp_path):
    url = mirror_server.add("m", tiny_mnist.gz, mode="truncate")

    ensure_dataset("mnist", tmp_path, [url], reporter=reporter, policy=fast_policy)

    first, second = mirror_server.requests_for("m", TRAIN_IMAGES)
    size = len(tiny_mnist.gz[TRAIN_IMAGES])
    assert "Range" not in first.headers and first.sent == size // 2
    assert second.headers["Range"] == f"bytes={size // 2}-"
    assert second.headers["If-Range"] == '"tiny-v1"'
    assert second.status == 206 and first.sent + second.sent == size  # nothing fetched twice
    assert_loads_tiny(tiny_mnist, tmp_path)


def test_server_ignoring_range_restarts_from_zero(tiny_mnist, mirror_server, reporter, fast_policy,
                                                  tmp_path):
    url = mirror_server.add("m", tiny_mnist.gz, mode="truncate-ignore-range")

    report = ensure_dataset("mnist", tmp_path, [url], reporter=reporter, policy=fast_policy)

    first, second = mirror_server.requests_for("m", TRAIN_IMAGES)
    assert "Range" in second.headers and second.status == 200
    assert "ignored the Range" in reporter.notes
    assert report.files[0].path.read_bytes() == tiny_mnist.gz[TRAIN_IMAGES]  # not half + whole
    assert_loads_tiny(tiny_mnist, tmp_path)


def test_wrong_content_is_deleted_and_next_mirror_used(
    tiny_mnist, mirror_server, reporter, fast_policy, tmp_path
):
    wrong = {name: gzip.compress(b"\x00\x00\x08\x03 not mnist", mtime=0) for name in tiny_mnist.gz}
    bad = mirror_server.add("bad", wrong)
    good = mirror_server.add("good", tiny_mnist.gz)

    report = ensure_dataset("mnist", tmp_path, [bad, good], reporter=reporter, policy=fast_policy)

    assert all(f.mirror == good for f in report.files)
    assert len(mirror_server.requests_for("bad", TRAIN_IMAGES)) == 1
    assert "checksum mismatch" in reporter.notes
    assert leftovers(report.directory) == []
    assert_loads_tiny(tiny_mnist, tmp_path)


def test_wrong_content_everywhere_leaves_nothing(tiny_mnist, mirror_server, fast_policy, tmp_path):
    bad = mirror_server.add("bad", {n: b"\x1f\x8b garbage" for n in tiny_mnist.gz})

    with pytest.raises(DownloadError, match="not a valid gzip file"):
        ensure_dataset("mnist", tmp_path, [bad], policy=fast_policy)

    directory = tmp_path / "mnist"
    assert not (directory / TRAIN_IMAGES).exists()
    assert leftovers(directory) == []


@pytest.mark.parametrize("mode", ["gzip-encoded", "gzip-labelled"])
def test_content_encoding_gzip_is_handled(tiny_mnist, mirror_server, fast_policy, tmp_path, mode):
    url = mirror_server.add("m", tiny_mnist.gz, mode=mode)

    report = ensure_dataset("mnist", tmp_path, [url], policy=fast_policy)

    assert [f.status for f in report.files] == ["downloaded"] * 4
    assert_loads_tiny(tiny_mnist, tmp_path)


def test_all_mirrors_down_names_each_and_leaves_nothing(
    tiny_mnist, mirror_server, fast_policy, tmp_path
):
    refused = f"http://127.0.0.1:{closed_port()}/mnist/"
    broken = mirror_server.add("broken", tiny_mnist.gz, mode="status", status=503)
    missing = mirror_server.add("missing", {})

    with pytest.raises(DownloadError) as caught:
        ensure_dataset("mnist", tmp_path, [refused, broken, missing], policy=fast_policy)

    message = str(caught.value)
    assert f"{refused} -> connection failed" in message
    assert f"{broken} -> HTTP 503" in message
    assert f"{missing} -> HTTP 404" in message
    assert "--mirror file://" in message and "MLP_MNIST_MIRROR" in message
    assert leftovers(tmp_path / "mnist") == []
    assert not any(p.suffix == ".gz" for p in (tmp_path / "mnist").iterdir())


def test_concurrent_threads_share_one_set_of_requests(tiny_mnist, mirror_server, fast_policy,
                                                      tmp_path):
    url = mirror_server.add("m", tiny_mnist.gz, delay=0.1)
    reports, errors = [], []

    def worker() -> None:
        try:
            reports.append(ensure_dataset("mnist", tmp_path, [url], policy=fast_policy))
        except Exception as err:  # surfaced by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == [] and len(reports) == 3
    for filename in tiny_mnist.files:
        assert len(mirror_server.requests_for("m", filename)) == 1
        statuses = sorted(r.files[tiny_mnist.files.index(filename)].status for r in reports)
        assert statuses == ["cached", "cached", "downloaded"]
    assert_loads_tiny(tiny_mnist, tmp_path)


def test_concurrent_processes_share_one_request(tiny_mnist, mirror_server, tmp_path):
    url = mirror_server.add("m", tiny_mnist.gz, delay=0.2)
    digest = tiny_mnist.spec.checksums[TRAIN_IMAGES]
    script = (  # each process imports, says it is ready, and starts when all three are
        "import json, os, sys, time; from pathlib import Path\n"
        "from mlp_cli.data.download import Downloader\n"
        "gate = Path(sys.argv[3]) / 'gate'; gate.mkdir(exist_ok=True)\n"
        "(gate / str(os.getpid())).touch()\n"
        "while len(list(gate.iterdir())) < 3: time.sleep(0.01)\n"
        "r = Downloader().fetch(sys.argv[1], sys.argv[2], Path(sys.argv[3]), (sys.argv[4],))\n"
        "print(json.dumps(r.status))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, TRAIN_IMAGES, digest, str(tmp_path), url],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(3)
    ]
    outputs = [proc.communicate(timeout=60) for proc in procs]

    assert [proc.returncode for proc in procs] == [0, 0, 0], outputs
    assert sorted(json.loads(out) for out, _ in outputs) == ["cached", "cached", "downloaded"]
    assert len(mirror_server.requests_for("m", TRAIN_IMAGES)) == 1
    assert (tmp_path / TRAIN_IMAGES).read_bytes() == tiny_mnist.gz[TRAIN_IMAGES]


def test_partial_file_from_an_earlier_run_is_resumed(tiny_mnist, mirror_server, tmp_path):
    url = mirror_server.add("m", tiny_mnist.gz)
    body = tiny_mnist.gz[TRAIN_IMAGES]
    (tmp_path / f"{TRAIN_IMAGES}.part").write_bytes(body[:100])
    (tmp_path / f"{TRAIN_IMAGES}.part.json").write_text(
        json.dumps({"url": url + TRAIN_IMAGES, "validator": '"tiny-v1"'})
    )

    result = Downloader().fetch(TRAIN_IMAGES, sha256(gzip.decompress(body)), tmp_path, (url,))

    (hit,) = mirror_server.requests_for("m", TRAIN_IMAGES)
    assert hit.headers["Range"] == "bytes=100-" and hit.sent == len(body) - 100
    assert result.status == "downloaded" and result.path.read_bytes() == body
    assert leftovers(tmp_path) == []


def test_partial_file_from_another_url_is_discarded(tiny_mnist, mirror_server, tmp_path):
    url = mirror_server.add("m", tiny_mnist.gz)
    body = tiny_mnist.gz[TRAIN_IMAGES]
    (tmp_path / f"{TRAIN_IMAGES}.part").write_bytes(b"from somewhere else")

    Downloader().fetch(TRAIN_IMAGES, sha256(gzip.decompress(body)), tmp_path, (url,))

    (hit,) = mirror_server.requests_for("m", TRAIN_IMAGES)
    assert "Range" not in hit.headers
    assert (tmp_path / TRAIN_IMAGES).read_bytes() == body


def test_bad_resumed_bytes_trigger_one_whole_download(tiny_mnist, mirror_server, reporter,
                                                      tmp_path):
    url = mirror_server.add("m", tiny_mnist.gz)
    body = tiny_mnist.gz[TRAIN_IMAGES]
    (tmp_path / f"{TRAIN_IMAGES}.part").write_bytes(b"\xff" * 100)  # same URL, wrong bytes
    (tmp_path / f"{TRAIN_IMAGES}.part.json").write_text(json.dumps({"url": url + TRAIN_IMAGES}))

    result = Downloader(reporter).fetch(
        TRAIN_IMAGES, sha256(gzip.decompress(body)), tmp_path, (url,)
    )

    first, second = mirror_server.requests_for("m", TRAIN_IMAGES)
    assert "Range" in first.headers and "Range" not in second.headers
    assert "after resuming" in reporter.notes
    assert result.path.read_bytes() == body


def test_corrupt_cached_file_is_replaced(tiny_mnist, mirror_server, reporter, fast_policy,
                                         tmp_path):
    url = mirror_server.add("m", tiny_mnist.gz)
    ensure_dataset("mnist", tmp_path, [url], policy=fast_policy)
    cached = tmp_path / "mnist" / TRAIN_IMAGES
    cached.write_bytes(gzip.compress(b"tampered"))

    report = ensure_dataset("mnist", tmp_path, [url], reporter=reporter, policy=fast_policy)

    assert report.files[0].status == "downloaded" and report.downloaded == (TRAIN_IMAGES,)
    assert "checksum mismatch" in reporter.notes
    assert cached.read_bytes() == tiny_mnist.gz[TRAIN_IMAGES]


def test_force_downloads_again(tiny_mnist, mirror_server, fast_policy, tmp_path):
    url = mirror_server.add("m", tiny_mnist.gz)
    ensure_dataset("mnist", tmp_path, [url], policy=fast_policy)

    report = ensure_dataset("mnist", tmp_path, [url], force=True, policy=fast_policy)

    assert report.downloaded == tiny_mnist.files and report.requests == 4
    assert len(mirror_server.hits) == 8
    assert report.rebuilt == ("train", "test")


def test_file_mirror_falls_through_when_file_missing(tiny_mnist, mirror_server, reporter,
                                                     fast_policy, tmp_path):
    local = tmp_path / "local"
    local.mkdir()
    (local / TRAIN_IMAGES).write_bytes(tiny_mnist.gz[TRAIN_IMAGES])  # only one of four
    url = mirror_server.add("m", tiny_mnist.gz)

    report = ensure_dataset("mnist", tmp_path / "cache", [str(local), url], reporter=reporter,
                            policy=fast_policy)

    assert report.files[0].mirror == local.as_uri() + "/"
    assert [f.mirror for f in report.files[1:]] == [url] * 3
    assert len(mirror_server.requests_for("m", TRAIN_IMAGES)) == 0
    assert "not found" in reporter.notes


def test_reporter_sees_sizes_and_every_byte(tiny_mnist, mirror_server, tmp_path):
    url = mirror_server.add("m", tiny_mnist.gz)
    reporter = RecordingReporter()
    body = tiny_mnist.gz[TRAIN_IMAGES]

    Downloader(reporter).fetch(TRAIN_IMAGES, sha256(gzip.decompress(body)), tmp_path, (url,))

    assert reporter.events[0] == ("start", TRAIN_IMAGES, str(len(body)), url)
    assert sum(int(e[1]) for e in reporter.events if e[0] == "advance") == len(body)
    assert reporter.events[-1] == ("done", TRAIN_IMAGES, "downloaded")


def test_retry_policy_backs_off_exponentially_with_a_cap():
    policy = RetryPolicy(backoff=0.5, max_delay=3.0)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert policy.delay(1, retry_after=2.0) == 2.0
    assert policy.delay(1, retry_after=120.0) == 3.0


def test_data_layer_imports_no_requests_until_it_downloads():
    code = "import sys, mlp_cli.data.cache; print('requests' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_no_network_fails_each_mirror_at_once_and_names_the_local_copy(reporter, tmp_path, monkeypatch):
    """A host that does not resolve (.invalid never does) is not asked again: one request per mirror,
    and the file's error says there is no network and how to use a local copy."""
    no_proxies(monkeypatch)  # the tests' dead proxy would answer before any name lookup
    unresolvable = ("http://nonexistent.invalid/mnist/", "http://other.nonexistent.invalid/mnist/")
    downloader = Downloader(reporter, RetryPolicy(tries=4, backoff=0.0))

    with pytest.raises(DownloadError) as caught, downloader:
        downloader.fetch("x.gz", "0" * 64, tmp_path, unresolvable, hint="pass --mirror or set MLP_MNIST_MIRROR")

    assert downloader.requests_made == 2  # one attempt per mirror, no retries
    message = str(caught.value)
    assert message.startswith("could not download x.gz: no network reachable (")
    assert all(mirror in message for mirror in unresolvable) and "MLP_MNIST_MIRROR" in message
    assert "retrying" not in reporter.notes and reporter.notes.count("(no network)") == 2


def test_a_proxy_that_refuses_fails_each_mirror_at_once_naming_the_proxy(reporter, tmp_path):
    """The tests' own dead proxy (conftest): the mirror is not the problem, and asking again within
    seconds mends no proxy; one request per mirror, the error names the proxy, the next file skips them."""
    mirrors = ("http://mirror.example/mnist/", "https://other.example/mnist/")
    downloader = Downloader(reporter, RetryPolicy(tries=4, backoff=0.0))

    with pytest.raises(DownloadError) as caught, downloader:
        downloader.fetch("x.gz", "0" * 64, tmp_path, mirrors)
    assert downloader.requests_made == 2 and "retrying" not in reporter.notes
    assert str(caught.value).count("-> proxy connection failed") == 2

    with pytest.raises(DownloadError, match="skipped: proxy connection failed"), downloader:
        downloader.fetch("y.gz", "0" * 64, tmp_path, mirrors)
    assert downloader.requests_made == 2
