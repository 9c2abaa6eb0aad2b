"""The n-gram model's refit on training + validation rows (ngrams.fit_ngrams): the served
model has seen the validation rows, while the blend is chosen and reported on the scores
of the fit that had not."""

import numpy as np
import pytest

from rnncli.config import TrainConfig
from rnncli.data import Dataset

pytestmark = pytest.mark.filterwarnings("ignore")


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
    return (_dataset(*rows(120)), _dataset(*rows(40, "zesty")), _dataset(*rows(30)))


def test_the_served_model_is_refit_on_training_and_validation_rows():
    from rnncli import ngrams

    train, val, test = _splits()
    config = TrainConfig(tokenizer="words")
    fit = ngrams.fit_ngrams(config, train, val, test, Quiet())
    assert fit.refit_rows == 160 and 1 <= fit.best_epochs <= fit.epochs
    assert "zesty" in fit.vectorizer.get_vocabulary()
    alone = ngrams.fit_ngrams(config, train, val, test, Quiet(), refit=False)
    assert "zesty" not in alone.vectorizer.get_vocabulary() and alone.refit_rows == 0
    # the blend is chosen on scores of the fit that never saw the validation rows: the
    # same as the fit without a refit
    np.testing.assert_allclose(fit.val_scores, alone.val_scores, atol=1e-6)
    np.testing.assert_allclose(fit.selection_test_scores, alone.test_scores, atol=1e-6)
    # the served model's own scores are not the selection fit's
    assert not np.allclose(fit.served_val_scores, fit.val_scores, atol=1e-3)
    record = fit.refit_record(test.labels, np.full(len(test.texts), 0.5, np.float32), 0.0)
    assert record["rows"] == 160 and record["epochs"] == fit.best_epochs
    assert record["before"]["ngram_test_accuracy"] == round(
        float(np.mean((alone.test_scores >= 0.5) == test.labels)), 4)
    assert record["before"]["test_accuracy"] == record["before"]["ngram_test_accuracy"]
