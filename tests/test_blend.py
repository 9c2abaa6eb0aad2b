"""The blend weight between the RNN and the n-gram model (pure numpy, no TensorFlow)."""

from types import SimpleNamespace

import numpy as np

from rnncli.core.scoring import with_temperature
from rnncli.training.blend import calibrate, choose_blend, log_loss

RNG = np.random.default_rng(0)
LABELS = RNG.integers(0, 2, 400)
GOOD = np.clip(LABELS * 0.8 + 0.1 + RNG.normal(0, 0.05, 400), 0.01, 0.99)
NOISE = RNG.uniform(0.2, 0.8, 400)


def ngram(val_scores, test_scores):
    """What choose_blend reads of an ngrams.NgramFit."""
    return SimpleNamespace(ngrams=10, solver={"ngram_solver": "adam"}, val_scores=val_scores,
                           test_scores=test_scores)


def _blend(*args):
    """choose_blend's result as the manifest records it, plus the blended scores."""
    blend = choose_blend(*args)
    return {**blend.record, "scores": (blend.val_scores, blend.test_scores)}


def test_weight_goes_to_the_part_that_predicts():
    assert _blend(ngram(NOISE, NOISE), LABELS, LABELS, GOOD, GOOD)["rnn_weight"] == 1.0
    assert _blend(ngram(GOOD, GOOD), LABELS, LABELS, NOISE, NOISE)["rnn_weight"] == 0.0


def test_blended_scores_and_parts():
    result = _blend(ngram(GOOD, NOISE), LABELS, LABELS, NOISE, GOOD)
    w = result["rnn_weight"]
    assert 0 <= w <= 1
    val, test = result["scores"]
    np.testing.assert_allclose(val, w * NOISE + (1 - w) * GOOD)
    np.testing.assert_allclose(test, w * GOOD + (1 - w) * NOISE)
    assert result["parts"]["ngram"]["validation_accuracy"] == 1.0
    assert result["parts"]["rnn"]["test_accuracy"] == 1.0


def test_two_equal_parts_share_the_weight():
    assert _blend(ngram(GOOD, GOOD), LABELS, LABELS, GOOD, GOOD)["rnn_weight"] == 0.5


def test_near_ties_go_to_the_even_blend():
    # Two parts that differ by far less than the tolerance.
    almost = np.clip(GOOD + 1e-7, 0, 1)
    assert _blend(ngram(almost, almost), LABELS, LABELS, GOOD, GOOD)["rnn_weight"] == 0.5


def test_a_tiny_validation_split_gives_an_even_blend():
    few = slice(0, 20)
    result = _blend(ngram(NOISE[few], NOISE[few]), LABELS[few], LABELS[few], GOOD[few],
                    GOOD[few])
    assert result["rnn_weight"] == 0.5


def test_the_blend_works_over_class_probabilities():
    """Three classes: the parts give rows of class probabilities, and the weight still goes
    to the part that predicts; class weights count in the validation log loss."""
    labels = RNG.integers(0, 3, 300)
    good = np.full((300, 3), 0.1)
    good[np.arange(300), labels] = 0.8
    noise = RNG.dirichlet([1, 1, 1], 300)
    blend = choose_blend(ngram(noise, noise), labels, labels, good, good)
    assert blend.rnn_weight == 1.0 and blend.record["parts"]["rnn"]["test_accuracy"] == 1.0
    assert blend.val_scores.shape == (300, 3)
    weighted = choose_blend(ngram(good, good), labels, labels, noise, noise,
                            np.where(labels == 0, 5.0, 1.0))
    assert weighted.rnn_weight == 0.0


# --------------------------------------------------------------------------- calibration


def _overconfident(n: int = 2000, seed: int = 0):
    """Two-class scores whose logits are 3x what the labels support."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-logits))).astype(int)
    return labels, 1 / (1 + np.exp(-3 * logits))


def test_temperature_divides_the_logit_and_keeps_every_label():
    p = np.array([0.1, 0.5, 0.8, 0.999])
    got = with_temperature(p, 2.0)
    np.testing.assert_allclose(np.log(got / (1 - got)), np.log(p / (1 - p)) / 2, atol=1e-5)
    assert np.array_equal(got >= 0.5, p >= 0.5)
    rows = np.array([[0.7, 0.2, 0.1], [0.05, 0.15, 0.8]])
    cooled = with_temperature(rows, 0.5)
    np.testing.assert_allclose(cooled.sum(axis=1), 1, atol=1e-6)
    assert np.array_equal(cooled.argmax(axis=1), rows.argmax(axis=1))
    assert cooled[0, 0] > rows[0, 0]  # below 1: sharper
    assert with_temperature(p, 1.0) is p


def test_an_overconfident_blend_gets_a_temperature_that_lowers_its_loss():
    labels, scores = _overconfident()
    record = calibrate(labels, scores)
    assert 2.5 < record["temperature"] < 3.5
    assert record["calibrated_validation_loss"] < record["validation_loss"] - 0.05
    assert record["calibrated_validation_ece"] < record["validation_ece"]
    # held-out rows of the same kind gain too
    test_labels, test_scores = _overconfident(seed=1)
    assert log_loss(test_labels, with_temperature(test_scores, record["temperature"])) < \
        log_loss(test_labels, test_scores)


def test_calibrated_or_tiny_validation_splits_keep_temperature_one():
    rng = np.random.default_rng(0)
    p = rng.random(5000)
    labels = (rng.random(5000) < p).astype(int)
    record = calibrate(labels, p)
    assert record["temperature"] == 1.0 and record["validation_ece"] < 0.02
    assert "calibrated_validation_ece" not in record
    labels, scores = _overconfident(n=40)
    assert calibrate(labels, scores)["temperature"] == 1.0


def test_class_probabilities_are_calibrated_too():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1.5, (3000, 3))
    true = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(3, p=row) for row in true])
    sharp = with_temperature(true, 0.4)  # overconfident: T = 0.4 applied
    record = calibrate(labels, sharp)
    assert 2.0 < record["temperature"] < 3.0
