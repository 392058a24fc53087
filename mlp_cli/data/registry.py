"""The registry of datasets the tool can fetch: files, checksums, splits and mirrors.

Checksums are SHA-256 digests of the *decompressed* IDX files. The ``.gz`` wrappers differ
between mirrors (and the offline copy was re-compressed), while the IDX payload is the same
everywhere, so checking the payload accepts every faithful mirror and nothing else.

Mirrors are tried in order: the ones the user names (``--mirror``, repeatable), then the
dataset's environment variable (several URLs separated by whitespace or commas), then the
defaults below. A mirror is a directory URL (``https://``, ``http://`` or ``file://``) or a
local directory path; each file is fetched as ``<mirror><file name>``. A mirror URL may carry
credentials (``https://user:password@host/``); :func:`redact` hides them wherever one is shown.

Sizes bound every transfer: the decompressed size of each file follows from its split's count
(16 + n * 784 bytes of images, 8 + n bytes of labels); ``gz_sizes`` records the official
``.gz`` sizes, and :func:`transfer_cap` is the most a faithful gzip of the payload can take --
even stored uncompressed, twice -- since mirrors re-compress (the offline copy is smaller than
the official archives, a mirror compressing again on the wire is larger).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlparse

from mlp_cli.errors import UsageError

SCHEMES = ("https", "http", "file")


@dataclass(frozen=True)
class Split:
    """One split: its image file, its label file and how many examples it holds."""

    images: str
    labels: str
    count: int


class DatasetSpec(NamedTuple):  # a NamedTuple: read at every start-up (--dataset's help), cheaper than a dataclass
    """Everything needed to fetch and check one dataset."""

    name: str
    checksums: Mapping[str, str]  # file name -> SHA-256 of the decompressed file
    splits: Mapping[str, Split]  # "train" / "test"
    mirror_env: str  # environment variable holding extra mirrors
    default_mirrors: tuple[str, ...]
    gz_sizes: Mapping[str, int] = {}  # official .gz sizes, bytes (read, never changed)
    classes: tuple[str, ...] = tuple("0123456789")  # the name of each label, in label order
    extraction: str = "digit"  # how mlp predict finds the subject of a photo (data/extract.py)

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(self.checksums)

    def payload_size(self, filename: str) -> int:
        """Bytes of the decompressed IDX file ``filename``."""
        for split in self.splits.values():
            if filename == split.images:
                return IMAGES_HEADER + split.count * PIXELS
            if filename == split.labels:
                return LABELS_HEADER + split.count
        raise KeyError(filename)


IMAGES_HEADER, LABELS_HEADER, PIXELS = 16, 8, 28 * 28


def transfer_cap(payload: int) -> int:
    """The most bytes a faithful gzip of a ``payload``-byte file can take, even gzipped twice
    with stored (uncompressed) deflate blocks: 5 bytes per block of up to 64 KiB and a header
    per layer, with a wide margin."""
    return payload + payload // 256 + 4096


def redact(text: str) -> str:
    """``text`` with the credentials of every URL in it replaced by ``***``."""
    return re.sub(_USERINFO, r"\1***@", text)


# Up to the last "@" of the URL: a password may hold "@" or "/" (requests splits at the last "@"),
# and a too-early stop would show the rest of it. Compiled (and cached by re) on first use.
_USERINFO = r"([A-Za-z][A-Za-z0-9+.-]*://)[^\s]*@"


def _split(prefix: str, count: int) -> Split:
    return Split(f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz", count)


_SPLITS = {"train": _split("train", 60000), "test": _split("t10k", 10000)}

DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        checksums={
            "train-images-idx3-ubyte.gz":
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte.gz":
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte.gz":
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte.gz":
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        splits=_SPLITS,
        mirror_env="MLP_MNIST_MIRROR",
        gz_sizes={  # the official archives (yann.lecun.com, the ossci and cvdf mirrors)
            "train-images-idx3-ubyte.gz": 9912422,
            "train-labels-idx1-ubyte.gz": 28881,
            "t10k-images-idx3-ubyte.gz": 1648877,
            "t10k-labels-idx1-ubyte.gz": 4542,
        },
        default_mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        checksums={
            "train-images-idx3-ubyte.gz":
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte.gz":
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte.gz":
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte.gz":
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        splits=_SPLITS,
        mirror_env="MLP_FASHION_MNIST_MIRROR",
        gz_sizes={  # the official archives as Debian's dataset-fashion-mnist ships them
            "train-images-idx3-ubyte.gz": 26421856,
            "train-labels-idx1-ubyte.gz": 29491,
            "t10k-images-idx3-ubyte.gz": 4422079,
            "t10k-labels-idx1-ubyte.gz": 5125,
        },
        default_mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        extraction="object",  # a whole garment, not strokes
    ),
}


def get_spec(name: str) -> DatasetSpec:
    """The registry entry for ``name``; an unknown name is a usage error listing the known."""
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(sorted(DATASETS))
        raise UsageError(f"unknown dataset {name!r}; choose one of: {known}") from None


def class_names(name: str) -> tuple[str, ...]:
    """The name of each class of dataset ``name`` ("0" ... "9" for MNIST), in label order."""
    return get_spec(name).classes


def mirror_list(
    spec: DatasetSpec,
    user_mirrors: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
) -> tuple[str, ...]:
    """The mirrors to try, in order, normalised and without duplicates."""
    environ = os.environ if environ is None else environ
    from_env = [m for m in re.split(r"[\s,]+", environ.get(spec.mirror_env, "")) if m]
    if any(map(_cut_credentials, from_env)):
        raise UsageError(f"{spec.mirror_env} holds an entry that is part of a URL with credentials (a password "
                         "holding a space or a comma, which separate the entries?): percent-encode them in the "
                         "URL (space %20, comma %2C); the entry is not shown, since it may hold a secret")
    ordered = [m for m in (*user_mirrors, *from_env, *spec.default_mirrors) if m.strip()]
    return tuple(dict.fromkeys(normalize_mirror(m) for m in ordered))


def _cut_credentials(entry: str) -> bool:
    """Whether ``entry`` of a mirror variable is a URL's piece cut inside its credentials:
    "http://user:pa" (a port that is not a number, no "@") or "er:pass@host/" (a ":" before an "@",
    no scheme): split at a space or a comma of the password, and showing it would show part of it."""
    scheme, found, rest = entry.partition("://")
    if not found:
        return "@" in entry and ":" in entry.partition("@")[0]
    authority = rest.split("/", 1)[0]
    host_port = authority.rpartition("]")[2]  # past an IPv6 literal's colons
    return "@" not in authority and ":" in host_port and not host_port.rpartition(":")[2].isdigit()


def normalize_mirror(mirror: str) -> str:
    """A mirror as a directory URL ending in ``/``; a bare local path becomes ``file://``."""
    text = mirror.strip()
    try:
        scheme = urlparse(text).scheme.lower()
    except ValueError as err:  # e.g. "http://[::1/": an IPv6 host not closed
        raise UsageError(f"mirror {redact(mirror)!r} is not a URL ({err}); give http(s)://HOST/PATH/ or a "
                         "directory") from None
    if not scheme or (len(scheme) == 1 and os.name == "nt"):  # "C:\\data" is a path
        text = Path(text).expanduser().resolve().as_uri()
    elif scheme not in SCHEMES:
        raise UsageError(
            f"mirror {redact(mirror)!r}: unsupported scheme {scheme!r} (use https://, http:// or file://)"
        )
    return text if text.endswith("/") else text + "/"
