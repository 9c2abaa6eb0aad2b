"""HEAVY: training a model: the run from data to a published model directory, the fit loop,
the n-gram model, the blend, word vectors, ``--resume``, saving and export. The floor
above inference (it checks what it saved by scoring it).
"""
