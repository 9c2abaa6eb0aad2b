"""Scoring a saved model: the ONNX engine (no TensorFlow), the TensorFlow engine (which
imports ``rnncli.network`` when it is chosen), the predictor and its records, explanations,
evaluation figures. Never imports ``rnncli.training``.
"""
