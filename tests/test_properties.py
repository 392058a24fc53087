"""Property tests (hypothesis): the model on random shapes and values, the config validator on
random configs, and the IDX and checkpoint readers on random bytes.

The claims: the network's loss and gradients are finite, its probabilities sum to 1 and its
gradients match finite differences; a config is accepted exactly when every key is valid (and
then survives a trip through YAML), and anything else is a ConfigError; a reader fed anything
raises only the tool's own error for that reader. Example counts stay small: the whole file runs
in a few seconds.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import re
import zipfile
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import numpy as np
import pytest
import yaml
from helpers import idx_images, idx_labels
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mlp_cli.config import SECTIONS, Config
from mlp_cli.config_file import load_config
from mlp_cli.data import idx
from mlp_cli.errors import CheckpointError, ConfigError, DataError
from mlp_cli.nn.backprop import loss_and_gradients
from mlp_cli.nn.evaluation import loss_and_accuracy
from mlp_cli.nn.loss import cross_entropy
from mlp_cli.nn.network import (
    PARAM_NAMES,
    Params,
    forward,
    init_params,
    l2_penalty,
    log_softmax,
    logits,
    softmax,
)
from mlp_cli.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# -- the model ----------------------------------------------------------------------------------


@st.composite
def problems(draw, dtypes=("float32", "float64"), max_scale=3.0):
    """A random network and batch: shapes, dtype, weight and input scales, labels."""
    B, d, h, k = (draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 5)),
                  draw(st.integers(2, 5)))
    dtype = draw(st.sampled_from(dtypes))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    w_scale = 10 ** draw(st.floats(-2, math.log10(max_scale)))
    x_scale = 10 ** draw(st.floats(-2, math.log10(max_scale)))
    params = init_params(h, rng, "normal", "float64", inputs=d, classes=k)
    arrays = {name: (getattr(params, name) + rng.standard_normal(getattr(params, name).shape)) * w_scale
              for name in PARAM_NAMES}
    params = Params(**{name: array.astype(dtype) for name, array in arrays.items()})
    X = (rng.standard_normal((B, d)) * x_scale).astype(dtype)
    y = rng.integers(0, k, B)
    l2 = draw(st.sampled_from([0.0, 0.0, 1e-3, 0.1]))
    return params, X, y, l2


@FAST
@given(problems(max_scale=1e3))
def test_loss_and_gradients_are_finite_with_the_right_shapes(problem):
    params, X, y, l2 = problem

    loss, grads = loss_and_gradients(params, X, y, l2)

    assert math.isfinite(loss) and loss >= 0.0
    for name in PARAM_NAMES:
        assert grads[name].shape == params[name].shape and grads[name].dtype == params[name].dtype
        assert np.isfinite(grads[name]).all(), name
    expected = float(cross_entropy(logits(params, X).astype(np.float64), y).mean())
    assert loss == pytest.approx(expected, rel=1e-4 if X.dtype == np.float32 else 1e-10, abs=1e-4)


@FAST
@given(problems(max_scale=1e3))
def test_evaluation_agrees_with_the_plain_forward_pass(problem):
    params, X, y, _ = problem

    loss, accuracy = loss_and_accuracy(params, X, y, block=3)

    Z2 = logits(params, X).astype(np.float64)
    expected = float(cross_entropy(Z2, y).mean())
    assert loss == pytest.approx(expected, rel=1e-4 if X.dtype == np.float32 else 1e-10, abs=1e-4)
    # only a row whose top two scores tie within rounding may be counted differently
    top2 = np.sort(Z2, axis=1)[:, -2:]
    near_ties = np.count_nonzero(top2[:, 1] - top2[:, 0] <= 1e-3 * (1 + np.abs(top2[:, 1])))
    correct = np.count_nonzero(Z2.argmax(axis=1) == y)
    assert abs(round(accuracy * len(y)) - correct) <= near_ties


@FAST
@given(problems(max_scale=1e3))
def test_probabilities_are_a_distribution_per_row(problem):
    params, X, _, _ = problem

    P = forward(params, X)  # (B, k)

    tolerance = 1e-5 if P.dtype == np.float32 else 1e-12
    assert P.shape == (len(X), params.W2.shape[1]) and np.isfinite(P).all()
    assert ((P >= 0) & (P <= 1)).all()
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=tolerance)


@FAST
@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, max_side=6),
                  elements=st.floats(-1e100, 1e100)))
def test_softmax_of_any_finite_scores_sums_to_one(Z):
    P, logP = softmax(Z), log_softmax(Z)

    assert np.isfinite(P).all() and np.isfinite(logP).all() and (logP <= 0).all()
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(problems(dtypes=("float64",)))
def test_gradients_match_central_finite_differences(problem):
    params, X, y, l2 = problem
    _, grads = loss_and_gradients(params, X, y, l2)
    grads = {name: grads[name].copy() for name in PARAM_NAMES}  # the next calls reuse nothing, but be safe

    def objective() -> float:  # the regularised loss, by the forward pass alone
        return float(cross_entropy(logits(params, X), y).mean()) + l2_penalty(params, l2)

    eps = 1e-6
    for name in PARAM_NAMES:
        array = params[name]
        numeric = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            saved = array[index]
            array[index] = saved + eps
            plus = objective()
            array[index] = saved - eps
            minus = objective()
            array[index] = saved
            numeric[index] = (plus - minus) / (2 * eps)
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-4, atol=1e-7, err_msg=name)


# -- the config validator -----------------------------------------------------------------------

def _spec(hint: Any, meta: Any) -> tuple[type, bool, dict]:
    """(base type, whether None is allowed, range or choices) of one key's type hint."""
    args = get_args(hint)
    optional = type(None) in args
    base = next(a for a in args if a is not type(None)) if optional else hint
    return base, optional, dict(meta)


KEYS = {  # "section.key" -> (base type, optional, metadata), read from the schema itself
    f"{section}.{f.name}": _spec(get_type_hints(cls)[f.name], f.metadata)
    for section, cls in SECTIONS.items()
    for f in dataclasses.fields(cls)
}
GEN_LIMIT = 10**6  # the largest number drawn for a key without an upper bound


# run.name is one folder name (config.check_run_paths): no separators, dots-only or control chars
NAME_CHARS = st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="/\\.")


def valid_values(key: str) -> st.SearchStrategy:
    base, optional, meta = KEYS[key]
    if get_origin(base) is tuple:  # a list of names (run.log)
        values = st.lists(st.sampled_from(meta["choices"]), unique=True)
    elif base is bool:
        values = st.booleans()
    elif base is str:
        values = st.sampled_from(meta["choices"]) if meta.get("choices") else st.text(NAME_CHARS, max_size=12)
    elif base is int:
        lo = meta.get("lo")
        lo = -GEN_LIMIT if lo is None else int(lo) + (1 if meta.get("lo_open") else 0)
        hi = meta.get("hi")
        hi = GEN_LIMIT if hi is None else int(hi) - (1 if meta.get("hi_open") else 0)
        values = st.integers(lo, hi) | st.integers(lo, min(hi, lo + 10)).map(float)  # 3.0 is an int
    else:
        lo, hi = meta.get("lo"), meta.get("hi")
        values = st.floats(
            -GEN_LIMIT if lo is None else lo, GEN_LIMIT if hi is None else hi,
            exclude_min=bool(meta.get("lo_open")), exclude_max=bool(meta.get("hi_open")),
            allow_nan=False, allow_infinity=False,
        )
    return st.none() | values if optional else values


def invalid_values(key: str) -> st.SearchStrategy:
    base, optional, meta = KEYS[key]
    wrong_type = st.sampled_from([[1], {"a": 1}, "x" if base is not str else 3, True if base is not bool else 1.5])
    if base is bool:
        return wrong_type | st.sampled_from([0, 1, "yes", "true"])
    if base is str:
        choices = meta.get("choices")
        return wrong_type | (st.text(max_size=8).filter(lambda t: t not in choices) if choices else wrong_type)
    out = [wrong_type, st.just(float("nan")), st.just(float("inf")), st.just(-float("inf"))]
    if not optional:
        out.append(st.none())
    if base is int:
        out.append(st.floats(-1e6, 1e6).filter(lambda v: not v.is_integer()))
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None:
        out.append(st.just(lo) if meta.get("lo_open") else st.just(lo - 1))
        out.append(st.just(-(10**400)))
    if hi is not None:
        out.append(st.just(hi) if meta.get("hi_open") else st.just(hi + 1))
        out.append(st.just(10**400))
    return st.one_of(*out)


@st.composite
def valid_configs(draw) -> dict[str, dict[str, Any]]:
    """A nested mapping setting a random subset of keys, each to a valid value; the known rules
    between keys are then satisfied by adjusting one side."""
    chosen = draw(st.lists(st.sampled_from(sorted(KEYS)), unique=True, max_size=len(KEYS)))
    raw: dict[str, dict[str, Any]] = {}
    for key in chosen:
        section, name = key.split(".")
        raw.setdefault(section, {})[name] = draw(valid_values(key))
    defaults = load_config(None).to_dict()

    def get(key: str) -> Any:  # the value the config will have: drawn, else the default
        section, name = key.split(".")
        return raw.get(section, {}).get(name, defaults[section][name])

    if get("schedule.min_lr") > get("optimizer.lr"):
        raw.setdefault("schedule", {})["min_lr"] = 0.0
    if get("schedule.warmup_epochs") and get("schedule.warmup_epochs") >= get("train.epochs"):
        raw.setdefault("schedule", {})["warmup_epochs"] = 0
    return raw


NAMED_KEY = re.compile(r"\b([a-z_]+\.[a-z_0-9]+)\b")


def assert_accepted_or_refused_for_a_rule(raw: dict) -> Config | None:
    """Per-key valid values are accepted, unless they break a rule between keys; such a refusal
    is a ConfigError naming two keys."""
    try:
        return load_config(None, base=raw)
    except ConfigError as err:
        named = {k for k in NAMED_KEY.findall(str(err)) if k in KEYS}
        assert len(named) >= 2, f"a valid config was refused: {err}"
        return None


def assert_round_trips(config: Config, tmp_path: Path) -> None:
    text = config.to_yaml()
    assert load_config(None, base=yaml.safe_load(text)) == config
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    assert load_config(path) == config


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(valid_configs())
def test_valid_configs_are_accepted_and_round_trip_through_yaml(tmp_path, raw):
    config = assert_accepted_or_refused_for_a_rule(raw)
    event("accepted" if config is not None else "refused for a rule between keys")
    if config is None:
        return
    for section, values in raw.items():
        for name, value in values.items():
            got, base = getattr(getattr(config, section), name), KEYS[f"{section}.{name}"][0]
            base = get_origin(base) or base  # a list of names is held as a tuple
            assert got == (tuple(value) if base is tuple else value) and (value is None or type(got) is base)
    assert_round_trips(config, tmp_path)


@st.composite
def one_bad_key(draw):
    raw = draw(valid_configs())
    key = draw(st.sampled_from(sorted(KEYS)))
    section, name = key.split(".")
    raw.setdefault(section, {})[name] = draw(invalid_values(key))
    return raw, key


@settings(max_examples=80, deadline=None)
@given(one_bad_key())
def test_an_invalid_value_is_a_config_error_naming_its_key(case):
    raw, key = case

    with pytest.raises(ConfigError) as caught:
        load_config(None, base=raw)

    assert key in str(caught.value) and "\n" not in str(caught.value)


JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.sampled_from([10**400, -(10**400)]) | st.floats()
    | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
SECTION_OR_JUNK = st.sampled_from(sorted(SECTIONS)) | st.text(max_size=10)
KEY_OR_JUNK = st.sampled_from(sorted({k.split(".")[1] for k in KEYS})) | st.text(max_size=10)
JUNK_CONFIGS = st.dictionaries(SECTION_OR_JUNK, st.dictionaries(KEY_OR_JUNK, JUNK, max_size=4) | JUNK, max_size=4)


def only_config_error(action, *args, **kwargs) -> Config | None:
    try:
        config = action(*args, **kwargs)
    except ConfigError as err:
        assert "\n" not in str(err)
        return None
    assert isinstance(config, Config)
    return config


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=JUNK_CONFIGS | JUNK)
def test_any_mapping_gives_a_config_or_a_config_error(tmp_path, junk):
    config = only_config_error(load_config, None, base=junk)
    event("accepted" if config is not None else "refused")
    if config is not None:
        assert_round_trips(config, tmp_path)
    path = tmp_path / "junk.yaml"
    path.write_text(yaml.safe_dump(junk), encoding="utf-8")
    only_config_error(load_config, path)


YAMLISH = st.text(alphabet=st.sampled_from(list("abc:-[]{}#&*!|>'\"%@`,?.01e+ \t\n")) | st.characters(),
                  max_size=60)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=YAMLISH, sets=st.lists(st.text(max_size=20) | st.builds(
    lambda k, v: f"{k}={v}", st.sampled_from(sorted(KEYS)), YAMLISH), max_size=3))
def test_any_text_or_set_strings_give_a_config_or_a_config_error(tmp_path, text, sets):
    path = tmp_path / "text.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    only_config_error(load_config, path)
    only_config_error(load_config, None, sets=sets)


# -- the IDX reader -----------------------------------------------------------------------------


@st.composite
def idx_files(draw):
    """An IDX file that is right, or wrong in one structured way: magic, a dimension, the length,
    a label value. Returns (bytes, kind, what a correct reader returns or None)."""
    kind = draw(st.sampled_from(["images", "labels"]))
    n = draw(st.integers(0, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "images":
        side = (draw(st.sampled_from([28, 28, 27, 0, 2**32 - 1])), draw(st.sampled_from([28, 28, 1])))
        valid_side = side == (28, 28)
        array = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        data = bytearray(idx_images(array))
        data[8:16] = side[0].to_bytes(4, "big") + side[1].to_bytes(4, "big")
        correct = array if valid_side and n > 0 else None
    else:
        top = draw(st.sampled_from([10, 10, 256]))
        array = rng.integers(0, top, n, dtype=np.uint8)
        data = bytearray(idx_labels(array))
        correct = array if n > 0 and array.max() < 10 else None
    if draw(st.booleans()):  # one structural fault
        fault = draw(st.sampled_from(["magic", "count", "cut", "extend"]))
        if fault == "magic":
            data[draw(st.integers(0, 3))] ^= draw(st.integers(1, 255))
        elif fault == "count":
            data[4:8] = draw(st.integers(0, 2**32 - 1)).to_bytes(4, "big")
        elif fault == "cut":
            del data[draw(st.integers(0, len(data) - 1)):]
        else:
            data += draw(st.binary(min_size=1, max_size=8))
        correct = None if bytes(data) != bytes(idx_images(array) if kind == "images" else idx_labels(array)) \
            else correct
    return bytes(data), kind, correct


@settings(max_examples=150, deadline=None)
@given(idx_files())
def test_idx_reader_returns_the_array_or_a_data_error(case):
    data, kind, correct = case
    parse = idx.parse_images if kind == "images" else idx.parse_labels
    try:
        array = parse(data, "fuzz.gz")
    except DataError as err:
        assert str(err).startswith("fuzz.gz: ")
        assert correct is None, f"a valid file was refused: {err}"
        return
    assert correct is not None, "an invalid file was accepted"
    np.testing.assert_array_equal(array, correct)


# -- the checkpoint reader ----------------------------------------------------------------------

META = {"config": load_config(None, {"model.hidden": 3}).to_dict(), "epoch": 2, "step": 10,
        "preprocessing": {"method": "scale", "mean": 0.0, "std": 255.0}}


@pytest.fixture(scope="module")
def good_checkpoint_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("ckpt") / "good.npz"
    save_checkpoint(path, init_params(3, np.random.default_rng(0)), {"velocity.W1": np.zeros((784, 3), np.float32)},
                    META)
    return path.read_bytes()


def assert_only_checkpoint_errors(path: Path) -> Checkpoint | None:
    """Loads, or raises CheckpointError naming the file; a loaded one is usable as is."""
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as err:
        assert str(path) in str(err) and "\n" not in str(err)
        return None
    assert isinstance(ckpt.epoch, int) and isinstance(ckpt.step, int) and ckpt.epoch >= 0
    h = ckpt.params.hidden
    assert ckpt.params.W1.shape == (784, h) and ckpt.params.b2.shape == (10,)
    assert all(np.isfinite(ckpt.params[name]).all() for name in PARAM_NAMES)
    only_config_error(load_config, None, base=ckpt.config)
    return ckpt


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prefix=st.sampled_from([b"", b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY", b"\x80\x04"]),
       rest=st.binary(max_size=200))
def test_random_bytes_only_ever_raise_checkpoint_error(tmp_path, prefix, rest):
    path = tmp_path / "fuzz.npz"
    path.write_bytes(prefix + rest)
    assert assert_only_checkpoint_errors(path) is None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.sampled_from(["flip", "cut", "insert"]), st.floats(0, 1), st.binary(min_size=1,
                                                                                                      max_size=4)),
                      min_size=1, max_size=3))
# Found by this test: a flipped byte leaves a .npy header's "(784, 3)" unclosed, and numpy's header
# parser raised tokenize.TokenError, which the loader did not turn into a CheckpointError.
@example(edits=[("flip", 0.0078125, b"\x03"), ("flip", 0.0078125, b"^")])
def test_damaged_checkpoints_only_ever_raise_checkpoint_error(tmp_path, good_checkpoint_bytes, edits):
    data = bytearray(good_checkpoint_bytes)
    for what, where, payload in edits:
        at = min(int(where * len(data)), max(len(data) - 1, 0))
        if what == "flip" and data:
            data[at] ^= payload[0] or 1
        elif what == "cut":
            del data[at:]
        else:
            data[at:at] = payload
    path = tmp_path / "damaged.npz"
    path.write_bytes(bytes(data))
    assert_only_checkpoint_errors(path)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                    max_leaves=10)
ARRAY_DTYPES = st.sampled_from(["float32", "float64", "int32", "uint8", "float16", "bool", "complex64"])


@st.composite
def archives(draw) -> dict[str, np.ndarray]:
    """The members of a .npz: the expected names or others, arrays of any dtype and a shape
    that is right or not, and metadata that is the expected JSON with parts changed, or junk."""
    h = draw(st.integers(1, 3))
    shapes = {"W1": (784, h), "b1": (h,), "W2": (h, 10), "b2": (10,)}
    dtype = draw(st.sampled_from(["float32", "float64"]))
    rarely = st.integers(0, 19).map(lambda v: v == 0)  # each fault in about one array in twenty
    arrays: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        if draw(rarely):
            continue  # missing
        if draw(rarely):
            shape = draw(st.sampled_from([(), (784,), (784, h + 1), (h, 10, 1), (2, 2)]))
        array = np.random.default_rng(0).standard_normal(shape)
        array = array.astype(draw(ARRAY_DTYPES) if draw(rarely) else dtype)
        if draw(rarely) and array.size and np.issubdtype(array.dtype, np.floating):
            array.flat[0] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        arrays[f"param/{name}"] = array
    meta: Any = dict(META, format_version=1)
    changed = st.lists(st.sampled_from(["config", "epoch", "step", "preprocessing", "format_version",
                                        "best_epoch", "best_accuracy"]), min_size=1, max_size=3)
    for key in draw(changed) if draw(st.booleans()) else []:
        if draw(st.booleans()):
            meta.pop(key, None)
        else:
            meta[key] = draw(JSON)
    if draw(rarely):
        meta = draw(JSON)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    for _ in range(draw(st.integers(0, 2))):
        name = draw(st.sampled_from(["optim/velocity.W1", "optim/t", "extra"]))
        arrays[name] = np.zeros(draw(st.sampled_from([(), (3,), (784, h)])), draw(ARRAY_DTYPES))
    return arrays


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arrays=archives(), raw_member=st.integers(0, 4).map(lambda v: v == 0))
def test_structured_junk_archives_only_ever_raise_checkpoint_error(tmp_path, arrays, raw_member):
    path = tmp_path / "junk.npz"
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    if raw_member:  # a member numpy does not see as an array
        with zipfile.ZipFile(buffer, "a") as archive:
            archive.writestr("notes", b"written by hand")
    path.write_bytes(buffer.getvalue())
    loaded = assert_only_checkpoint_errors(path) is not None
    event("loaded" if loaded else "refused")
    if loaded:
        assert not raw_member
