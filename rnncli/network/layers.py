"""HEAVY: the few layers Keras lacks: mask-aware pooling, token truncation, hashed token
pairs, the n-gram logistic regression and the blend of the two models' probabilities.

``keras.layers.GlobalMaxPooling1D`` ignores the mask, so padding (and the state a masked
RNN carries over padded steps) would leak into the maximum; the pooling layers here take
the mask into account. All are registered, so ``safe_mode=True`` loading accepts them,
and ``modeldir/artifacts.py`` allows them by name.
"""

from __future__ import annotations

from rnncli.network.runtime import import_tensorflow

tf = import_tensorflow()
import keras  # noqa: E402
from keras import ops  # noqa: E402


@keras.saving.register_keras_serializable(package="rnncli")
class Truncate(keras.layers.Layer):
    """Keep at most ``length`` tokens. TextVectorization (with no fixed output length)
    pads each batch only to its longest text, so a batch of short texts runs a few
    recurrent steps instead of ``seq_len``."""

    def __init__(self, length: int, **kwargs):
        super().__init__(**kwargs)
        self.length = length

    def call(self, inputs):
        return inputs[:, : self.length]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], None)

    def get_config(self):
        return {**super().get_config(), "length": self.length}


@keras.saving.register_keras_serializable(package="rnncli")
class TokenPairs(keras.layers.Layer):
    """[embedded tokens (batch, time, d), their ids (batch, time)] -> (batch, time, d + dim):
    each token's embedding followed by an embedding of its pair with the token before it,
    the pair hashed into ``buckets`` rows (as fastText hashes its n-grams).

    In Chinese and Japanese, where every character is a token, such pairs carry most
    words: the recurrent network reads words without a segmenter. The pairs are computed
    from the ids inside the network, so the tokenization (and the ONNX engine's) stays as
    it is. The embedded tokens' mask passes through unchanged (Keras's Concatenate would
    rebuild it with ops that the loader's allow-list does not know).
    """

    def __init__(self, vocab_size: int, buckets: int, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.buckets = buckets
        self.dim = dim
        self.supports_masking = True

    def build(self, input_shape):
        self.embeddings = self.add_weight(name="embeddings", shape=(self.buckets, self.dim),
                                          initializer="uniform")  # as keras's Embedding

    def call(self, inputs, mask=None):
        embedded, ids = inputs
        ids = ops.cast(ids, "int64")
        before = ops.pad(ids[:, :-1], [[0, 0], [1, 0]])
        pairs = (before * self.vocab_size + ids) % self.buckets
        vectors = ops.take(self.embeddings, pairs, axis=0)
        return ops.concatenate([embedded, ops.cast(vectors, embedded.dtype)], axis=-1)

    def compute_mask(self, inputs, mask=None):
        return None if mask is None else mask[0]

    def compute_output_shape(self, input_shape):
        return (*input_shape[0][:-1], input_shape[0][-1] + self.dim)

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size,
                "buckets": self.buckets, "dim": self.dim}


class Perturb(keras.layers.Layer):
    """[embedded tokens, noise] -> their sum, with the tokens' mask (keras.layers.Add drops
    a mask that only one input has). Only in the graph adversarial training runs
    (model.build_core), never saved."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        return inputs[0] + ops.cast(inputs[1], inputs[0].dtype)

    def compute_mask(self, inputs, mask=None):
        return None if mask is None else mask[0]

    def compute_output_shape(self, input_shape):
        return input_shape[0]


@keras.saving.register_keras_serializable(package="rnncli")
class MaskedMaxPooling(keras.layers.Layer):
    """Max over the time steps the mask keeps: (batch, time, features) -> (batch, features)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is not None:
            keep = ops.expand_dims(ops.cast(mask, inputs.dtype), -1)
            # Masked steps get the dtype's lowest value, so they can never be the maximum.
            lowest = ops.cast(-65000.0 if inputs.dtype == "float16" else -1e9, inputs.dtype)
            inputs = inputs * keep + (1 - keep) * lowest
        return ops.max(inputs, axis=1)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


@keras.saving.register_keras_serializable(package="rnncli")
class AttentionPooling(keras.layers.Layer):
    """Additive attention over time (as in BiLSTM + attention classifiers):
    weights = softmax_t(v . tanh(W h_t + b)) over unmasked steps; output = sum_t w_t h_t."""

    def __init__(self, units: int = 64, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.supports_masking = True

    def build(self, input_shape):
        features = input_shape[-1]
        self.w = self.add_weight(name="w", shape=(features, self.units),
                                 initializer="glorot_uniform")
        self.b = self.add_weight(name="b", shape=(self.units,), initializer="zeros")
        self.v = self.add_weight(name="v", shape=(self.units, 1), initializer="glorot_uniform")

    def call(self, inputs, mask=None):
        scores = ops.squeeze(ops.matmul(ops.tanh(ops.matmul(inputs, self.w) + self.b), self.v),
                             -1)
        if mask is not None:
            lowest = ops.cast(-65000.0 if scores.dtype == "float16" else -1e9, scores.dtype)
            scores = ops.where(mask, scores, lowest)
        weights = ops.softmax(scores, axis=-1)
        return ops.sum(inputs * ops.expand_dims(weights, -1), axis=1)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="rnncli")
class NgramLogistic(keras.layers.Layer):
    """Logistic regression over n-gram TF-IDF: sparse counts (batch, size) -> probability
    (batch, 1); with ``outputs`` k > 1, the multinomial (softmax) regression's k class
    probabilities (batch, k).

    Features as scikit-learn's ``TfidfVectorizer(sublinear_tf=True)``: (1 + log count) *
    idf, each row scaled to unit L2 length. ``idf`` is fixed (set from the training texts);
    column 0 ([UNK]) has idf 0 and so no weight. The counts stay sparse throughout.
    """

    def __init__(self, size: int, outputs: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.size = size
        self.outputs = outputs
        # XLA has no sparse matmul kernel; Keras's jit_compile="auto" turns XLA on whenever
        # a GPU is present (even with --device cpu) unless a layer opts out.
        self.supports_jit = False

    def build(self, input_shape):
        self.idf = self.add_weight(name="idf", shape=(self.size,), initializer="zeros",
                                   trainable=False)
        self.kernel = self.add_weight(name="kernel", shape=(self.size, self.outputs),
                                      initializer="zeros")
        self.bias = self.add_weight(name="bias", shape=(self.outputs,), initializer="zeros")

    def call(self, counts):
        if not isinstance(counts, tf.SparseTensor):
            counts = tf.sparse.from_dense(counts)
        column = counts.indices[:, 1]
        values = (1.0 + tf.math.log(tf.cast(counts.values, "float32"))) * tf.gather(
            tf.cast(self.idf, "float32"), column)
        row = counts.indices[:, 0]
        norms = tf.math.unsorted_segment_sum(tf.square(values), row,
                                             tf.cast(counts.dense_shape[0], "int32"))
        values = values * tf.math.rsqrt(tf.gather(norms, row) + 1e-12)
        tfidf = tf.SparseTensor(counts.indices, values, counts.dense_shape)
        logits = tf.sparse.sparse_dense_matmul(tfidf, tf.cast(self.kernel, "float32"))
        logits = logits + tf.cast(self.bias, "float32")
        return tf.sigmoid(logits) if self.outputs == 1 else tf.nn.softmax(logits, axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.outputs)

    def get_config(self):
        config = {**super().get_config(), "size": self.size}
        if self.outputs != 1:  # a binary model's config stays as older rnncli wrote it
            config["outputs"] = self.outputs
        return config


@keras.saving.register_keras_serializable(package="rnncli")
class Temperature(keras.layers.Layer):
    """Temperature scaling of probabilities: the positive class's logit divided by
    ``temperature`` (two classes), or softmax(log p / ``temperature``) (more); fitted on
    the validation split (``blend.calibrate``)."""

    def __init__(self, temperature: float, **kwargs):
        super().__init__(**kwargs)
        self.temperature = float(temperature)

    def call(self, probs):
        p = keras.ops.clip(keras.ops.cast(probs, "float32"), 1e-7, 1.0 - 1e-7)  # blend.CLIP
        if probs.shape[-1] == 1:
            return keras.ops.sigmoid((keras.ops.log(p) - keras.ops.log1p(-p))
                                     / self.temperature)
        return keras.ops.softmax(keras.ops.log(p) / self.temperature, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="rnncli")
class Blend(keras.layers.Layer):
    """``weight`` * the recurrent model's probability (or class probabilities) + (1 -
    ``weight``) * the n-gram model's; the weight is chosen on the validation split."""

    def __init__(self, weight: float, **kwargs):
        super().__init__(**kwargs)
        self.weight = float(weight)

    def call(self, inputs):
        rnn, ngram = inputs
        return self.weight * rnn + (1.0 - self.weight) * ngram

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "weight": self.weight}


# Saved models name the layers by their public module, rnncli.layers (kept there, and
# allowed by the archive check): a model saved now names the same module as every model
# before it, whichever folder the code lives in.
for _layer in (Truncate, TokenPairs, MaskedMaxPooling, AttentionPooling, NgramLogistic,
               Temperature, Blend):
    _layer.__module__ = "rnncli.layers"
