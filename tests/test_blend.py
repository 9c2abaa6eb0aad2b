"""The blend weight between the RNN and the n-gram model (pure numpy, no TensorFlow)."""

from types import SimpleNamespace

import numpy as np

from rnncli.blend import choose_blend

RNG = np.random.default_rng(0)
LABELS = RNG.integers(0, 2, 400)
GOOD = np.clip(LABELS * 0.8 + 0.1 + RNG.normal(0, 0.05, 400), 0.01, 0.99)
NOISE = RNG.uniform(0.2, 0.8, 400)


def ngram(val_scores, test_scores):
    """What choose_blend reads of an ngrams.NgramFit."""
    return SimpleNamespace(ngrams=10, solver={"ngram_solver": "adam"}, val_scores=val_scores, test_scores=test_scores)


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
