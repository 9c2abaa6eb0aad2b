"""The model directory's format: the manifest and its hashes, the check of model.keras's
archive, ``serving.npz`` and the check of ``core.onnx``. Imports ``rnncli.core`` and
``rnncli.data`` (label names) only. Light: no TensorFlow.
"""
