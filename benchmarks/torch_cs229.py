"""The CS229 job written in PyTorch: the reference the end-to-end benchmark compares against.

    python -m benchmarks.torch_cs229 --data-dir DIR --out DIR [--epochs 30] [--threads N]

The same work as ``mlp train --config configs/cs229.yaml``, done the straightforward PyTorch
way: load the cached MNIST with ``mlp_cli.data.cache.load_dataset``, the CS229 split and one scalar
mean/std, 784-300-10 sigmoid/softmax with N(0, 1) weights (the tool's initial values), SGD
with learning rate 5 on batches of 1000 in order, 30 epochs; after each epoch the loss and
accuracy on train and dev, one JSON line appended to metrics.jsonl, ``last.pt`` saved and
``best.pt`` when dev accuracy improved. Flush-to-zero is on (``torch.set_flush_denormal``),
which is what makes PyTorch fast with this initialisation.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    start = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--no-ftz", action="store_true", help="leave flush-denormal off")
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    import torch.nn.functional as F

    from benchmarks.torch_network import torch_network
    from mlp_cli.data.cache import load_dataset
    from mlp_cli.data.preprocess import fit_preprocessing, split_train_dev
    from mlp_cli.nn.network import init_params

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(not args.no_ftz)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    images, labels = load_dataset("mnist", "train", data_dir=args.data_dir)
    train_idx, dev_idx = split_train_dev(len(labels), 10_000, 100)
    prep = fit_preprocessing("standardize", images[train_idx])
    X_train = torch.from_numpy(prep.apply(images[train_idx], "float32"))
    y_train = torch.from_numpy(np.asarray(labels[train_idx], dtype=np.int64))
    X_dev = torch.from_numpy(prep.apply(images[dev_idx], "float32"))
    y_dev = torch.from_numpy(np.asarray(labels[dev_idx], dtype=np.int64))

    hidden, batch, lr = 300, 1000, 5.0
    model = torch_network(init_params(hidden, np.random.default_rng(100), "normal", "float32"))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)

    def evaluate(X: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        with torch.no_grad():
            scores = model(X)
            loss = F.cross_entropy(scores, y, reduction="sum").item() / len(y)
            accuracy = (scores.argmax(dim=1) == y).sum().item() / len(y)
        return loss, accuracy

    n = len(y_train)
    best = -1.0
    metrics = out / "metrics.jsonl"
    metrics.unlink(missing_ok=True)
    for epoch in range(1, args.epochs + 1):
        epoch_start = time.perf_counter()
        for lo in range(0, n, batch):
            loss = F.cross_entropy(model(X_train[lo : lo + batch]), y_train[lo : lo + batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if not math.isfinite(loss.item()):
                raise SystemExit(f"diverged at epoch {epoch}")
        seconds = time.perf_counter() - epoch_start
        train_loss, train_accuracy = evaluate(X_train, y_train)
        dev_loss, dev_accuracy = evaluate(X_dev, y_dev)
        row = {"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_accuracy,
               "dev_loss": dev_loss, "dev_accuracy": dev_accuracy, "seconds": seconds,
               "elapsed": time.perf_counter() - start}
        with metrics.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        torch.save(model.state_dict(), out / "last.pt")
        if dev_accuracy > best:
            best = dev_accuracy
            torch.save(model.state_dict(), out / "best.pt")
    print(json.dumps({"best_dev_accuracy": best, "seconds": time.perf_counter() - start}))


if __name__ == "__main__":
    main()
