"""The network's four tensors as a safetensors file that PyTorch loads as it is:

    net = nn.Sequential(nn.Linear(784, h), nn.Sigmoid(), nn.Linear(h, 10))
    net.load_state_dict(safetensors.torch.load_file("model.safetensors"))

``nn.Linear`` computes x @ weight.T + bias with weight (out, in), so its weights are ours
transposed: ``0.weight`` = W1.T (h, 784), ``0.bias`` = b1 (h,), ``2.weight`` = W2.T (10, h),
``2.bias`` = b2 (10,) (index 1 is the Sigmoid, which has none). The tensors keep the dtype they
were trained in (``load_state_dict`` copies them into the module's own dtype). The network's
input normalisation is not a tensor: it lies in the header's metadata, ``preprocessing``
({"method", "mean", "std"}: X = (pixels - mean) / std), beside the class names and the rest
(``ExportSource.metadata``); ``format: pt`` is the key the Hugging Face tools look for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from safetensors.numpy import save

if TYPE_CHECKING:
    from mlp_cli.reports.export.exporter import ExportSource


def encode(source: ExportSource) -> bytes:
    params = source.params
    tensors = {
        "0.weight": np.ascontiguousarray(params.W1.T),  # (h, 784)
        "0.bias": np.ascontiguousarray(params.b1),  # (h,)
        "2.weight": np.ascontiguousarray(params.W2.T),  # (10, h)
        "2.bias": np.ascontiguousarray(params.b2),  # (10,)
    }
    return bytes(save(tensors, metadata={"format": "pt", **source.metadata}))
