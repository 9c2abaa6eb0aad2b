"""HEAVY: the recurrent network in TensorFlow and Keras: the TensorFlow import, devices and
seeds (``runtime``), the layers Keras lacks, the graph built from a TrainConfig and the
safe loading of a saved model.keras. Imports the floors below it (core, data,
modeldir); training and the TensorFlow engine use it.
"""
