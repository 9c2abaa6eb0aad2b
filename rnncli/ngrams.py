"""HEAVY: fitting the n-gram model, a logistic regression over token 1-2-grams.

The graph pieces (vectorizer, NgramLogistic) are built by model.py; this module fits
them. Its blend with the recurrent network is chosen in blend.py.

The fit is exact (L-BFGS on the L2-penalized log loss, as scikit-learn's
LogisticRegression solves it), with the penalty's C chosen on the validation rows and the
model then refitted on training + validation rows with that C, as the benchmark's linear
peers are. The validation scores the blend is chosen on come from the fit on training
rows alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize, sparse

from rnncli import model as M
from rnncli.config import TrainConfig
from rnncli.data import Dataset

# Inverse penalty strengths tried on the validation rows (C: scikit-learn's meaning).
C_GRID = (0.03, 0.06, 0.125, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)
NB_ALPHA = 1.0  # NBSVM's smoothing of the per-class counts


@dataclass
class NgramFit:
    """A fitted n-gram model and its scores on the validation and test splits.

    ``val_scores``: from the fit on the training rows (what the blend is chosen on);
    ``final_val_scores`` and ``test_scores``: from the model refitted on training +
    validation rows, which is the one saved."""

    vectorizer: Any
    model: Any
    ngrams: int  # n-grams in the vocabulary ([UNK] aside)
    C: float
    val_scores: np.ndarray
    final_val_scores: np.ndarray
    test_scores: np.ndarray

    def serving_parts(self, rnn_weight: float) -> tuple[Any, Any, float]:
        """(vectorizer, the model, weight): what model.build_text_model takes."""
        return self.vectorizer, self.model, rnn_weight


def fit_ngrams(config: TrainConfig, train_set: Dataset, val_set: Dataset, test_set: Dataset,
               reporter) -> NgramFit | None:
    """Fit the n-gram model; None when the training texts share no n-gram."""
    started = time.perf_counter()
    vocab, idf = M.derive_ngrams(train_set.texts, config.tokenizer)
    if not vocab:
        reporter.message("n-gram model skipped: no token or token pair occurs in two texts")
        return None
    vectorizer = M.build_ngram_vectorizer(vocab, config.tokenizer)
    x_train, x_val, x_test = (_csr(M.ngram_counts(vectorizer, s.texts), len(vocab) + 1)
                              for s in (train_set, val_set, test_set))
    y_train, y_val = (np.asarray(s.labels, np.float64) for s in (train_set, val_set))
    weights = (nb_ratios(x_train, y_train) if config.ngram_features == "nb" else idf)
    f_train, f_val, f_test = (features(x, weights, config.ngram_features)
                              for x in (x_train, x_val, x_test))
    reporter.message(f"n-gram model: {len(vocab)} token 1-2-grams seen in 2+ texts")
    best, theta = None, None
    for C in C_GRID:  # ascending: each fit starts from the last
        theta = logistic(f_train, y_train, C, theta)
        scores = _sigmoid(f_val @ theta[:-1] + theta[-1])
        loss = _log_loss(y_val, scores)
        if best is None or loss < best[0] - 1e-9:
            best = (loss, C, scores)
    _, C, val_scores = best
    final = logistic(sparse.vstack([f_train, f_val]).tocsr(), np.concatenate([y_train, y_val]),
                     C, None)
    ngram_model = M.build_ngram_model(len(vocab) + 1, weights, config.ngram_features)
    layer = ngram_model.get_layer("ngram_logistic")
    layer.kernel.assign(final[:-1].reshape(-1, 1).astype(np.float32))
    layer.bias.assign(final[-1:].astype(np.float32))
    final_val = _sigmoid(f_val @ final[:-1] + final[-1]).astype(np.float32)
    test_scores = _sigmoid(f_test @ final[:-1] + final[-1]).astype(np.float32)
    val_acc = float(np.mean((val_scores >= 0.5) == y_val))
    reporter.message(f"n-gram model: validation accuracy {val_acc:.4f} with C={C:g} (chosen "
                     "on the validation split), then refitted on training + validation "
                     f"rows ({time.perf_counter() - started:.0f}s)")
    return NgramFit(vectorizer, ngram_model, len(vocab), C, val_scores.astype(np.float32),
                    final_val, test_scores)


def _csr(counts, width: int) -> sparse.csr_matrix:
    """A tf.SparseTensor of counts as a SciPy CSR matrix."""
    index = counts.indices.numpy()
    return sparse.csr_matrix((counts.values.numpy().astype(np.float64),
                              (index[:, 0], index[:, 1])),
                             shape=(int(counts.dense_shape[0]), width))


def nb_ratios(counts: sparse.csr_matrix, labels: np.ndarray) -> np.ndarray:
    """NBSVM's log-count ratios r = log((p / |p|1) / (q / |q|1)) of binary features, p and
    q the smoothed counts over positive and negative rows; column 0 ([UNK]) gets 0."""
    present = (counts > 0).astype(np.float64)
    p = NB_ALPHA + np.asarray(present[labels == 1].sum(0)).ravel()
    q = NB_ALPHA + np.asarray(present[labels == 0].sum(0)).ravel()
    ratios = np.log((p / p.sum()) / (q / q.sum()))
    ratios[0] = 0.0
    return ratios.astype(np.float32)


def features(counts: sparse.csr_matrix, weights: np.ndarray, kind: str) -> sparse.csr_matrix:
    """What layers.NgramLogistic computes, in SciPy: the same numbers."""
    x = counts.copy()
    if kind == "nb":
        x.data = np.ones_like(x.data)
        return (x @ sparse.diags(weights.astype(np.float64))).tocsr()
    x.data = 1.0 + np.log(x.data)
    x = (x @ sparse.diags(weights.astype(np.float64))).tocsr()
    norms = np.sqrt(np.asarray(x.multiply(x).sum(1)).ravel() + 1e-12)
    return (sparse.diags(1.0 / norms) @ x).tocsr()


def logistic(x: sparse.csr_matrix, y: np.ndarray, C: float,
             start: np.ndarray | None) -> np.ndarray:
    """L2-penalized logistic regression, C * sum(log loss) + |w|^2 / 2 (the bias is not
    penalized), by L-BFGS; returns (w..., b)."""
    sign = 2.0 * y - 1.0

    def objective(theta):
        z = x @ theta[:-1] + theta[-1]
        margin = -sign * z
        loss = C * np.logaddexp(0.0, margin).sum() + 0.5 * theta[:-1] @ theta[:-1]
        g = -C * sign * _sigmoid(margin)
        grad = np.concatenate([x.T @ g + theta[:-1], [g.sum()]])
        return loss, grad

    start = np.zeros(x.shape[1] + 1) if start is None else start
    result = optimize.minimize(objective, start, jac=True, method="L-BFGS-B",
                               options={"maxiter": 1000})
    return result.x


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
