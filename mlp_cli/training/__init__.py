"""Training: the loop and its state, the run directory, checkpoints, metrics, early stopping."""
