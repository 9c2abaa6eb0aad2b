"""HEAVY: fitting the n-gram model, a logistic regression over the TF-IDF of token 1- to
``ngram_order``-grams (layers.NgramLogistic serves it), by one of two solvers
(``ngram_solver``; "auto" follows the tokens, as model.derive_settings says):

- "adam" (words): Adam from zero weights with early stopping on the validation loss,
  which acts as the regularizer;
- "lbfgs" (Chinese and Japanese characters): the exact L2-regularized logistic
  regression, its strength C chosen on the validation rows (the lowest log loss over
  C_GRID), minimized by scipy's L-BFGS as scikit-learn's LogisticRegression(solver=
  "lbfgs") minimizes it (scikit-learn is not a dependency for one function; scipy already
  is, for vectors.py).

Measured with the same recurrent networks (benchmarks in docs/accuracy.md): on five splits of
short IMDB reviews the exact fit's blend scored 0.889 against Adam's 0.900 (word
1-2-grams); on seven splits of the hotel reviews 0.902 with the exact fit and character
1-3-grams, 0.898 with the exact fit and 1-2-grams, 0.895 with Adam and 1-2-grams (Adam
with 1-3-grams did worse on three splits).

Either way, the model that is served is then fitted again on the training and validation
rows together with what the first fit chose (C, or the epoch count), as the linear peers
in benchmarks/accuracy.py are. The blend with the recurrent network (blend.py) is chosen
on the first fit's validation scores, which never saw those rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnncli.core.config import TrainConfig, ngram_span, output_width
from rnncli.core.errors import UsageError
from rnncli.core.scoring import as_scores
from rnncli.data.dataset import Dataset
from rnncli.network import model as M
from rnncli.training.blend import BLEND_MIN_ROWS, accuracy, log_loss
from rnncli.training.fitloop import stop_on_signals

# Adam: a higher learning rate than the RNN's, since the weights on unit-length TF-IDF rows
# must grow large, and enough steps an epoch (see _Adam) to reach the logistic
# regression's optimum before early stopping reads noise as a plateau. On the hotel
# reviews' validation split, 0.01 with ~40 batches an epoch stopped at 0.893 accuracy (log
# loss 0.256), 0.03 with ~160 at 0.901 (0.244; scikit-learn's best, C=16, 0.903 and 0.240).
NGRAM_LR = 0.03
NGRAM_BATCH = 256
NGRAM_EPOCHS = 50
# L-BFGS: inverse regularization strengths tried on the validation rows (scikit-learn's C:
# the objective is C x the summed log loss + |w|^2 / 2; the bias is not regularized).
C_GRID = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)
DEFAULT_C = 16.0  # with fewer than BLEND_MIN_ROWS validation rows, too few to choose on
MAX_ITERATIONS = 1000
TOLERANCE = 1e-6  # L-BFGS's projected-gradient tolerance, relative to C x rows


@dataclass
class NgramFit:
    """A fitted n-gram model and its scores on the validation and test splits.

    ``model`` and ``vectorizer`` are the refit on training + validation rows (when
    ``refit_rows``), the model that is served; ``val_scores`` are the first fit's (it never
    saw those rows), so the blend is chosen and reported honestly; ``test_scores`` are the
    served model's; ``served_val_scores`` the served model's on the validation rows, which
    only the check of the saved model uses.
    """

    vectorizer: Any
    model: Any
    ngrams: int  # n-grams in the vocabulary ([UNK] aside)
    solver: dict[str, Any]  # what the manifest's blend keeps of the fit (ngram_solver, ...)
    val_scores: np.ndarray
    test_scores: np.ndarray
    served_val_scores: np.ndarray
    refit_rows: int = 0  # rows of the refit (training + validation), 0 without one
    selection_test_scores: np.ndarray | None = None  # the first fit's

    def serving_parts(self, rnn_weight: float) -> tuple[Any, Any, float]:
        """(vectorizer, a clean uncompiled copy of the model, weight): what
        model.build_text_model takes (a compiled model would save its optimizer, which
        the archive check refuses)."""
        outputs = self.model.get_layer("ngram_logistic").outputs
        clean = M.build_ngram_model(self.ngrams + 1, outputs=outputs)
        clean.set_weights(self.model.get_weights())
        return self.vectorizer, clean, rnn_weight

    def refit_record(self, test_labels, rnn_test: np.ndarray, rnn_weight: float) -> dict | None:
        """What the manifest keeps of the refit: its rows, and the test accuracy of the
        n-gram part and of the blend with the first fit instead."""
        if not self.refit_rows or self.selection_test_scores is None:
            return None
        y = np.asarray(test_labels)
        blended = rnn_weight * rnn_test + (1 - rnn_weight) * self.selection_test_scores
        return {"rows": self.refit_rows,
                "before": {"ngram_test_accuracy": accuracy(y, self.selection_test_scores),
                           "test_accuracy": accuracy(y, blended)}}


def _epochs(n: int) -> str:
    return f"{n} epoch{'s' if n != 1 else ''}"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def fit_ngrams(config: TrainConfig, train_set: Dataset, val_set: Dataset, test_set: Dataset,
               reporter, *, refit: bool = True,
               class_weights: np.ndarray | None = None) -> NgramFit | None:
    """Fit the n-gram model on the training rows with ``config.ngram_solver`` (see the top
    of this module), then (with ``refit`` and at least BLEND_MIN_ROWS validation rows) fit
    the served model on the training and validation rows with what the first fit chose.
    None when the training texts share no n-gram. With more than two classes the model is
    the multinomial (softmax) regression; ``class_weights``: one weight per class for the
    rows' losses, or None."""
    started = time.perf_counter()
    order, solver = config.ngram_order or 2, config.ngram_solver or "adam"
    first = _Features.derive(train_set.texts, config.tokenizer, order)
    if first is None:
        reporter.message("n-gram model skipped: no token or token pair occurs in two texts")
        return None
    reporter.message(f"n-gram model: {first.size} token {ngram_span(order)} seen in 2+ texts")
    y_train, y_val = _Labels.of(train_set, class_weights), _Labels.of(val_set, class_weights)
    enough = len(val_set.texts) >= BLEND_MIN_ROWS
    fit = (_Exact if solver == "lbfgs" else _Adam)(config, len(train_set.texts), enough)
    model = fit.first(first, train_set.texts, y_train, val_set.texts, y_val)
    val_scores = first.scores(model, val_set.texts)
    test_scores = first.scores(model, test_set.texts)
    reporter.message(f"n-gram model: {fit.chosen()}, validation accuracy "
                     f"{_fmt(accuracy(y_val.y, val_scores))} "
                     f"({time.perf_counter() - started:.0f}s)")
    if not refit or not enough:
        return NgramFit(first.vectorizer, model, first.size, fit.record(), val_scores,
                        test_scores, val_scores)
    started = time.perf_counter()
    texts = list(train_set.texts) + list(val_set.texts)
    both = _Features.derive(texts, config.tokenizer, order)
    model = fit.again(both, texts, y_train.join(y_val))
    reporter.message(f"n-gram model: refit on the {len(texts)} training and validation rows "
                     f"({fit.short()}), {both.size} {ngram_span(order)} "
                     f"({time.perf_counter() - started:.0f}s)")
    return NgramFit(both.vectorizer, model, both.size, fit.record(), val_scores,
                    both.scores(model, test_set.texts), both.scores(model, val_set.texts),
                    len(texts), test_scores)


class _Labels:
    """A split's class indexes, the number of classes, and each row's class weight (None:
    all 1)."""

    def __init__(self, y, classes: int = 2, weights: np.ndarray | None = None):
        self.y, self.classes, self.weights = np.asarray(y, np.int64), classes, weights

    @classmethod
    def of(cls, data: Dataset, class_weights: np.ndarray | None = None) -> _Labels:
        """``data``'s labels; ``class_weights``: one weight per class, or None."""
        y = np.asarray(data.labels, np.int64)
        return cls(y, len(data.label_names),
                   None if class_weights is None else np.asarray(class_weights, np.float64)[y])

    @property
    def outputs(self) -> int:
        return output_width(self.classes)

    def join(self, other: _Labels) -> _Labels:
        weights = (None if self.weights is None
                   else np.concatenate([self.weights, other.weights]))
        return _Labels(np.concatenate([self.y, other.y]), self.classes, weights)

    def loss(self, scores: np.ndarray) -> float:
        return log_loss(self.y, scores, self.weights)


class _Exact:
    """The exact L2-regularized logistic regression (multinomial with more than two
    classes), C chosen on validation log loss."""

    def __init__(self, config: TrainConfig, train_rows: int, choose: bool):
        self.choose, self.c = choose, DEFAULT_C

    def first(self, features, texts, y: _Labels, val_texts, y_val: _Labels):
        x, x_val = features.matrix(texts), features.matrix(val_texts)
        best, start = None, None
        for value in (C_GRID if self.choose else (DEFAULT_C,)):  # each starts from the last
            start = _logistic(x, y, value, start=start)
            loss = y_val.loss(_predict(x_val, start)) if self.choose else 0.0
            if best is None or loss < best[0]:
                best = (loss, value, start)
        _, self.c, solution = best
        return features.keras_model(solution)

    def again(self, features, texts, y: _Labels):
        return features.keras_model(_logistic(features.matrix(texts), y, self.c))

    def chosen(self) -> str:
        return f"C={self.c:g} " + (
            f"(the lowest validation log loss of {', '.join(f'{v:g}' for v in C_GRID)})"
            if self.choose else "(too few validation rows to choose on)")

    def short(self) -> str:
        return f"C={self.c:g}"

    def record(self) -> dict[str, Any]:
        return {"ngram_solver": "lbfgs", "ngram_c": self.c}


class _Adam:
    """Adam from zero weights with early stopping on the validation loss (best weights
    restored); the refit runs for the best epoch count, with the same batch size."""

    def __init__(self, config: TrainConfig, train_rows: int, choose: bool):
        self.seed, self.epochs, self.best = config.seed, 0, NGRAM_EPOCHS
        # At least ~160 steps an epoch, so a small dataset does not need hundreds of epochs.
        self.batch_size = int(np.clip(train_rows // 160, 16, NGRAM_BATCH))

    def first(self, features, texts, y: _Labels, val_texts, y_val: _Labels):
        model, history, stop = self._fit(features, texts, y, NGRAM_EPOCHS,
                                         (val_texts, y_val) if len(val_texts) else None)
        self.epochs = len(history["loss"])
        # the epoch whose weights early stopping restored (1-based)
        self.best = stop.best_epoch + 1 if stop is not None else self.epochs
        return model

    def again(self, features, texts, y: _Labels):
        return self._fit(features, texts, y, self.best, None)[0]

    def _fit(self, features, texts, y: _Labels, epochs: int, val):
        keras, tf = M.keras, M.tf
        model = M.build_ngram_model(features.size + 1, features.idf.astype(np.float32),
                                    outputs=y.outputs)
        model.compile(optimizer=keras.optimizers.Adam(NGRAM_LR),
                      loss=("binary_crossentropy" if y.outputs == 1
                            else "sparse_categorical_crossentropy"),
                      jit_compile=False)  # no XLA kernel for sparse ops

        def batches(texts, labels: _Labels):
            parts = (M.ngram_counts(features.vectorizer, texts),
                     labels.y.astype(np.float32 if labels.outputs == 1 else np.int32))
            if labels.weights is not None:
                parts += (labels.weights.astype(np.float32),)
            return tf.data.Dataset.from_tensor_slices(parts)

        data = batches(texts, y).shuffle(len(texts), seed=self.seed,
                                         reshuffle_each_iteration=True)
        callbacks, stop = [keras.callbacks.TerminateOnNaN()], None
        if val is not None:
            stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=2,
                                                 restore_best_weights=True)
            callbacks.append(stop)
        with stop_on_signals(model) as caught:
            fitted = model.fit(data.batch(self.batch_size).prefetch(tf.data.AUTOTUNE),
                               validation_data=(batches(*val).batch(self.batch_size)
                                                if val is not None else None),
                               epochs=epochs, verbose=0, callbacks=callbacks)
        if caught:
            raise caught[0]
        return model, fitted.history, stop

    def chosen(self) -> str:
        return f"Adam, {_epochs(self.best)} (of {self.epochs}, early stopping)"

    def short(self) -> str:
        return f"Adam, {_epochs(self.best)}"

    def record(self) -> dict[str, Any]:
        return {"ngram_solver": "adam", "ngram_epochs": self.epochs,
                "ngram_best_epoch": self.best}


@dataclass
class _Features:
    """The n-gram vocabulary of some texts, and their TF-IDF rows as NgramLogistic makes
    them: (1 + log count) x idf, each row scaled to unit length."""

    vectorizer: Any
    idf: np.ndarray  # [UNK] first, with idf 0
    size: int  # n-grams, [UNK] aside

    @classmethod
    def derive(cls, texts: list[str], tokenizer: str, order: int) -> _Features | None:
        vocab, idf = M.derive_ngrams(texts, tokenizer, order)
        if not vocab:
            return None
        return cls(M.build_ngram_vectorizer(vocab, tokenizer, order), idf.astype(np.float64),
                   len(vocab))

    def matrix(self, texts: list[str]):
        import scipy.sparse as sp

        counts = M.ngram_counts(self.vectorizer, texts)
        index = counts.indices.numpy()
        values = (1.0 + np.log(counts.values.numpy().astype(np.float64))) * self.idf[index[:, 1]]
        norms = np.bincount(index[:, 0], weights=values * values, minlength=len(texts))
        values = values / np.sqrt(norms[index[:, 0]] + 1e-12)
        return sp.csr_matrix((values, (index[:, 0], index[:, 1])),
                             shape=(len(texts), self.size + 1))

    def scores(self, model, texts: list[str]) -> np.ndarray:
        """The model's probabilities (Keras, as served): (n,) or (n, k)."""
        outputs = model.get_layer("ngram_logistic").outputs
        if not texts:
            return np.zeros((0,) if outputs == 1 else (0, outputs), np.float32)
        data = M.tf.data.Dataset.from_tensor_slices(
            M.ngram_counts(self.vectorizer, texts)).batch(1024)
        scores = as_scores(model.predict(data, verbose=0))
        if not np.all(np.isfinite(scores)):
            raise UsageError("the n-gram model diverged (its outputs are NaN); try "
                             "--no-ngrams")
        return scores

    def keras_model(self, solution: tuple[np.ndarray, np.ndarray]):
        """The served n-gram model (model.build_ngram_model) with these weights."""
        weights, bias = solution
        outputs = 1 if weights.ndim == 1 else weights.shape[1]
        model = M.build_ngram_model(self.size + 1, self.idf.astype(np.float32),
                                    outputs=outputs)
        layer = model.get_layer("ngram_logistic")
        layer.kernel.assign(weights.astype(np.float32).reshape(-1, outputs))
        layer.bias.assign(np.asarray(bias, np.float32).reshape(outputs))
        return model


def _logistic(x, y: _Labels, c: float, start: tuple | None = None):
    """(weights, bias) minimizing c x the sum of the rows' (weighted) log losses +
    |weights|^2 / 2, by L-BFGS: binary for two classes ((d,) weights, a float bias), else
    multinomial ((d, k) weights, (k,) biases), as scikit-learn's LogisticRegression."""
    from scipy.optimize import minimize

    rows, columns = x.shape
    k = y.outputs
    xt = x.T.tocsr()
    weights = np.ones(rows) if y.weights is None else y.weights
    objective = (_binary_objective(x, xt, y.y, weights, c) if k == 1
                 else _softmax_objective(x, xt, y.y, weights, c, k))
    theta = (np.zeros((columns + 1) * k) if start is None
             else np.concatenate([np.reshape(start[0], -1), np.reshape(start[1], -1)]))
    result = minimize(objective, theta, jac=True, method="L-BFGS-B",
                      options={"maxiter": MAX_ITERATIONS,
                               "gtol": TOLERANCE * c * float(np.sum(weights))})
    if not np.all(np.isfinite(result.x)):
        raise UsageError("the n-gram model diverged (its weights are not finite); try "
                         "--no-ngrams")
    if k == 1:
        return result.x[:-1], float(result.x[-1])
    return result.x[:-k].reshape(columns, k), result.x[-k:]


def _binary_objective(x, xt, y: np.ndarray, weights: np.ndarray, c: float):
    sign = 2.0 * y - 1.0

    def objective(theta):
        w, b = theta[:-1], theta[-1]
        margin = sign * (x @ w + b)
        loss = c * np.sum(weights * np.logaddexp(0.0, -margin)) + 0.5 * w @ w
        residual = -c * weights * sign * _sigmoid(-margin)  # d loss / d logit, per row
        return loss, np.concatenate([xt @ residual + w, [residual.sum()]])

    return objective


def _softmax_objective(x, xt, y: np.ndarray, weights: np.ndarray, c: float, k: int):
    columns = x.shape[1]
    onehot = np.eye(k)[y]

    def objective(theta):
        w, b = theta[:-k].reshape(columns, k), theta[-k:]
        logits = x @ w + b
        log_norm = _logsumexp(logits)
        loss = (c * np.sum(weights * (log_norm - np.sum(logits * onehot, axis=1)))
                + 0.5 * np.sum(w * w))
        residual = c * weights[:, None] * (np.exp(logits - log_norm[:, None]) - onehot)
        return loss, np.concatenate([(xt @ residual + w).reshape(-1), residual.sum(0)])

    return objective


def _logsumexp(logits: np.ndarray) -> np.ndarray:
    top = logits.max(axis=1)
    return top + np.log(np.sum(np.exp(logits - top[:, None]), axis=1))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))


def _predict(x, solution: tuple) -> np.ndarray:
    """Probabilities of rows ``x``: the positive class's (n,), or every class's (n, k)."""
    weights, bias = solution
    if weights.ndim == 1:
        if x.shape[0] == 0:
            return np.zeros(0, np.float32)
        return _sigmoid(x @ weights + bias).astype(np.float32)
    logits = x @ weights + bias
    if x.shape[0] == 0:
        return np.zeros((0, weights.shape[1]), np.float32)
    return np.exp(logits - _logsumexp(logits)[:, None]).astype(np.float32)
