"""Exporting a trained network to the formats other runtimes read: ONNX (the whole model, its
input normalisation included) and safetensors (the four tensors, laid out for PyTorch).

``registry.py`` names the formats (and imports nothing); ``exporter.py`` reads the checkpoint,
refuses a bad ``--out`` and writes the file whole; ``to_onnx.py`` and ``to_safetensors.py`` each
turn the network into one format's bytes, importing that format's package (the ``export``
extra), so nothing here is imported before ``mlp export`` runs.
"""
