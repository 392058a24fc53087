"""The network as an ONNX model, its input normalisation included, built with onnx's helper API.

The graph, for pixels (N, 784) float32 as MNIST stores them (0-255):

    X     = (pixels - mean) / std            Sub, Div (left out where mean = 0 or std = 1)
    Z1    = X @ W1 + b1                      MatMul, Add                    (N, h)
    A1    = sigmoid(Z1)                      Sigmoid                        (N, h)
    Z2    = A1 @ W2 + b2                     MatMul, Add -> output "logits"        (N, 10)
    P     = softmax(Z2), row-wise            Softmax     -> output "probabilities" (N, 10)

the same steps, in the same order, as ``Preprocessing.apply`` and ``nn.network.forward``. A
float64 checkpoint computes in float64 (the input is cast up, the two outputs cast down), so its
answers are the trained network's, not a float32 approximation of it.

The opset and IR version are pinned to old ones (opset 13, IR 7: onnx 1.8) that every operator
here exists in: an onnx release writes its own newest IR by default (onnx 1.23: IR 14), which
older onnxruntime releases refuse to load (1.15.1, and 1.23.2 on Python 3.10, both do). MatMul and
Add rather than one Gemm: onnxruntime before 1.18 fuses Gemm and Sigmoid into a kernel that has
no float64 version, and so refuses a float64 model built with Gemm.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mlp_cli.nn.network import CLASSES, INPUTS

if TYPE_CHECKING:
    from mlp_cli.reports.export.exporter import ExportSource

OPSET = 13  # Softmax over one axis (before 13 it flattened the trailing dimensions)
IR_VERSION = 7  # the IR of onnx 1.8, the release that introduced opset 13
INPUT, PROBABILITIES, LOGITS = "pixels", "probabilities", "logits"


def encode(source: ExportSource) -> bytes:
    """The serialised model, checked by ``onnx.checker`` (full check: types and shapes) first."""
    model = build_model(source)
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def build_model(source: ExportSource) -> onnx.ModelProto:
    graph = helper.make_graph(
        _nodes(source), "mlp", [_tensor(INPUT, TensorProto.FLOAT, INPUTS)],
        [_tensor(PROBABILITIES, TensorProto.FLOAT, CLASSES), _tensor(LOGITS, TensorProto.FLOAT, CLASSES)],
        initializer=_initializers(source),
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="mlp",
        producer_version=source.metadata["tool_version"],
        doc_string=f"{INPUT}: raw pixels 0-255, float32 (N, {INPUTS}); {PROBABILITIES} and {LOGITS}: "
                   f"float32 (N, {CLASSES}), in the order of the class_names metadata",
    )
    model.ir_version = IR_VERSION
    helper.set_model_props(model, source.metadata)
    return model


def _nodes(source: ExportSource) -> list[onnx.NodeProto]:
    """Normalisation, the two layers and the softmax; a float64 network casts at both ends."""
    float64 = source.params.dtype == np.dtype("float64")
    nodes, x = [], INPUT
    if float64:
        nodes.append(helper.make_node("Cast", [x], ["pixels_float64"], to=TensorProto.DOUBLE))
        x = "pixels_float64"
    prep = source.preprocessing
    if prep.mean != 0.0:  # the same conditions as Preprocessing.apply: no-op steps are left out
        nodes.append(helper.make_node("Sub", [x, "mean"], ["centred"]))
        x = "centred"
    if prep.std != 1.0:
        nodes.append(helper.make_node("Div", [x, "std"], ["X"]))
        x = "X"
    scores = "Z2" if float64 else LOGITS
    nodes += [
        helper.make_node("MatMul", [x, "W1"], ["XW1"]),  # Z1 = X @ W1 + b1   (N, h)
        helper.make_node("Add", ["XW1", "b1"], ["Z1"]),
        helper.make_node("Sigmoid", ["Z1"], ["A1"]),  # A1 = sigmoid(Z1)   (N, h)
        helper.make_node("MatMul", ["A1", "W2"], ["A1W2"]),  # Z2 = A1 @ W2 + b2   (N, 10)
        helper.make_node("Add", ["A1W2", "b2"], [scores]),
        helper.make_node("Softmax", [scores], ["P" if float64 else PROBABILITIES], axis=-1),  # P = softmax(Z2)
    ]
    if float64:
        nodes += [helper.make_node("Cast", ["P"], [PROBABILITIES], to=TensorProto.FLOAT),
                  helper.make_node("Cast", ["Z2"], [LOGITS], to=TensorProto.FLOAT)]
    return nodes


def _initializers(source: ExportSource) -> list[onnx.TensorProto]:
    params, prep = source.params, source.preprocessing
    arrays = {name: params[name] for name in ("W1", "b1", "W2", "b2")}
    if prep.mean != 0.0:
        arrays["mean"] = np.array(prep.mean, dtype=params.dtype)  # scalars cast as apply() casts them
    if prep.std != 1.0:
        arrays["std"] = np.array(prep.std, dtype=params.dtype)
    return [numpy_helper.from_array(np.ascontiguousarray(array), name) for name, array in arrays.items()]


def _tensor(name: str, element_type: int, width: int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, element_type, ["N", width])

