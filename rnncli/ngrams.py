"""HEAVY: fitting the n-gram model (logistic regression over token 1-2-gram TF-IDF).

The graph pieces (vectorizer, NgramLogistic) are built by model.py; this module fits
them. Its blend with the recurrent network is chosen in blend.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnncli import model as M
from rnncli.config import TrainConfig
from rnncli.data import Dataset
from rnncli.errors import UsageError
from rnncli.fitloop import stop_on_signals

# The n-gram model: logistic regression trained by Adam on unit-length TF-IDF rows, whose
# weights must grow large; a higher learning rate than the RNN's, and early stopping.
# Enough steps an epoch (see fit_ngrams) at a rate that reaches the logistic regression's
# optimum before early stopping reads noise as a plateau. On the hotel reviews'
# validation split, 0.01 with ~40 batches an epoch stopped at 0.893 accuracy (log loss
# 0.256), 0.03 with ~160 at 0.901 (0.244; scikit-learn's best, C=16, 0.903 and 0.240).
NGRAM_LR = 0.03
NGRAM_BATCH = 256
NGRAM_EPOCHS = 50


@dataclass
class NgramFit:
    """A fitted n-gram model and its scores on the validation and test splits."""

    vectorizer: Any
    model: Any
    ngrams: int  # n-grams in the vocabulary ([UNK] aside)
    epochs: int
    val_scores: np.ndarray
    test_scores: np.ndarray

    def serving_parts(self, rnn_weight: float) -> tuple[Any, Any, float]:
        """(vectorizer, a clean uncompiled copy of the model, weight): what
        model.build_text_model takes."""
        clean = M.build_ngram_model(self.ngrams + 1)
        clean.set_weights(self.model.get_weights())
        return self.vectorizer, clean, rnn_weight


def fit_ngrams(config: TrainConfig, train_set: Dataset, val_set: Dataset, test_set: Dataset,
               reporter) -> NgramFit | None:
    """Fit the n-gram model: Adam on sparse features, early stopping on the validation
    loss (best weights restored). None when the training texts share no n-gram."""
    keras, tf = M.keras, M.tf
    started = time.perf_counter()
    vocab, idf = M.derive_ngrams(train_set.texts, config.tokenizer)
    if not vocab:
        reporter.message("n-gram model skipped: no token or token pair occurs in two texts")
        return None
    vectorizer = M.build_ngram_vectorizer(vocab, config.tokenizer)
    x_train, x_val, x_test = (M.ngram_counts(vectorizer, s.texts)
                              for s in (train_set, val_set, test_set))
    reporter.message(f"n-gram model: {len(vocab)} token 1-2-grams seen in 2+ texts")
    model = M.build_ngram_model(len(vocab) + 1, idf)
    model.compile(optimizer=keras.optimizers.Adam(NGRAM_LR), loss="binary_crossentropy",
                  metrics=["accuracy"], jit_compile=False)  # no XLA kernel for sparse ops

    # At least ~160 steps an epoch, so a small dataset does not need hundreds of epochs.
    batch_size = int(np.clip(len(train_set.texts) // 160, 16, NGRAM_BATCH))

    def batches(x, y, shuffle=False):
        data = tf.data.Dataset.from_tensor_slices((x, np.asarray(y, np.float32)))
        if shuffle:
            data = data.shuffle(len(y), seed=config.seed, reshuffle_each_iteration=True)
        return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=2,
                                         restore_best_weights=True)
    with stop_on_signals(model) as caught:
        fitted = model.fit(batches(x_train, train_set.labels, shuffle=True),
                           validation_data=batches(x_val, val_set.labels),
                           epochs=NGRAM_EPOCHS, verbose=0,
                           callbacks=[stop, keras.callbacks.TerminateOnNaN()])
    if caught:
        raise caught[0]
    val_scores = model.predict(batches(x_val, val_set.labels), verbose=0).reshape(-1)
    test_scores = model.predict(batches(x_test, test_set.labels), verbose=0).reshape(-1)
    if not (np.all(np.isfinite(val_scores)) and np.all(np.isfinite(test_scores))):
        raise UsageError("the n-gram model diverged (its outputs are NaN); try --no-ngrams")
    epochs = len(fitted.history["loss"])
    val_acc = float(np.mean((val_scores >= 0.5) == np.asarray(val_set.labels)))
    reporter.message(f"n-gram model: validation accuracy {val_acc:.4f} after {epochs} epochs "
                     f"({time.perf_counter() - started:.0f}s)")
    return NgramFit(vectorizer, model, len(vocab), epochs, val_scores, test_scores)
