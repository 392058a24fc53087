"""The network: parameters, forward pass, hand-derived backprop, optimisers, gradient check.

Imports numpy and nothing else of the tool's but its errors: the math stands on its own.
"""
