"""HEAVY: fitting the n-gram model (logistic regression over token 1-2-gram TF-IDF):
a selection fit with early stopping on the validation rows, then a refit on the training
and validation rows together for the best epoch count.

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
    """A fitted n-gram model and its scores on the validation and test splits.

    ``model`` and ``vectorizer`` are the refit on training + validation rows (when
    ``refit_rows``), the model that is served; ``val_scores`` are the selection fit's (it
    never saw those rows), so the blend is chosen and reported honestly; ``test_scores``
    are the served model's; ``served_val_scores`` the served model's on the validation
    rows, which only the check of the saved model uses.
    """

    vectorizer: Any
    model: Any
    ngrams: int  # n-grams in the vocabulary ([UNK] aside)
    epochs: int  # epochs of the selection fit (the best one plus the patience)
    val_scores: np.ndarray
    test_scores: np.ndarray
    served_val_scores: np.ndarray
    best_epochs: int = 0  # the selection fit's best epoch, 1-based: the refit's epochs
    refit_rows: int = 0  # rows of the refit (training + validation), 0 without one
    selection_test_scores: np.ndarray | None = None  # before the refit

    def serving_parts(self, rnn_weight: float) -> tuple[Any, Any, float]:
        """(vectorizer, a clean uncompiled copy of the model, weight): what
        model.build_text_model takes."""
        clean = M.build_ngram_model(self.ngrams + 1)
        clean.set_weights(self.model.get_weights())
        return self.vectorizer, clean, rnn_weight

    def refit_record(self, test_labels, rnn_test: np.ndarray, rnn_weight: float) -> dict | None:
        """What the manifest keeps of the refit: its rows and epochs, and the test accuracy
        of the n-gram part and of the blend before it (the selection fit's)."""
        if not self.refit_rows or self.selection_test_scores is None:
            return None
        y = np.asarray(test_labels)
        blended = rnn_weight * rnn_test + (1 - rnn_weight) * self.selection_test_scores
        return {"rows": self.refit_rows, "epochs": self.best_epochs,
                "before": {"ngram_test_accuracy": _accuracy(y, self.selection_test_scores),
                           "test_accuracy": _accuracy(y, blended)}}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _accuracy(labels: np.ndarray, scores: np.ndarray) -> float | None:
    return round(float(np.mean((scores >= 0.5) == labels)), 4) if len(labels) else None


def fit_ngrams(config: TrainConfig, train_set: Dataset, val_set: Dataset, test_set: Dataset,
               reporter, *, refit: bool = True) -> NgramFit | None:
    """Fit the n-gram model: Adam on sparse features, early stopping on the validation
    loss (best weights restored). Then, with ``refit``, fit it again from scratch on the
    training and validation rows together, for the best epoch count found (as the linear
    peers in benchmarks/accuracy.py refit with the C chosen on validation): on the hotel
    reviews' three benchmark splits that raised the blend's test accuracy by 0.6-0.7 points
    each. None when the training texts share no n-gram."""
    started = time.perf_counter()
    # At least ~160 steps an epoch, so a small dataset does not need hundreds of epochs;
    # the refit keeps this batch size, so its epochs are like the selection fit's.
    batch_size = int(np.clip(len(train_set.texts) // 160, 16, NGRAM_BATCH))
    selection = _fit(config, train_set.texts, train_set.labels, batch_size=batch_size,
                     val=(val_set.texts, val_set.labels))
    if selection is None:
        reporter.message("n-gram model skipped: no token or token pair occurs in two texts")
        return None
    vectorizer, model, size, epochs, best = selection
    reporter.message(f"n-gram model: {size} token 1-2-grams seen in 2+ texts")
    val_scores = _scores(vectorizer, model, val_set.texts)
    test_scores = _scores(vectorizer, model, test_set.texts)
    val_acc = _accuracy(np.asarray(val_set.labels), val_scores)
    reporter.message(f"n-gram model: validation accuracy {_fmt(val_acc)} after {epochs} epochs "
                     f"(best {best}; {time.perf_counter() - started:.0f}s)")
    fit = NgramFit(vectorizer, model, size, epochs, val_scores, test_scores, val_scores, best)
    if not refit or not len(val_set.texts):
        return fit
    started = time.perf_counter()
    texts = list(train_set.texts) + list(val_set.texts)
    labels = np.concatenate([np.asarray(train_set.labels), np.asarray(val_set.labels)])
    again = _fit(config, texts, labels, batch_size=batch_size, epochs=best)
    if again is None:  # cannot happen: the training rows alone had shared n-grams
        return fit
    vectorizer, model, size, _, _ = again
    reporter.message(f"n-gram model: refit on the {len(texts)} training and validation rows "
                     f"for {best} epochs ({time.perf_counter() - started:.0f}s)")
    return NgramFit(vectorizer, model, size, epochs, val_scores,
                    _scores(vectorizer, model, test_set.texts),
                    _scores(vectorizer, model, val_set.texts), best, len(texts), test_scores)


def _fit(config: TrainConfig, texts: list[str], labels, *, batch_size: int, val=None,
         epochs: int = NGRAM_EPOCHS):
    """One fit from scratch: (vectorizer, model, n-grams, epochs run, best epoch), or None
    when the texts share no n-gram. With ``val`` (texts, labels), early stopping on its
    loss restores the best weights; without, exactly ``epochs`` epochs."""
    keras, tf = M.keras, M.tf
    vocab, idf = M.derive_ngrams(texts, config.tokenizer)
    if not vocab:
        return None
    vectorizer = M.build_ngram_vectorizer(vocab, config.tokenizer)
    model = M.build_ngram_model(len(vocab) + 1, idf)
    model.compile(optimizer=keras.optimizers.Adam(NGRAM_LR), loss="binary_crossentropy",
                  metrics=["accuracy"], jit_compile=False)  # no XLA kernel for sparse ops
    data = tf.data.Dataset.from_tensor_slices((M.ngram_counts(vectorizer, texts),
                                               np.asarray(labels, np.float32)))
    data = data.shuffle(len(texts), seed=config.seed, reshuffle_each_iteration=True)
    callbacks = [keras.callbacks.TerminateOnNaN()]
    validation = None
    if val is not None:
        stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=2,
                                             restore_best_weights=True)
        callbacks.append(stop)
        validation = tf.data.Dataset.from_tensor_slices(
            (M.ngram_counts(vectorizer, val[0]), np.asarray(val[1], np.float32))).batch(batch_size)
    with stop_on_signals(model) as caught:
        fitted = model.fit(data.batch(batch_size).prefetch(tf.data.AUTOTUNE),
                           validation_data=validation, epochs=epochs, verbose=0,
                           callbacks=callbacks)
    if caught:
        raise caught[0]
    run = len(fitted.history["loss"])
    best = run
    if val is not None:
        losses = fitted.history["val_loss"]
        best = int(np.argmin(losses)) + 1
    return vectorizer, model, len(vocab), run, best


def _scores(vectorizer, model, texts: list[str]) -> np.ndarray:
    if not texts:
        return np.zeros(0, np.float32)
    tf = M.tf
    data = tf.data.Dataset.from_tensor_slices(M.ngram_counts(vectorizer, texts)).batch(1024)
    scores = model.predict(data, verbose=0).reshape(-1)
    if not np.all(np.isfinite(scores)):
        raise UsageError("the n-gram model diverged (its outputs are NaN); try --no-ngrams")
    return scores
