"""The n-gram model (ngrams.fit_ngrams): the exact regularized logistic regression, C
chosen on validation, and the refit on training + validation rows: the served model has
seen the validation rows, while the blend is chosen and reported on the scores of the fit
that had not."""

import numpy as np
import pytest

from rnncli.core.config import TrainConfig
from rnncli.data.dataset import Dataset

# rnncli.training.ngrams imports TensorFlow and fits Keras layers: slow, even without a network
pytestmark = [pytest.mark.filterwarnings("ignore"), pytest.mark.slow]


class Quiet:
    def message(self, text):
        pass


def _dataset(texts, labels) -> Dataset:
    return Dataset(texts=list(texts), labels=np.asarray(labels, np.int8),
                   label_names=("neg", "pos"), text_col="text", label_col="label",
                   fingerprint="x", rows_read=len(texts), skipped={}, skipped_lines={})


def _splits():
    rng = np.random.default_rng(0)
    good, bad = ["great", "fine", "lovely"], ["awful", "dull", "poor"]

    def rows(n, extra=""):
        labels = rng.integers(0, 2, n)
        texts = [" ".join(rng.choice(good if y else bad, 3)) + f" film {extra}" for y in labels]
        return texts, labels

    # "zesty" appears only in validation texts (in several), so only the refit knows it
    return (_dataset(*rows(120)), _dataset(*rows(60, "zesty")), _dataset(*rows(30)))


@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_the_served_model_is_refit_on_training_and_validation_rows(solver):
    from rnncli.training import ngrams

    train, val, test = _splits()
    config = TrainConfig(tokenizer="words", ngram_solver=solver)
    fit = ngrams.fit_ngrams(config, train, val, test, Quiet())
    assert fit.refit_rows == 180 and fit.solver["ngram_solver"] == solver
    assert (fit.solver["ngram_c"] in ngrams.C_GRID if solver == "lbfgs"
            else 1 <= fit.solver["ngram_epochs"] <= ngrams.NGRAM_EPOCHS)
    assert "zesty" in fit.vectorizer.get_vocabulary()
    alone = ngrams.fit_ngrams(config, train, val, test, Quiet(), refit=False)
    assert "zesty" not in alone.vectorizer.get_vocabulary() and alone.refit_rows == 0
    # the blend is chosen on scores of the fit that never saw the validation rows: the
    # same as the fit without a refit (Adam's shuffles are seeded)
    np.testing.assert_allclose(fit.val_scores, alone.val_scores, atol=1e-5)
    np.testing.assert_allclose(fit.selection_test_scores, alone.test_scores, atol=1e-5)
    # the served model's own scores are not the selection fit's
    assert not np.allclose(fit.served_val_scores, fit.val_scores, atol=1e-3)
    record = fit.refit_record(test.labels, np.full(len(test.texts), 0.5, np.float32), 0.0)
    assert record["rows"] == 180
    assert record["before"]["ngram_test_accuracy"] == round(
        float(np.mean((alone.test_scores >= 0.5) == test.labels)), 4)
    assert record["before"]["test_accuracy"] == record["before"]["ngram_test_accuracy"]


def test_no_refit_with_fewer_than_50_validation_rows():
    from rnncli.training import ngrams

    train, val, test = _splits()
    few = _dataset(val.texts[:49], val.labels[:49])
    fit = ngrams.fit_ngrams(TrainConfig(tokenizer="words", ngram_solver="lbfgs"), train, few,
                            test, Quiet())
    assert fit.refit_rows == 0 and fit.refit_record(test.labels, fit.test_scores, 0.5) is None
    assert fit.solver["ngram_c"] == ngrams.DEFAULT_C  # too few rows to choose C on
    assert "zesty" not in fit.vectorizer.get_vocabulary()


def test_the_fit_is_scikit_learns_logistic_regression():
    """_logistic minimizes the objective of LogisticRegression(C=c), whose solution on
    the same features it matches (scikit-learn is a test dependency, not a runtime one)."""
    import scipy.sparse as sp
    import sklearn.linear_model as sklearn

    from rnncli.training import ngrams

    rng = np.random.default_rng(1)
    x = sp.random(300, 40, density=0.1, random_state=2, format="csr")
    y = (x @ rng.normal(size=40) + rng.normal(0, 0.3, 300) > 0).astype(np.int64)
    for c in (0.5, 8.0):
        w, b = ngrams._logistic(x, ngrams._Labels(y), c)
        peer = sklearn.LogisticRegression(C=c, tol=1e-10, max_iter=10_000).fit(x, y)
        np.testing.assert_allclose(w, peer.coef_[0], atol=2e-3)
        assert abs(b - peer.intercept_[0]) < 2e-3


@pytest.mark.parametrize("balanced", [False, True])
def test_the_multinomial_fit_is_scikit_learns(balanced):
    """With more than two classes (and with class weights) the exact fit is scikit-learn's
    multinomial LogisticRegression, and _predict gives its probabilities."""
    import scipy.sparse as sp
    import sklearn.linear_model as sklearn

    from rnncli.training import ngrams

    rng = np.random.default_rng(3)
    x = sp.random(400, 30, density=0.15, random_state=4, format="csr")
    y = np.argmax(x @ rng.normal(size=(30, 4)) + rng.normal(0, 0.3, (400, 4))
                  + [0, 0, 0, -0.8], axis=1)  # the last class rarer
    counts = np.bincount(y, minlength=4)
    per_class = len(y) / (4 * counts) if balanced else np.ones(4)
    labels = ngrams._Labels(y, 4, per_class[y] if balanced else None)
    w, b = ngrams._logistic(x, labels, 4.0)
    peer = sklearn.LogisticRegression(C=4.0, tol=1e-10, max_iter=10_000,
                                      class_weight="balanced" if balanced else None).fit(x, y)
    # softmax weights are defined up to a shift shared by the classes; both fix it by
    # the L2 penalty (the weights of each feature sum to 0), the biases are compared
    # through the probabilities
    np.testing.assert_allclose(w, peer.coef_.T, atol=2e-3)
    np.testing.assert_allclose(ngrams._predict(x, (w, b)), peer.predict_proba(x), atol=1e-3)


def test_the_served_keras_model_gives_the_fitted_scores():
    import tensorflow as tf

    from rnncli.training import ngrams

    train, val, test = _splits()
    fit = ngrams.fit_ngrams(TrainConfig(tokenizer="words", ngram_solver="lbfgs"), train, val,
                            test, Quiet())
    served = fit.model(fit.vectorizer(tf.constant(test.texts))).numpy().reshape(-1)
    np.testing.assert_allclose(served, fit.test_scores, atol=1e-5)
