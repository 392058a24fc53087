"""TensorBoard logging, read back with TensorBoard's own ``EventAccumulator``.

Every scalar is compared as an exact (step, value) list with metrics.jsonl (TensorBoard's reader
drops a record whose CRC is wrong without a word, so counting events would not do), through
fresh, interrupted-and-continued, branched and overwritten runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from helpers import Losses, logged_config, synthetic_training_data, train_new, train_resumed

pytest.importorskip("tensorboard")  # the "test" extra; CI installs it (make setup)
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402

from mlp_cli.training.inputs import TrainingData  # noqa: E402
from mlp_cli.training.loggers import events  # noqa: E402
from mlp_cli.training.loggers.base import BATCH_TAG, EPOCH_TAGS  # noqa: E402
from mlp_cli.training.loggers.tensorboard import event_files  # noqa: E402
from mlp_cli.training.metrics import read_metrics  # noqa: E402

STEPS_PER_EPOCH = 8  # 500 examples in batches of 64


@pytest.fixture(scope="module")
def data() -> TrainingData:
    return synthetic_training_data()


def read_back(run_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def scalars(accumulator: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    if tag not in accumulator.Tags()["scalars"]:
        return []
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def f32(value: float) -> float:
    return float(np.float32(value))  # TensorBoard's scalars are float32


def expected_from_metrics(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    rows = read_metrics(run_dir)
    return {tag: [(row["step"], f32(row[key])) for row in rows if row.get(key) is not None]
            for key, tag in EPOCH_TAGS.items()}


def assert_epochs_match_metrics(run_dir: Path) -> EventAccumulator:
    accumulator = read_back(run_dir)
    for tag, expected in expected_from_metrics(run_dir).items():
        assert scalars(accumulator, tag) == expected, tag
    return accumulator


def batch_losses(losses: dict[int, float], every: int = 3) -> list[tuple[int, float]]:
    return [(step, f32(loss)) for step, loss in sorted(losses.items()) if step % every == 0]


def test_a_run_logs_exactly_what_metrics_jsonl_holds(tmp_path: Path, data: TrainingData) -> None:
    seen = Losses()
    train_new(tmp_path / "run", data, seen)
    accumulator = assert_epochs_match_metrics(tmp_path / "run")
    assert len(read_metrics(tmp_path / "run")) == 5 and len(expected_from_metrics(tmp_path / "run")["dev/loss"]) == 5
    assert scalars(accumulator, BATCH_TAG) == batch_losses(seen.losses)
    assert len(scalars(accumulator, BATCH_TAG)) == 5 * STEPS_PER_EPOCH // 3
    config_text = accumulator.Tensors("config")[0].tensor_proto.string_val[0].decode()
    assert "hidden: 16" in config_text and "log_every: 3" in config_text
    content = accumulator.PluginTagToContent("hparams")[events.HPARAMS_TAG]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["model.hidden"].number_value == 16 and hparams["optimizer.name"].string_value == "sgd"


def test_each_epoch_is_on_disk_when_it_ends(tmp_path: Path, data: TrainingData) -> None:
    """Written live: after each epoch, a reader already finds that epoch's row."""

    class ReadEachEpoch(Losses):
        found: list[int]

        def on_step(self, epoch: int, batch: int, steps_per_epoch: int, loss: float) -> None:
            super().on_step(epoch, batch, steps_per_epoch, loss)
            if batch == 1 and epoch > 1:  # the previous epoch has ended and been flushed
                self.found.append(len(scalars(read_back(tmp_path / "run"), "train/loss")))

    reader = ReadEachEpoch()
    reader.found = []
    train_new(tmp_path / "run", data, reader)
    assert reader.found == [1, 2, 3, 4]


@pytest.mark.parametrize("cut", [2 * STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH + 5], ids=["at-epoch-end", "mid-epoch"])
def test_an_interrupted_and_continued_run_has_one_monotone_stream(tmp_path: Path, data: TrainingData,
                                                                     cut: int) -> None:
    full = Losses()
    train_new(tmp_path / "full", data, full)
    first, second = Losses(stop_after=cut), Losses()
    train_new(tmp_path / "run", data, first)
    train_resumed(tmp_path / "run" / "last.npz", data, second)
    accumulator = assert_epochs_match_metrics(tmp_path / "run")
    assert scalars(accumulator, BATCH_TAG) == batch_losses({**first.losses, **second.losses})
    assert scalars(accumulator, BATCH_TAG) == batch_losses(full.losses)  # the resumed run is the same run
    for tag in EPOCH_TAGS.values():
        if tag != "examples_per_second":
            assert scalars(accumulator, tag) == scalars(read_back(tmp_path / "full"), tag)
    steps = [step for step, _ in scalars(accumulator, BATCH_TAG)]
    assert steps == sorted(set(steps))


def test_a_killed_run_leaves_no_duplicate_or_broken_event_behind(tmp_path: Path, data: TrainingData) -> None:
    """kill -9 after last.npz was saved: the dead process had logged steps the resumed run redoes,
    and its last record was cut in half. The continued stream still holds each step once."""
    train_new(tmp_path / "run", data, Losses(stop_after=2 * STEPS_PER_EPOCH))
    late = [events.scalar_event(0.0, step, BATCH_TAG, 99.0) for step in (18, 21)]
    late.append(events.scalar_event(0.0, 3 * STEPS_PER_EPOCH, "train/loss", 99.0))
    stale = event_files(tmp_path / "run")[-1]
    with open(stale, "ab") as handle:
        handle.write(b"".join(events.frame(e) for e in late) + events.frame(late[0])[:-7])
    second = Losses()
    train_resumed(tmp_path / "run" / "last.npz", data, second)
    accumulator = assert_epochs_match_metrics(tmp_path / "run")
    logged = scalars(accumulator, BATCH_TAG)
    assert 99.0 not in [value for _, value in logged]
    assert [step for step, _ in logged] == list(range(3, 5 * STEPS_PER_EPOCH + 1, 3))


def test_a_rewrite_killed_half_way_is_read_right_by_the_next(tmp_path: Path, data: TrainingData) -> None:
    """Killed after the history file replaced the first old file, before the others were removed:
    the same events are then in two files, and the next start keeps each once."""
    train_new(tmp_path / "run", data, Losses(stop_after=2 * STEPS_PER_EPOCH + 5))
    history = event_files(tmp_path / "run")[-1]
    (tmp_path / "run" / (history.name + "-copy")).write_bytes(history.read_bytes())
    train_resumed(tmp_path / "run" / "last.npz", data)
    accumulator = assert_epochs_match_metrics(tmp_path / "run")
    assert [step for step, _ in scalars(accumulator, BATCH_TAG)] == list(range(3, 5 * STEPS_PER_EPOCH + 1, 3))


def test_a_branch_holds_the_history_it_copied_and_the_source_is_untouched(tmp_path: Path,
                                                                          data: TrainingData) -> None:
    train_new(tmp_path / "run", data, **{"run.checkpoint_every": 2})
    before = {p.name: p.read_bytes() for p in event_files(tmp_path / "run")}
    train_resumed(tmp_path / "run" / "epoch-002.npz", data, out=tmp_path / "branch",
                  **{"optimizer.lr": 0.5})
    assert {p.name: p.read_bytes() for p in event_files(tmp_path / "run")} == before
    accumulator = assert_epochs_match_metrics(tmp_path / "branch")
    source = read_back(tmp_path / "run")
    assert scalars(accumulator, "train/loss")[:2] == scalars(source, "train/loss")[:2]
    copied = [(step, loss) for step, loss in scalars(source, BATCH_TAG) if step <= 16]
    assert scalars(accumulator, BATCH_TAG)[:len(copied)] == copied and len(copied) == 5
    assert scalars(accumulator, "train/loss")[2:] != scalars(source, "train/loss")[2:]
    assert [s for s, _ in scalars(accumulator, "lr")] == [8, 16, 24, 32, 40]
    assert [v for _, v in scalars(accumulator, "lr")] == [1.0, 1.0, 0.5, 0.5, 0.5]
    change = accumulator.Tensors("resume/changes")
    assert [event.step for event in change] == [16]
    assert "optimizer.lr | 1.0 | 0.5" in change[0].tensor_proto.string_val[0].decode()


def test_changes_made_inside_an_epoch_are_logged_once_at_their_step(tmp_path: Path, data: TrainingData) -> None:
    train_new(tmp_path / "run", data, Losses(stop_after=21))
    train_resumed(tmp_path / "run" / "last.npz", data, Losses(stop_after=30), **{"optimizer.lr": 0.5})
    train_resumed(tmp_path / "run" / "last.npz", data)
    accumulator = assert_epochs_match_metrics(tmp_path / "run")
    assert [event.step for event in accumulator.Tensors("resume/changes")] == [21]


def test_logging_asked_for_at_a_resume_starts_with_the_history_and_the_config(tmp_path: Path,
                                                                              data: TrainingData) -> None:
    train_new(tmp_path / "run", data, Losses(stop_after=16), **{"run.log": []})
    train_resumed(tmp_path / "run" / "last.npz", data, **{"run.log": ["tensorboard"]})
    accumulator = assert_epochs_match_metrics(tmp_path / "run")
    assert [step for step, _ in scalars(accumulator, "train/loss")] == [8, 16, 24, 32, 40]
    assert min(step for step, _ in scalars(accumulator, BATCH_TAG)) == 18  # none before logging began
    assert [event.step for event in accumulator.Tensors("config")] == [0]
    [change] = accumulator.Tensors("resume/changes")
    assert "run.log | [] | ['tensorboard']" in change.tensor_proto.string_val[0].decode()


def test_overwrite_drops_the_discarded_epochs(tmp_path: Path, data: TrainingData) -> None:
    train_new(tmp_path / "run", data, **{"run.checkpoint_every": 2})
    train_resumed(tmp_path / "run" / "epoch-002.npz", data, overwrite=True, **{"train.epochs": 3})
    accumulator = assert_epochs_match_metrics(tmp_path / "run")
    assert [step for step, _ in scalars(accumulator, "train/loss")] == [8, 16, 24]
    assert max(step for step, _ in scalars(accumulator, BATCH_TAG)) == 24


def test_a_fresh_overwrite_and_a_run_without_logging_leave_no_old_events(tmp_path: Path,
                                                                          data: TrainingData) -> None:
    train_new(tmp_path / "run", data)
    train_new(tmp_path / "run", data, **{"train.epochs": 2})
    assert [s for s, _ in scalars(read_back(tmp_path / "run"), "train/loss")] == [8, 16]
    train_new(tmp_path / "run", data, **{"run.log": []})
    assert event_files(tmp_path / "run") == []


def test_a_full_disk_takes_the_half_written_record_back(tmp_path: Path, data: TrainingData,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from mlp_cli.training.loggers.base import RunStart
    from mlp_cli.training.loggers.tensorboard import TensorBoardLogger

    logger = TensorBoardLogger()
    (tmp_path / "run").mkdir()
    logger.begin(RunStart(logged_config(tmp_path / "run"), tmp_path / "run"))
    logger.on_step(1, 3, STEPS_PER_EPOCH, 0.5)
    real = logger._handle

    class Full:
        def tell(self) -> int:
            return real.tell()

        def write(self, data: bytes) -> int:
            real.write(data[: len(data) // 2])
            raise OSError(28, "No space left on device")

    logger._handle = Full()
    with pytest.raises(OSError, match="No space"):
        logger.on_step(1, 6, STEPS_PER_EPOCH, 0.25)
    logger._handle = real
    logger.on_step(2, 1, STEPS_PER_EPOCH, 0.125)  # step 9
    logger.close()
    assert scalars(read_back(tmp_path / "run"), BATCH_TAG) == [(3, 0.5), (9, 0.125)]


def test_mlp_log_backfills_a_run_trained_without_logging(tmp_path: Path, data: TrainingData) -> None:
    from helpers import mlp

    train_new(tmp_path / "run", data, **{"run.log": [], "train.epochs": 3})
    assert event_files(tmp_path / "run") == []
    done = mlp("log", "tensorboard", tmp_path / "run")
    assert done.exit_code == 0, done.output
    assert "3 epochs logged to tensorboard" in done.stdout
    first = assert_epochs_match_metrics(tmp_path / "run")
    assert "hidden: 16" in first.Tensors("config")[0].tensor_proto.string_val[0].decode()
    assert mlp("log", "tensorboard", tmp_path / "run").exit_code == 0  # again: nothing twice
    again = assert_epochs_match_metrics(tmp_path / "run")
    assert len(again.Tensors("config")) == 1 and len(event_files(tmp_path / "run")) == 1


def test_mlp_log_refuses_what_is_not_a_finished_run(tmp_path: Path, data: TrainingData) -> None:
    from helpers import mlp

    from mlp_cli.training.run_dir import RunLock

    done = mlp("log", "tensorboard", tmp_path)
    assert done.exit_code == 2 and "has no metrics.jsonl" in done.stderr and event_files(tmp_path) == []
    assert mlp("log", "tensorbord", tmp_path).exit_code == 2
    train_new(tmp_path / "run", data, **{"run.log": [], "train.epochs": 1})
    with RunLock(tmp_path / "run"):  # being trained
        done = mlp("log", "tensorboard", tmp_path / "run")
    assert done.exit_code == 2 and "is being written by" in done.stderr and event_files(tmp_path / "run") == []
    os.mkfifo(tmp_path / "run" / "events.out.tfevents.1.host.1.mlp")  # hostile: must not hang the reader
    done = mlp("log", "tensorboard", tmp_path / "run")
    assert done.exit_code == 1 and done.stderr.strip().endswith("is not a regular file"), done.output


# --------------------------------------------------------------------------------------------
# Event files as input: malformed, huge or hostile ones are one-line errors, in bounded time


def test_a_varint_is_read_in_at_most_ten_bytes() -> None:
    assert events._read_varint(events._varint(2**64 - 1), 0) == (2**64 - 1, 10)
    for data, reason in [(b"\xff" * 1_000_000 + b"\x01", "longer than 10 bytes"),
                         (b"\xff" * 9 + b"\x7f", "beyond 64 bits"), (b"\xff" * 3, "truncated")]:
        with pytest.raises(events.MalformedEvent, match=reason):
            events._read_varint(data, 0)


def test_the_numpy_crc_is_the_bytewise_crc() -> None:
    assert events.crc32c(b"123456789") == 0xE3069283  # the check value of CRC-32C
    rng = np.random.default_rng(0)
    for size in [0, 1, 63, 64, 65, 8191, 8192, 8193, 70_001, 1 << 18]:
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        assert events.crc32c_chunked(data) == events.crc32c_bytewise(data), size


def _run_with_record(tmp_path: Path, data: TrainingData, payload: bytes) -> Path:
    train_new(tmp_path / "run", data, **{"train.epochs": 2})
    with open(event_files(tmp_path / "run")[0], "ab") as handle:
        handle.write(events.frame(payload))  # a valid CRC around bytes that are no Event
    return tmp_path / "run"


@pytest.mark.parametrize("payload", [events._key(1, 0) + b"\xff" * 12 + b"\x01", bytes([0x0B]) + b"abc", b"\x08\xff",
                                     events._key(2, 0) + b"\xff" * 100_000 + b"\x01", events._bytes(5, b"\x0a\x05ab")],
                         ids=["overflow", "wire-type-3", "truncated", "long-varint", "field-past-end"])
def test_a_malformed_event_is_one_line_naming_the_file(tmp_path: Path, data: TrainingData, payload: bytes) -> None:
    from helpers import mlp

    from mlp_cli.errors import MlpError

    run = _run_with_record(tmp_path, data, payload)
    [path] = event_files(run)
    done = mlp("log", "tensorboard", run)
    assert done.exit_code == 1 and "not a TensorBoard event" in done.stderr and path.name in done.stderr, done.output
    with pytest.raises(MlpError, match="not a TensorBoard event"):
        train_resumed(run / "last.npz", data, **{"train.epochs": 3})


def test_event_files_too_large_are_refused_before_any_is_read(tmp_path: Path, data: TrainingData,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from helpers import mlp

    from mlp_cli.training.loggers import tensorboard

    train_new(tmp_path / "run", data, **{"train.epochs": 2})
    os.truncate(event_files(tmp_path / "run")[0], 2 << 30)  # sparse: 2 GB on paper
    monkeypatch.setattr(tensorboard, "read_record_bytes", lambda *a, **k: pytest.fail("read"))
    done = mlp("log", "tensorboard", tmp_path / "run")
    assert done.exit_code == 1 and "2048 MiB, more than the 48 MiB" in done.stderr, done.output


def test_a_huge_record_is_checked_quickly(tmp_path: Path, data: TrainingData) -> None:
    import time

    run = _run_with_record(tmp_path, data, events._bytes(7, b"a" * (32 << 20)))  # a field no reader uses
    start = time.perf_counter()
    assert len(tensorboard_read(run)) > 0
    assert time.perf_counter() - start < 2  # byte by byte in Python: about 4 s; in numpy: 0.3 s


def tensorboard_read(run: Path) -> list[events.Event]:
    from mlp_cli.training.loggers.tensorboard import read_events

    return read_events(event_files(run))


def test_the_backfilled_config_is_validated(tmp_path: Path, data: TrainingData) -> None:
    from helpers import mlp

    train_new(tmp_path / "run", data, **{"run.log": [], "train.epochs": 1})
    saved = tmp_path / "run" / "config.yaml"
    saved.write_text('data:\n  x: "\\ud800"\n')
    done = mlp("log", "tensorboard", tmp_path / "run")
    assert done.exit_code == 2 and "unknown key 'data.x'" in done.stderr and event_files(tmp_path / "run") == []
    (tmp_path / "secret.yaml").write_text("data:\n  password: hunter2\n")
    saved.unlink()
    saved.symlink_to(tmp_path / "secret.yaml")
    done = mlp("log", "tensorboard", tmp_path / "run")
    assert done.exit_code != 0 and "symbolic link" in done.stderr and event_files(tmp_path / "run") == []
    saved.unlink()
    saved.write_text("data:\n  limit: " + "9" * 400 + "\n")  # past any dataset, and a double
    done = mlp("log", "tensorboard", tmp_path / "run")
    assert done.exit_code == 2 and "data.limit" in done.stderr and event_files(tmp_path / "run") == []


def test_foreign_names_in_the_run_are_refused_or_left_alone(tmp_path: Path, data: TrainingData) -> None:
    from helpers import mlp

    from mlp_cli.errors import OutputPathError
    from mlp_cli.training.loggers.tensorboard import new_file_name, remove_event_files

    run = tmp_path / "run"
    train_new(run, data, **{"train.epochs": 1})
    (run / ".tensorboard-history.999.tmp").mkdir()  # not a half-written file of ours: left alone
    (run / f".tensorboard-history.{os.getpid()}.tmp").mkdir()  # where this process writes: refused
    done = mlp("log", "tensorboard", run)
    assert done.exit_code == 2 and "is in the way" in done.stderr, done.output
    (run / f".tensorboard-history.{os.getpid()}.tmp").rmdir()
    assert mlp("log", "tensorboard", run).exit_code == 0 and (run / ".tensorboard-history.999.tmp").is_dir()
    for odd in ["0²³", "0" + "9" * 225]:
        (run / f"events.out.tfevents.{odd}.x").touch()
        assert new_file_name(run) > max(p.name for p in event_files(run))
        (run / f"events.out.tfevents.{odd}.x").unlink()
    (run / "events.out.tfevents.99999999999.x").touch()  # TensorBoard would read it after a new one
    with pytest.raises(OutputPathError, match="99999999999"):
        new_file_name(run)
    (run / "events.out.tfevents.99999999999.x").rename(run / "events.out.tfevents.123.evil")
    (run / "events.out.tfevents.124.evil").mkdir()
    with pytest.raises(OutputPathError, match="not a regular file"):
        remove_event_files(run)
    assert (run / "events.out.tfevents.124.evil").is_dir()


def test_batch_losses_stop_where_a_resume_could_no_longer_read_the_events(tmp_path: Path, data: TrainingData,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """What the tool writes it can read back: with the cap shrunk to the history of a few steps, the
    batch losses stop there with a note, the epochs stay whole, and a resume reads them back."""
    from mlp_cli.training import session as sessions
    from mlp_cli.training.loggers import tensorboard
    from mlp_cli.training.loggers.tensorboard import EPOCH_BYTES, HEADER_BYTES

    room = 20 * len(events.frame(events.scalar_event(0.0, 40, BATCH_TAG, 0.5)))  # about 20 batch losses
    monkeypatch.setattr(tensorboard, "MAX_EVENTS_BYTES", 5 * EPOCH_BYTES + HEADER_BYTES + room)
    run = tmp_path / "run"
    config = logged_config(run, **{"run.log": ["tensorboard"], "run.log_every": 1, "train.epochs": 5})
    with sessions.new_session(config, None, overwrite=True) as session:
        sessions.run_session(session, data, observer=Losses())
    [note] = session.log_problems
    assert note.startswith("tensorboard: the batch losses from step ") and "run.log_every" in note
    dropped = int(note.split("from step ")[1].split()[0])
    accumulator = assert_epochs_match_metrics(run)
    assert [step for step, _ in scalars(accumulator, BATCH_TAG)] == list(range(1, dropped))
    assert 15 <= dropped <= 25 and sum(p.stat().st_size for p in event_files(run)) <= tensorboard.MAX_EVENTS_BYTES
    train_resumed(run / "last.npz", data, **{"train.epochs": 6})  # reads the history back, under the cap
    assert [s for s, _ in scalars(read_back(run), "train/loss")] == [8, 16, 24, 32, 40, 48]
