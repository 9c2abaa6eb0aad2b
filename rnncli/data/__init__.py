"""Files -> texts and labels: reading CSV, TSV, JSON lines and text, encodings, columns,
labels and splits. Imports only ``rnncli.core``. Light: no TensorFlow.
"""
