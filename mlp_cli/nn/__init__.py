"""The network and its training arithmetic; imports numpy and nothing of the tool's but its errors.

network      parameters, sigmoid / softmax / log-softmax beside their derivatives, the plain
             forward pass, cross-entropy, the L2 penalty, the shape constants
backprop     ``backprop``: the seed's equations (the reference); ``loss_and_gradients``: the tuned step
evaluation   ``plain_loss_and_accuracy`` (the reference) and the tuned ``loss_and_accuracy``
workspace    the buffers the tuned kernels reuse, and their layout (what ``mlp info`` counts)
optimizers   sgd, momentum, nesterov, adam, adamw;  schedules: the learning-rate schedules
registry     one entry per optimiser and schedule (numpy-free: the config and the CLI read it)
gradcheck    the gradients against central finite differences
"""
