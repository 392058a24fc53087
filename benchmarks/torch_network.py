"""The tool's network built in PyTorch, for the benchmarks that compare against it.

Its own small module: the end-to-end PyTorch job (torch_cs229.py) imports it, and its start-up
is part of what that benchmark times.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mlp_cli.nn.network import Params


def torch_network(params: Params) -> Any:
    """The tool's network in PyTorch (Linear, Sigmoid, Linear), starting from ``params``: the
    same initial weights in the same dtype, zero biases."""
    import torch

    dtype = {np.dtype("float32"): torch.float32, np.dtype("float64"): torch.float64}[params.dtype]
    hidden = torch.nn.Linear(params.W1.shape[0], params.hidden, dtype=dtype)
    output = torch.nn.Linear(params.hidden, params.W2.shape[1], dtype=dtype)
    with torch.no_grad():  # nn.Linear keeps W transposed
        hidden.weight.copy_(torch.from_numpy(params.W1.T.copy()))
        hidden.bias.zero_()
        output.weight.copy_(torch.from_numpy(params.W2.T.copy()))
        output.bias.zero_()
    return torch.nn.Sequential(hidden, torch.nn.Sigmoid(), output)
