"""The dataset cache, and the two calls the rest of the tool makes: ensure and load.

Layout of the cache (``--data-dir`` > ``$MLP_DATA_DIR`` > the user cache directory)::

    <data dir>/<dataset>/train-images-idx3-ubyte.gz   verified downloads (as fetched)
    <data dir>/<dataset>/train-images.npy              (60000, 28, 28) uint8, parsed once
    <data dir>/<dataset>/train-labels.npy              (60000,) uint8
    <data dir>/<dataset>/test-images.npy ...           (10000, 28, 28), (10000,)

The ``.npy`` arrays are written (atomically) only from downloads that passed verification, and
are verified again on every load against the registry itself: an array's bytes behind the IDX
header they came from must have the SHA-256 the registry gives for the ``.gz`` payload. Nothing
stored beside the arrays could be rewritten to agree with a changed array, and SHA-256 runs at
over 1 GB/s on CPUs with SHA extensions (figures in benchmarks/README.md). A regular file with
the wrong shape, dtype or digest is rebuilt from the verified ``.gz``, saying so in one line.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlp_cli.atomic import atomic_open
from mlp_cli.data import idx
from mlp_cli.data.download import Downloader, FetchResult, NullReporter, Reporter, RetryPolicy
from mlp_cli.data.registry import DatasetSpec, get_spec, mirror_list
from mlp_cli.errors import DataError, DownloadError, UsageError

DATA_DIR_ENV = "MLP_DATA_DIR"

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class DatasetReport:
    """What :func:`ensure_dataset` found and did."""

    name: str
    directory: Path
    files: tuple[FetchResult, ...]  # one per .gz file, in registry order
    arrays: dict[str, tuple[Path, Path]] = field(default_factory=dict)  # split -> .npy paths
    rebuilt: tuple[str, ...] = ()  # splits whose .npy arrays were (re)written
    requests: int = 0  # HTTP requests sent

    @property
    def downloaded(self) -> tuple[str, ...]:
        return tuple(f.filename for f in self.files if f.status == "downloaded")

    @property
    def cached(self) -> tuple[str, ...]:
        return tuple(f.filename for f in self.files if f.status == "cached")


def resolve_data_dir(data_dir: PathLike | None = None) -> Path:
    """The cache root: the argument, else ``$MLP_DATA_DIR``, else the user cache directory."""
    if data_dir is not None and str(data_dir):
        return Path(data_dir).expanduser()
    from_env = os.environ.get(DATA_DIR_ENV, "").strip()
    if from_env:
        return Path(from_env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("mlp"))


def dataset_dir(name: str, data_dir: PathLike | None = None) -> Path:
    """Where dataset ``name`` lives inside the cache."""
    return resolve_data_dir(data_dir) / get_spec(name).name


def dataset_checksums(name: str) -> dict[str, str]:
    """File name -> SHA-256 of its decompressed content (recorded in checkpoints)."""
    return dict(get_spec(name).checksums)


def ensure_dataset(
    name: str = "mnist",
    data_dir: PathLike | None = None,
    mirrors: Sequence[str] = (),
    force: bool = False,
    reporter: Reporter | None = None,
    *,
    policy: RetryPolicy | None = None,
) -> DatasetReport:
    """Make every file of ``name`` present and verified, and its arrays ready to load.

    Cached files are re-verified (SHA-256 of their content) and no request is sent for them;
    missing or bad ones are fetched from ``mirrors`` first, then the environment variable's
    mirrors, then the registry's. ``force`` downloads everything again.
    """
    spec = get_spec(name)
    return _ensure(spec, dataset_dir(name, data_dir), mirror_list(spec, mirrors), force,
                   reporter or NullReporter(), policy)


def _ensure(
    spec: DatasetSpec,
    directory: Path,
    mirror_urls: tuple[str, ...],
    force: bool,
    reporter: Reporter,
    policy: RetryPolicy | None,
) -> DatasetReport:
    """Fetch (from ``mirror_urls`` only) and verify every file, then (re)build stale arrays."""
    _make_dir(directory)
    hint = (
        "To use a local copy, pass --mirror file:///path/to/dir/ (a directory holding the "
        f"four .gz files) or set {spec.mirror_env}."
    )
    with Downloader(reporter, policy) as downloader:
        files = tuple(
            downloader.fetch(filename, sha256, directory, mirror_urls, force=force, hint=hint,
                             size=spec.payload_size(filename))
            for filename, sha256 in spec.checksums.items()
        )
    fresh = {f.filename for f in files if f.status == "downloaded"}
    arrays, rebuilt = {}, []
    for split_name, split in spec.splits.items():
        arrays[split_name] = _array_paths(directory, split_name)
        stale = force or split.images in fresh or split.labels in fresh
        if stale or _load_verified(spec, directory, split_name, reporter) is None:
            _build_arrays(spec, directory, split_name)
            rebuilt.append(split_name)
    if not fresh and not getattr(reporter, "summary_follows", False):
        reporter.note(
            f"all {len(files)} {spec.name} files were already in {directory} and verified; "
            "no network request made"
        )
    return DatasetReport(
        spec.name, directory, files, arrays, tuple(rebuilt), downloader.requests_made
    )


def load_dataset(
    name: str = "mnist",
    split: str = "train",
    data_dir: PathLike | None = None,
    mirrors: Sequence[str] = (),
    reporter: Reporter | None = None,
    download: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 28, 28) uint8 (a read-only memory map) and labels (n,) int64 of one split.

    Fetches the dataset first when the cache lacks it (unless ``download`` is False, which
    raises :class:`DataError` instead).
    """
    spec = get_spec(name)
    if split not in spec.splits:
        raise UsageError(f"unknown split {split!r}; choose one of: {', '.join(spec.splits)}")
    directory = dataset_dir(name, data_dir)
    reporter = reporter or NullReporter()
    arrays = _load_verified(spec, directory, split, reporter)
    if arrays is None:
        if not download:
            _require_cached(spec, directory)
            _ensure(spec, directory, (), False, reporter, None)  # no network
        else:
            ensure_dataset(name, data_dir, mirrors, reporter=reporter)
        arrays = _load_arrays(spec, directory, split)[0]
        if arrays is None:  # pragma: no cover  (ensure_dataset just wrote and checked them)
            raise DataError(f"the {split} arrays in {directory} are unreadable after rebuilding")
    images, labels = arrays
    return images, np.asarray(labels, dtype=np.int64)


def _require_cached(spec: DatasetSpec, directory: Path) -> None:
    missing = [f for f in spec.files if not (directory / f).is_file()]
    if missing:
        raise DataError(
            f"{spec.name} is not in the cache {directory} (missing {', '.join(missing)}); "
            f"run `mlp download-data --dataset {spec.name}` first"
        )


def _array_paths(directory: Path, split_name: str) -> tuple[Path, Path]:
    return directory / f"{split_name}-images.npy", directory / f"{split_name}-labels.npy"


Arrays = tuple[np.ndarray, np.ndarray]


def _load_verified(
    spec: DatasetSpec, directory: Path, split_name: str, reporter: Reporter
) -> Arrays | None:
    """The verified arrays of one split, or None (saying why in one line when they exist)."""
    arrays, problem = _load_arrays(spec, directory, split_name)
    if problem is not None:
        reporter.note(f"{problem}; rebuilding it from the verified download")
    return arrays


def _load_arrays(spec: DatasetSpec, directory: Path, split_name: str) -> tuple[Arrays | None, str | None]:
    """(the cached arrays of one split, None) when both are regular files matching the
    registry; else (None, what is wrong) -- (None, None) when one is simply absent."""
    split = spec.splits[split_name]
    side = idx.IMAGE_SIDE
    loaded = []
    for path, shape, source in zip(
        _array_paths(directory, split_name), ((split.count, side, side), (split.count,)),
        (split.images, split.labels), strict=True,
    ):
        try:
            if not stat.S_ISREG(os.lstat(path).st_mode):
                return None, f"{path} is not a regular file"
            array = np.load(path, mmap_mode="r", allow_pickle=False)  # (n, 28, 28) or (n,)
        except FileNotFoundError:
            return None, None
        except (OSError, ValueError, EOFError):  # truncated or not an .npy at all
            return None, f"{path} is not a readable .npy array"
        if array.dtype != np.uint8 or array.shape != shape:
            return None, f"{path} holds {array.dtype} {array.shape}, not uint8 {shape}"
        if _payload_digest(array) != spec.checksums[source]:
            return None, f"{path} does not match the registry's checksum of {source}"
        loaded.append(array)
    return (loaded[0], loaded[1]), None


def _payload_digest(array: np.ndarray) -> str:
    """SHA-256 of the IDX file ``array`` was parsed from: its header, then its bytes."""
    magic = idx.IMAGES_MAGIC if array.ndim == 3 else idx.LABELS_MAGIC
    header = b"".join(int(v).to_bytes(4, "big") for v in (magic, *array.shape))
    digest = hashlib.sha256(header)
    digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def _build_arrays(spec: DatasetSpec, directory: Path, split_name: str) -> None:
    """Parse the verified .gz pair of one split and write its .npy arrays atomically."""
    split = spec.splits[split_name]
    images = idx.read_images(directory / split.images, spec.payload_size(split.images))  # (n, 28, 28)
    labels = idx.read_labels(directory / split.labels, spec.payload_size(split.labels))  # (n,)
    for what, array in (("images", images), ("labels", labels)):
        if len(array) != split.count:
            raise DataError(
                f"{directory / getattr(split, what)}: {len(array)} {what}, "
                f"expected {split.count}"
            )
    for path, array in zip(_array_paths(directory, split_name), (images, labels), strict=True):
        try:
            if path.is_symlink() or (path.exists() and not path.is_file() and not path.is_dir()):
                path.unlink()  # the cache's own name: the FIFO or link is removed (never its target), as a .part is
            with atomic_open(path, "wb") as handle:
                np.save(handle, array, allow_pickle=False)
        except OSError as err:
            raise DownloadError(
                f"cannot write to the data directory {directory}: {err.strerror or err}"
            ) from err


def _make_dir(directory: Path) -> Path:
    if directory.is_symlink():  # the dataset folder is the tool's to make: a link would take the cache elsewhere
        raise UsageError(f"the dataset directory {directory} is a symbolic link; mlp keeps its cache only in a folder "
                         "it made: remove the link, or point --data-dir at the folder itself")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DownloadError(
            f"cannot create the data directory {directory}: {err.strerror or err}; "
            f"choose a writable one with --data-dir or {DATA_DIR_ENV}"
        ) from err
    return directory
