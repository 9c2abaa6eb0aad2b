"""The n-gram model's fit: the SciPy features it is fitted on are what the Keras layer
computes, NB ratios point the right way, and the solver finds the penalized optimum."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize, sparse

pytestmark = pytest.mark.slow  # imports TensorFlow


def _counts(rng, rows=40, width=30):
    dense = rng.poisson(0.3, size=(rows, width)).astype(np.float64)
    dense[:, 0] = 0  # [UNK]
    return sparse.csr_matrix(dense)


@pytest.mark.parametrize("kind", ["nb", "tfidf"])
def test_fitted_features_are_what_the_layer_computes(kind):
    import tensorflow as tf

    from rnncli import model as M
    from rnncli.ngrams import features

    rng = np.random.default_rng(0)
    counts = _counts(rng)
    weights = rng.normal(size=counts.shape[1]).astype(np.float32)
    weights[0] = 0
    kernel = rng.normal(size=counts.shape[1])
    ngram = M.build_ngram_model(counts.shape[1], weights, kind)
    layer = ngram.get_layer("ngram_logistic")
    layer.kernel.assign(kernel.reshape(-1, 1).astype(np.float32))
    coo = counts.tocoo()
    sparse_input = tf.sparse.reorder(tf.SparseTensor(
        np.stack([coo.row, coo.col], 1).astype(np.int64), coo.data.astype(np.float32),
        counts.shape))
    got = ngram(sparse_input).numpy().reshape(-1)
    z = features(counts, weights, kind) @ kernel
    np.testing.assert_allclose(got, 1 / (1 + np.exp(-z)), atol=1e-5)


def test_nb_ratios_favour_the_class_a_feature_comes_with():
    from rnncli.ngrams import nb_ratios

    counts = sparse.csr_matrix(np.array([[0, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]], float))
    r = nb_ratios(counts, np.array([1, 1, 0, 0]))
    assert r[0] == 0 and r[1] > 0 > r[2]


def test_logistic_finds_the_penalized_optimum():
    from rnncli.ngrams import logistic

    rng = np.random.default_rng(1)
    x = _counts(rng, rows=60, width=12)
    y = (rng.random(60) < 0.5).astype(float)
    C = 0.7
    theta = logistic(x, y, C, None)

    def objective(t):
        z = x @ t[:-1] + t[-1]
        return C * np.logaddexp(0, -(2 * y - 1) * z).sum() + 0.5 * t[:-1] @ t[:-1]

    assert np.abs(optimize.approx_fprime(theta, objective, 1e-7)).max() < 1e-3  # a minimum
    reference = optimize.minimize(objective, np.zeros(13), method="Nelder-Mead",
                                  options={"maxiter": 100000, "xatol": 1e-8, "fatol": 1e-10})
    assert objective(theta) <= reference.fun + 1e-6
