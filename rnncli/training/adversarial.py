"""HEAVY: adversarial training of the recurrent network (``--adversarial``; Miyato, Dai
and Goodfellow 2017, "Adversarial Training Methods for Semi-Supervised Text
Classification").

Each training step also learns from the batch with its embedded tokens moved a little in
the direction that raises the loss most: the gradient of the loss with respect to the
embedded tokens, scaled per text to a length of ``epsilon`` times the text's typical
(root mean square) word-vector length, over the whole text. The step's loss is the clean
loss plus the perturbed one: one more forward and backward pass a step. In the paper it
lowered a pretrained LSTM's test error on IMDB and made it less prone to overfitting.

The paper normalizes the embedding so that a fixed epsilon (5.0) means the same thing
for every model; here the perturbation is measured against each text's own word vectors
instead, which needs no change of the pretrained embedding (their 5.0 against vectors of
length about 16 is about 0.3 of a word vector).

Each pass draws its own dropout masks, so the push is the clean pass's steepest way up,
not exactly the perturbed pass's; the paper's code adds the push after the embedding's
dropout and keeps its mask (not measured here). The reported training loss is the clean
pass's, comparable with the validation loss.

The trainer wraps the classifier (``core``) and a second graph over the same layers that
takes the noise (model.build_core's ``perturbable``): training, validation and the state
kept for --resume go through the trainer, and the core is what is saved.
"""

from __future__ import annotations

from rnncli.core.config import TrainConfig
from rnncli.network import model as M
from rnncli.network.model import keras, tf

# "auto" for a pretrained network: measured on IMDB (docs/pretraining.md). The paper's
# 5.0 against normalized word vectors of length about 16 is about 0.3 of a word vector.
AUTO_ADVERSARIAL = 0.3

try:  # what Keras's own train_step uses to report a loss summed over devices
    from keras.src.losses.loss import unscale_loss_for_distribution
except ImportError:  # pragma: no cover - a Keras that moved it
    def unscale_loss_for_distribution(value):
        return value


def resolve(config: TrainConfig, *, pretrained: bool) -> TrainConfig:
    """``config`` with ``adversarial`` "auto" resolved: AUTO_ADVERSARIAL for a
    ``pretrained`` network, else none (not measured without pretraining)."""
    if config.adversarial is not None:
        return config
    return config.replace(adversarial=AUTO_ADVERSARIAL if pretrained else 0.0)


def networks(config: TrainConfig):
    """(the classifier, what trains it: itself, or its adversarial trainer)."""
    if not config.adversarial:
        core = M.build_core(config)
        return core, core
    core, perturbed = M.build_core(config, perturbable=True)
    return core, Adversarial(core, perturbed, config.adversarial)


class Adversarial(keras.Model):
    """Trains ``core`` on each batch and on the batch adversarially perturbed
    (``perturbed``: model.build_core's second model); predicts and validates as ``core``."""

    def __init__(self, core, perturbed, epsilon: float, **kwargs):
        super().__init__(name="adversarial", **kwargs)
        self.core, self.perturbed, self.epsilon = core, perturbed, float(epsilon)
        self.built = True  # its layers are: its weights can be kept and restored (--resume)

    def call(self, inputs, training=None):
        return self.core(inputs, training=training)

    def train_step(self, data):
        """Two passes, each with its own backward pass: the clean batch (its gradient
        with respect to the embedded tokens gives the perturbation), then the perturbed
        batch; the weights move by the sum of both passes' gradients. (One tape over both
        would also record the first backward pass: about 1.8 times slower on CPUs.)"""
        ids, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        weights = self.trainable_weights
        width = self.perturbed.inputs[1].shape[-1]
        zeros = tf.zeros(tf.concat([tf.shape(ids), [width]], 0), self.compute_dtype)
        with tf.GradientTape() as tape:
            tape.watch(zeros)
            y_pred, embedded = self.perturbed([ids, zeros], training=True)
            loss = self._compute_loss(x=ids, y=y, y_pred=y_pred,
                                      sample_weight=sample_weight, training=True)
            self._loss_tracker.update_state(unscale_loss_for_distribution(loss),
                                            sample_weight=tf.shape(ids)[0])
            scaled = self.optimizer.scale_loss(loss)
        toward, *clean = tape.gradient(scaled, [zeros, *weights])
        noise = perturbation(toward, embedded, ids, self.epsilon)
        with tf.GradientTape() as tape:
            adversarial, _ = self.perturbed([ids, noise], training=True)
            scaled = self.optimizer.scale_loss(self._compute_loss(
                x=ids, y=y, y_pred=adversarial, sample_weight=sample_weight, training=True))
        pushed = tape.gradient(scaled, weights)
        self.optimizer.apply_gradients(zip(map(_sum, clean, pushed), weights))
        return self.compute_metrics(ids, y, y_pred, sample_weight=sample_weight)


def _sum(a, b):
    """Two gradients of one variable added; an embedding's are IndexedSlices (the rows of
    the batch's tokens), whose sum is both sets of rows."""
    if a is None or b is None:
        return b if a is None else a
    if isinstance(a, tf.IndexedSlices) and isinstance(b, tf.IndexedSlices):
        return tf.IndexedSlices(tf.concat([a.values, b.values], 0),
                                tf.concat([a.indices, b.indices], 0), a.dense_shape)
    return tf.convert_to_tensor(a) + tf.convert_to_tensor(b)


def perturbation(gradient, embedded, ids, epsilon: float):
    """The noise added to ``embedded`` (batch, time, width): each text's ``gradient``
    scaled to ``epsilon`` times the root mean square length of its word vectors (padding
    not counted), as a constant; zero where the gradient is."""
    gradient = tf.stop_gradient(tf.cast(gradient, "float32"))
    vectors = tf.stop_gradient(tf.cast(embedded, "float32"))
    tokens = tf.cast(ids > 0, "float32")
    count = tf.maximum(tf.reduce_sum(tokens, 1), 1.0)
    typical = tf.sqrt(tf.reduce_sum(tf.reduce_sum(vectors**2, 2) * tokens, 1) / count)
    length = tf.sqrt(tf.reduce_sum(gradient**2, [1, 2]))
    scale = tf.math.divide_no_nan(epsilon * typical, length)
    return gradient * scale[:, None, None]
