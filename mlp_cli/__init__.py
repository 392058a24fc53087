"""mlp: the classic two-layer network on MNIST, trained with hand-derived backprop in numpy."""

__version__ = "0.1.0"
