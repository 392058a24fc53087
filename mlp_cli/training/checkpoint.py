"""Checkpoints: ``.npz`` archives of plain arrays plus one JSON metadata string. Never pickle.

Layout of a checkpoint file:

    param/W1, param/b1, param/W2, param/b2    the network                     (float32 or float64)
    optim/<name>                              the optimiser's state arrays
    meta                                      uint8 bytes of a UTF-8 JSON document

The metadata holds the format version, the tool version, the resolved config, the position in
training (epoch, global step, whether the epoch was finished), the seed scheme of the shuffling
RNG, the preprocessing statistics, the dataset's checksums and the best dev accuracy so far.

Writing goes to a temporary file in the same directory that is then ``os.replace``d into place,
so a crash mid-write leaves the previous checkpoint intact. Reading trusts nothing: only the
members above are accepted; the metadata is read first (capped in size, nesting and number
length), then every member's declared sizes (zip header and ``.npy`` header) are checked against
the architecture the metadata and W1's header give -- all before any array is decompressed; then
the memory they and the command's work will take against what is free (a small file of zeros can
describe gigabytes: a ResourceError giving both figures); then the data, its finiteness and the
format version. Never pickle. Every other failure is a :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
import zlib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from mlp_cli.atomic import atomic_write_bytes
from mlp_cli.config import TrainConfig
from mlp_cli.data.preprocess import Preprocessing
from mlp_cli.errors import CheckpointError, ConfigError, MissingFileError
from mlp_cli.memory import WORK_BYTES_PER_ENTRY, require_memory
from mlp_cli.nn.network import CLASSES, INPUTS, PARAM_NAMES, Params
from mlp_cli.training import npz
from mlp_cli.version import __version__

FORMAT_VERSION = 1
ZIP_MAGIC = b"PK\x03\x04"  # a zip archive's first local file header (np.savez writes one per array)
FLOAT_DTYPES = (np.dtype("float32"), np.dtype("float64"))
MAX_EPOCHS = next(f.metadata["hi"] for f in fields(TrainConfig) if f.name == "epochs")  # train.epochs' ceiling
MAX_STEPS = 2**53  # beyond this a JSON number is no longer an exact integer
# What a checkpoint may hold: the four parameters, the optimiser's state ("velocity.W1", "t"),
# the metadata. Anything else is refused before a byte of it is decompressed.
MEMBER = re.compile(r"meta|param/(W1|b1|W2|b2)|optim/[a-z_]{1,16}(\.(W1|b1|W2|b2))?")
MAX_MEMBERS = 5 + 16
MAX_META_BYTES = 1 << 20  # ours are ~2 KB
MAX_DEPTH = 16  # levels of JSON nesting; ours has 3
MAX_DIGITS = 100  # of one JSON integer (int() of 5000 digits is slow, of 4300+ refused); seeds need 10


@dataclass
class Checkpoint:
    params: Params
    optimizer_state: dict[str, np.ndarray]
    meta: dict[str, Any]

    @property
    def config(self) -> dict[str, Any]:
        return self.meta["config"]

    @property
    def epoch(self) -> int:
        return int(self.meta["epoch"])

    @property
    def step(self) -> int:
        return int(self.meta["step"])


def save_checkpoint(
    path: str | Path, params: Params, optimizer_state: dict[str, np.ndarray], meta: dict[str, Any]
) -> None:
    """Write a checkpoint atomically. ``meta`` gains the format and tool versions."""
    meta = {"format_version": FORMAT_VERSION, "tool_version": __version__, **meta}
    arrays: dict[str, np.ndarray] = {f"param/{k}": v for k, v in params.as_dict().items()}
    arrays.update({f"optim/{k}": np.asarray(v) for k, v in optimizer_state.items()})
    arrays["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    atomic_write_bytes(path, buffer.getvalue())


def model_checkpoint(path: Path) -> Path:
    """The one rule for a model given on the command line or to the API: a checkpoint file as
    given; a run directory means its best.npz (the run's model)."""
    if path.is_dir():
        if not (path / "best.npz").is_file():
            raise MissingFileError(f"{path} is a directory without best.npz; give a checkpoint file "
                                   "or a run directory that has trained at least one epoch")
        return path / "best.npz"
    return path


def _did_you_mean(path: Path) -> str:
    """`` (did you mean last.npz?)`` for a checkpoint name with a typo beside real ones."""
    import difflib

    try:
        names = sorted(p.name for p in path.parent.iterdir() if p.suffix == ".npz")[:1000]
    except OSError:
        return ""
    close = difflib.get_close_matches(path.name, names, n=1, cutoff=0.6)
    return f" (did you mean {path.parent / close[0]}?)" if close else ""


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and validate a checkpoint; raise CheckpointError naming the file on any problem, and
    ResourceError, before any array is decompressed, if it would not fit in memory."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"checkpoint {path} not found{_did_you_mean(path)}")
    if path.is_dir():
        raise MissingFileError(f"checkpoint {path} is a directory; give a .npz file such as {path}/best.npz")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a regular file")
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(ZIP_MAGIC))
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err.strerror or err}") from None
    if head != ZIP_MAGIC:  # checked here: numpy would take any other file for a pickle
        what = "is empty (0 bytes)" if not head else "is not a .npz archive (not a zip file)"  # its bytes never shown
        raise CheckpointError(f"checkpoint {path} {what}")

    def bad(reason: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {path}: {reason}")

    try:
        with zipfile.ZipFile(path) as archive:
            return _read(archive, bad)
    except npz.NpzError as err:
        raise bad(f"{err}; this is not an mlp checkpoint") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({err})") from None
    except (ValueError, NotImplementedError, zlib.error) as err:  # corrupt headers, odd methods
        raise CheckpointError(f"checkpoint {path} is corrupt ({type(err).__name__}: {err})") from None


def _read(archive: zipfile.ZipFile, bad: Any) -> Checkpoint:
    """The headers and metadata, the memory loading will take, then the data."""
    headers, meta, dtype, hidden = _read_headers(archive, bad)
    require_memory(loading_memory(headers), f"checkpoint {archive.filename}: reading its "
                   f"784-{hidden}-10 {dtype} network", "free memory, or use a machine with more")
    arrays = {name: npz.read_data(archive, member) for name, member in headers.items() if name != "meta"}
    params = Params(**{k: arrays[f"param/{k}"] for k in PARAM_NAMES})
    for name in PARAM_NAMES:
        if not np.isfinite(params[name]).all():
            raise bad(f"{name} contains NaN or infinite values")
    optimizer_state = {k[len("optim/"):]: v for k, v in arrays.items() if k.startswith("optim/")}
    return Checkpoint(params=params, optimizer_state=optimizer_state, meta=meta)


def _read_headers(archive: zipfile.ZipFile, bad: Any) -> tuple[dict[str, npz.Member], dict[str, Any], np.dtype, int]:
    """Members, metadata, then headers against the architecture the metadata gives: no data read."""
    members = npz.names(archive)
    if "meta" not in members or any(f"param/{k}" not in members for k in PARAM_NAMES):
        raise bad("missing arrays; this is not an mlp checkpoint")
    for name, info in members.items():
        if not info.filename.endswith(".npy"):
            raise bad(f"member {name!r} is not a .npy array; this is not an mlp checkpoint")
        if not MEMBER.fullmatch(name) or len(members) > MAX_MEMBERS:
            raise bad(f"member {name!r} is not part of an mlp checkpoint")
    headers = {name: npz.read_header(archive, name, info) for name, info in members.items()}
    for member in headers.values():
        if member.dtype.hasobject:
            raise CheckpointError(
                f"checkpoint {archive.filename} contains pickled objects, which mlp never loads"
            )
    meta_member = headers["meta"]
    if meta_member.dtype != np.uint8 or len(meta_member.shape) != 1 or meta_member.nbytes > MAX_META_BYTES:
        raise bad("metadata is malformed" if meta_member.nbytes <= MAX_META_BYTES
                  else f"metadata declares {meta_member.nbytes} bytes, more than {MAX_META_BYTES}")
    meta = _parse_meta(npz.read_data(archive, meta_member), bad)
    _check_meta(meta, bad)
    dtype, hidden = _check_headers(headers, meta["config"], bad)
    return headers, meta, dtype, hidden


def loading_memory(headers: dict[str, npz.Member]) -> int:
    """Bytes at a command's peak: every array (each read as bytes, then copied: the largest counts
    twice) and the command's own work, ``WORK_BYTES_PER_ENTRY`` for each entry of W1 b1 W2 b2."""
    arrays = [member.nbytes for name, member in headers.items() if name != "meta"]
    entries = sum(headers[f"param/{k}"].nbytes // headers[f"param/{k}"].dtype.itemsize for k in PARAM_NAMES)
    return sum(arrays) + max(arrays) + WORK_BYTES_PER_ENTRY * entries


def _parse_meta(raw: np.ndarray, bad: Any) -> dict[str, Any]:
    """The metadata JSON, refusing deep nesting and long numbers before they cost anything (NaN
    and out-of-range values are left to the range checks, which name the key)."""

    def whole(text: str) -> int:
        if len(text.lstrip("-")) > MAX_DIGITS:
            raise ValueError(f"a number of {len(text)} digits")
        return int(text)

    try:
        meta = json.loads(raw.tobytes().decode("utf-8"), parse_int=whole)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise bad("metadata is not valid JSON") from None
    except RecursionError:
        raise bad(f"metadata is nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as err:
        raise bad(f"metadata holds {err}") from None
    if _depth(meta) > MAX_DEPTH:
        raise bad(f"metadata is nested more than {MAX_DEPTH} levels deep")
    if not isinstance(meta, dict):
        raise bad("metadata is not a JSON object")
    return meta


def _depth(value: Any) -> int:
    """Levels of nesting of a parsed JSON value (iterative: no recursion to exhaust)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if level <= MAX_DEPTH and isinstance(item, dict | list):
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _check_meta(meta: dict[str, Any], bad: Any) -> None:
    version = meta.get("format_version")
    if version is None:
        raise bad("metadata has no format version")
    if not _is_count(version) or version < 1:
        raise bad(f"format version {version!r} is not valid; expected a whole number >= 1")
    if version > FORMAT_VERSION:
        raise bad(
            f"format version {version} is newer than this mlp understands ({FORMAT_VERSION}); "
            "upgrade mlp to read it"
        )
    for key in ("config", "epoch", "step", "preprocessing"):
        if key not in meta:
            raise bad(f"metadata lacks '{key}'")
    _check_position(meta, bad)
    config = meta["config"]
    if not isinstance(config, dict) or not all(isinstance(v, dict) for v in config.values()):
        raise bad("metadata 'config' is not a mapping of sections")
    _migrate(config)
    try:
        Preprocessing.from_dict(meta["preprocessing"])
    except CheckpointError as err:
        raise bad(str(err)) from None
    _check_history(meta, bad)


def _check_history(meta: dict[str, Any], bad: Any) -> None:
    """The optional records of how the run was drawn (``rng``) and changed (``changes``), which
    resume carries on and plot reads (``training.state.checkpoint_meta``)."""
    rng = meta.get("rng", {})
    if not isinstance(rng, dict) or not all(isinstance(v, str) or _is_count(v) for v in rng.values()):
        raise bad("metadata 'rng' is not a mapping of names to text or whole numbers")
    changes = meta.get("changes", [])
    if not isinstance(changes, list) or len(changes) > MAX_EPOCHS or not all(map(_is_change, changes)):
        raise bad("metadata 'changes' is not a list of {epoch, step, settings: {key: [before, after]}}")


def _is_change(change: Any) -> bool:
    """One resume's record: where it took effect and the settings it changed, each [before, after]."""
    if not isinstance(change, dict) or not _is_count(change.get("epoch")) or not _is_count(change.get("step")):
        return False
    settings = change.get("settings")
    return isinstance(settings, dict) and all(isinstance(pair, list) and len(pair) == 2 for pair in settings.values())


def _check_headers(headers: dict[str, npz.Member], config: dict[str, Any], bad: Any) -> tuple[np.dtype, int]:
    """Every array's declared dtype and shape against the architecture, before any data is read."""
    W1 = headers["param/W1"]
    dtype = W1.dtype
    if dtype not in FLOAT_DTYPES:
        raise bad(f"W1 has dtype {dtype}; expected float32 or float64")
    if len(W1.shape) != 2 or W1.shape[0] != INPUTS or W1.shape[1] < 1:
        raise bad(f"W1 has shape {W1.shape}; expected ({INPUTS}, hidden)")
    h = _hidden_size(headers, config)
    _check_stored_config(config, h, dtype, bad)  # bounds h by the config's own range
    shapes = {"W1": (INPUTS, h), "b1": (h,), "W2": (h, CLASSES), "b2": (CLASSES,)}
    for name in PARAM_NAMES:
        member = headers[f"param/{name}"]
        if member.shape != shapes[name]:
            raise bad(f"{name} has shape {member.shape}; expected {shapes[name]}")
        if member.dtype != dtype:
            raise bad(f"{name} has dtype {member.dtype}; expected {dtype} like W1")
    for name, member in headers.items():
        if not name.startswith("optim/"):
            continue
        of = name.rpartition(".")[2] if "." in name else None
        expected = shapes.get(of, ()) if of else ()
        if member.shape != expected or member.dtype not in (dtype, np.dtype(np.int64)):
            raise bad(f"optimiser state {name[6:]!r} is {member.dtype}{list(member.shape)}, "
                      f"expected {dtype}{list(expected)}")
    return dtype, h


def _hidden_size(headers: dict[str, npz.Member], config: Any) -> int:
    """The hidden size most of W1, b1, W2 (their declared shapes) and the stored config agree on,
    so that a shape error blames the one tensor that was cut, not the ones still matching."""
    from collections import Counter

    b1, W2 = headers["param/b1"].shape, headers["param/W2"].shape
    model = config.get("model") if isinstance(config, dict) else None
    votes = [headers["param/W1"].shape[1], b1[0] if len(b1) == 1 else None, W2[0] if len(W2) == 2 else None,
             model.get("hidden") if isinstance(model, dict) else None]
    counts = Counter(v for v in votes if isinstance(v, int) and not isinstance(v, bool) and v >= 1)
    return counts.most_common(1)[0][0]  # W1's own count wins a tie (first seen)


def _check_stored_config(config: dict[str, Any], hidden: int, dtype: np.dtype, bad: Any) -> None:
    """The config saved with the weights passes the config validator and describes them: it is
    what ``--resume`` continues and what ``mlp eval`` rebuilds the data split from."""
    from mlp_cli.config import build_config

    try:
        stored = build_config(config)
    except ConfigError as err:
        raise bad(f"its stored config is invalid: {err}") from None
    if stored.model.hidden != hidden:
        raise bad(f"its stored config says model.hidden = {stored.model.hidden} but W1 has {hidden} columns")
    if np.dtype(stored.model.dtype) != dtype:
        raise bad(f"its stored config says model.dtype = {stored.model.dtype} but the weights are {dtype}")


def _check_position(meta: dict[str, Any], bad: Any) -> None:
    """Epoch, step and best epoch are whole numbers of a sane size; accuracies lie in [0, 1]
    (``best_accuracy`` is -1 before the first epoch was evaluated)."""
    for key, most in (("epoch", MAX_EPOCHS), ("step", MAX_STEPS), ("best_epoch", MAX_EPOCHS)):
        value = meta.get(key, 0)
        if not _is_count(value) or value > most:
            raise bad(f"metadata '{key}' = {value!r:.40}; expected a whole number from 0 to {most}")
    for key, allowed in (("best_accuracy", (-1.0,)), ("accuracy", (None,))):
        value = meta.get(key, allowed[0])
        if value in allowed and not isinstance(value, bool):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise bad(f"metadata '{key}' = {value!r:.40}; expected an accuracy in [0, 1]")


def _migrate(config: dict[str, Any]) -> None:
    """Stored configs of older releases: ``early_stopping.restore_best`` (removed, since best.npz
    always holds the best epoch's weights) is dropped."""
    section = config.get("early_stopping")
    if isinstance(section, dict):
        section.pop("restore_best", None)


def largest_size(hidden: int) -> int:
    """The most bytes a checkpoint of ``hidden`` units the reader accepts can take: its parameters
    and as many optimiser arrays as it admits (``MAX_MEMBERS``), each at most W1's size, in
    float64, with its metadata and every member's headers. A larger file is not one (the bound
    for a copy or a transfer made before the file is read)."""
    params, W1 = INPUTS * hidden + hidden + hidden * CLASSES + CLASSES, INPUTS * hidden
    return 8 * (params + (MAX_MEMBERS - 5) * W1) + MAX_META_BYTES + MAX_MEMBERS * (npz.MAX_HEADER + 1024)


def _is_count(value: Any) -> bool:
    """A JSON whole number >= 0 (``true`` is an int to Python, not to us)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def checkpoint_sha256(path: Path) -> str:
    """The SHA-256 of the checkpoint file's bytes (read in 1 MiB blocks): what a branch's
    parent.json and an exported model's metadata record of where they came from."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
