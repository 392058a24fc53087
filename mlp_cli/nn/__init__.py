"""The network and its training arithmetic; imports numpy and nothing of the tool's but its errors.

network     parameters; sigmoid, softmax and log-softmax beside their derivatives; the plain
            forward pass, the L2 penalty; the shape constants (28, 784, 10)
loss        the loss unit: the cross-entropy's value and its gradient dJ/dZ2 = (P - Y) / B,
            plain, beside its tuned forms (the step's fused kernel, the evaluation's sum); LOSSES
backprop    ``backprop``, the README's equations ("The network and its gradients") as the
            reference, beside ``loss_and_gradients``, the tuned step training runs
evaluation  ``plain_loss_and_accuracy`` (the reference) beside the tuned ``loss_and_accuracy``
workspace   the buffers the tuned kernels reuse, and their layout (what ``mlp info`` counts)
registry    one entry per optimiser and per schedule (numpy-free: the config and the CLI read it)
optimizers  sgd, momentum, nesterov, adam, adamw
schedules   the learning-rate schedules
gradcheck   the gradients against central finite differences
"""
