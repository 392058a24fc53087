"""`mlp download-data` end to end through typer's CliRunner: exit codes, output, the cache."""

from __future__ import annotations

import io
import json

import pytest
from helpers import closed_port, mlp, no_proxies

from mlp_cli.cli.download import PlainReporter, RichReporter, human_size, make_reporter
from mlp_cli.data.download import NullReporter


def test_help_explains_options_mirrors_and_examples():
    result = mlp("download-data", "--help")

    assert result.exit_code == 0
    for text in ("--dataset", "--data-dir", "--mirror", "--force", "--quiet", "--json",
                 "MLP_MNIST_MIRROR", "fashion-mnist", "Examples", "file://"):
        assert text in result.output
    assert "download-data" in mlp("--help").output


def test_download_then_rerun_from_cache(tiny_mnist, mirror_server, tmp_path):
    url = mirror_server.add("m", tiny_mnist.gz)

    first = mlp("download-data", "--data-dir", str(tmp_path), "--mirror", url)
    second = mlp("download-data", "--data-dir", str(tmp_path), "--mirror", url)

    assert first.exit_code == 0, first.output
    assert first.stdout.count("downloaded, verified") == 4
    assert "downloading train-images-idx3-ubyte.gz (" in first.stderr  # plain progress lines
    assert second.exit_code == 0
    assert second.stdout.count("cached, verified") == 4
    assert "no network request" in second.stdout
    assert len(mirror_server.hits) == 4
    assert (tmp_path / "mnist" / "train-images.npy").is_file()


def test_json_summary_on_stdout(tiny_mnist, mirror_server, tmp_path):
    url = mirror_server.add("m", tiny_mnist.gz)

    result = mlp("download-data", "--data-dir", str(tmp_path), "-m", url, "--json")

    assert result.exit_code == 0
    assert len(result.stdout.strip().splitlines()) == 1  # one line, like every --json
    summary = json.loads(result.stdout)
    assert summary["dataset"] == "mnist" and summary["requests"] == 4
    assert [f["status"] for f in summary["files"]] == ["downloaded"] * 4
    assert summary["files"][0]["bytes"] == len(tiny_mnist.gz["train-images-idx3-ubyte.gz"])
    assert summary["arrays"]["test"]["labels"].endswith("test-labels.npy")


def test_quiet_prints_nothing(tiny_mnist, mirror_server, tmp_path):
    url = mirror_server.add("m", tiny_mnist.gz)

    result = mlp("download-data", "--data-dir", str(tmp_path), "--mirror", url, "--quiet")

    assert result.exit_code == 0
    assert result.output == ""
    assert (tmp_path / "mnist" / "test-images.npy").is_file()


def test_env_mirror_is_used(tiny_mnist, mirror_server, monkeypatch, tmp_path):
    url = mirror_server.add("m", tiny_mnist.gz)
    monkeypatch.setenv("MLP_MNIST_MIRROR", f"http://127.0.0.1:{closed_port()}/x/, {url}")

    result = mlp("download-data", "--data-dir", str(tmp_path), "-q")

    assert result.exit_code == 0, result.output
    assert len(mirror_server.hits) == 4


def test_all_mirrors_down_is_one_red_line_and_exit_1(tiny_mnist, mirror_server, tmp_path):
    refused = f"http://127.0.0.1:{closed_port()}/mnist/"
    missing = mirror_server.add("missing", {})

    result = mlp("download-data", "--data-dir", str(tmp_path), "-m", refused, "-m", missing, "-q")

    assert result.exit_code == 1
    assert "Traceback" not in result.output and result.exception is None or isinstance(
        result.exception, SystemExit
    )
    error = result.stderr
    assert error.startswith("error: could not download train-images-idx3-ubyte.gz")
    assert f"{refused} -> connection failed" in error and f"{missing} -> HTTP 404" in error
    assert "--mirror file://" in error and "MLP_MNIST_MIRROR" in error
    assert not [p for p in (tmp_path / "mnist").iterdir() if p.suffix in (".gz", ".part")]


def test_unwritable_data_dir_names_it(tiny_mnist, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")

    result = mlp("download-data", "--data-dir", str(blocker / "sub"), "-m", "file:///x/")

    assert result.exit_code == 1
    assert str(blocker / "sub" / "mnist") in result.stderr


@pytest.mark.parametrize(
    "args",
    [["--mirror", "ftp://example.org/"], ["--dataset", "cifar"], ["--no-such-option"]],
)
def test_usage_errors_exit_2(args):
    result = mlp("download-data", *args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output


# -- reporters --------------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_make_reporter_picks_by_quiet_and_terminal():
    assert isinstance(make_reporter(quiet=True, stream=Terminal()), NullReporter)
    assert isinstance(make_reporter(stream=Terminal()), RichReporter)
    assert isinstance(make_reporter(stream=io.StringIO()), PlainReporter)


def test_plain_reporter_lines():
    stream = io.StringIO()
    reporter = PlainReporter(stream)

    reporter.start("a.gz", 9_630_634, "https://m/")
    reporter.advance(100)
    reporter.done("a.gz", "downloaded")
    reporter.note("all good")

    assert stream.getvalue().splitlines() == [
        "downloading a.gz (9.6 MB) from https://m/",
        "a.gz: downloaded, verified",
        "all good",
    ]


def test_rich_reporter_shows_a_finished_bar(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    stream = Terminal()
    reporter = RichReporter(stream)

    reporter.start("a.gz", 2000, "https://m/")
    reporter.advance(1000)
    reporter.start("a.gz", 2000, "https://m/")  # a restart resets the bar
    reporter.advance(2000)
    reporter.done("a.gz", "downloaded")
    reporter.done("b.gz", "cached")
    reporter.start("c.gz", None, "https://m/")
    reporter.done("c.gz", "failed")

    out = stream.getvalue()
    assert "a.gz from https://m/" in out
    assert "a.gz" in out and "2.0/2.0 kB" in out
    assert "b.gz: cached, verified" in out and "c.gz failed" in out
    assert "\x1b[3" not in out  # NO_COLOR: no colour codes


def test_with_a_summary_to_follow_cached_files_are_not_announced_twice(tiny_mnist, mirror_server, tmp_path):
    stream = Terminal()
    reporter = RichReporter(stream)
    reporter.summary_follows = True
    reporter.done("b.gz", "cached")
    reporter.start("c.gz", 10, "https://m/")
    reporter.done("c.gz", "downloaded")
    assert "b.gz" not in stream.getvalue() and "c.gz from https://m/" in stream.getvalue()

    from mlp_cli.data.cache import ensure_dataset

    url = mirror_server.add("m", tiny_mnist.gz)
    cache = tmp_path / "cache"
    ensure_dataset("mnist", data_dir=cache, mirrors=(url,), reporter=PlainReporter(io.StringIO()))
    quiet_terminal = Terminal()
    reporter = RichReporter(quiet_terminal)
    reporter.summary_follows = True
    ensure_dataset("mnist", data_dir=cache, mirrors=(url,), reporter=reporter)
    assert quiet_terminal.getvalue() == ""  # the summary table says it all
    told = io.StringIO()
    ensure_dataset("mnist", data_dir=cache, mirrors=(url,), reporter=PlainReporter(told))
    assert "no network request made" in told.getvalue()


def test_human_size():
    assert [human_size(n) for n in (None, 999, 28_902, 47_040_016, 3 * 10**12)] == [
        "?", "999 B", "28.9 kB", "47.0 MB", "3000.0 GB",
    ]


def test_no_network_is_one_fast_line_naming_the_offline_fix(tmp_path, monkeypatch):
    no_proxies(monkeypatch)  # the tests' dead proxy would answer before any name lookup
    monkeypatch.setenv("MLP_MNIST_MIRROR", "http://nonexistent.invalid/mnist/")

    result = mlp("download-data", "--data-dir", str(tmp_path), "-m", "http://nonexistent.invalid/other/", "-q")

    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: could not download train-images-idx3-ubyte.gz: no network reachable")
    assert "--mirror file://" in line and "MLP_MNIST_MIRROR" in line


def test_each_stream_says_its_part_once_progress_on_stderr_the_result_on_stdout(tiny_mnist, mirror_server,
                                                                                 tmp_path):
    url = mirror_server.add("m", tiny_mnist.gz)

    first = mlp("download-data", "--data-dir", str(tmp_path), "--mirror", url)
    again = mlp("download-data", "--data-dir", str(tmp_path), "--mirror", url)

    assert first.exit_code == 0 and again.exit_code == 0, first.output
    assert first.stderr.count("downloading ") == 4 and "verified" not in first.stderr  # the progress only
    assert first.stdout.count("downloaded, verified") == 4  # the result once, in the table
    assert again.stderr == "" and again.stdout.count("cached, verified") == 4
    log = first.stdout + first.stderr  # as `mlp download-data > log 2>&1` keeps them
    assert all(log.count(name) == 2 for name in tiny_mnist.gz)  # its download line and its table row
