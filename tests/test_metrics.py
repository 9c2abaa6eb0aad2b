import math

import numpy as np
import pytest

from rnncli.metrics import METRIC_KEYS, evaluate_scores, roc_auc, round_figures


def test_hand_computed_figures():
    labels = [1, 1, 1, 0, 0, 0, 0, 1]
    scores = [0.9, 0.8, 0.3, 0.6, 0.2, 0.1, 0.4, 0.7]
    f = evaluate_scores(labels, scores, threshold=0.5)
    # predicted positive: 0.9, 0.8, 0.6, 0.7 -> tp=3 (0.9, 0.8, 0.7), fp=1 (0.6)
    assert f["confusion_matrix"] == [[3, 1], [1, 3]]
    assert f["accuracy"] == pytest.approx(6 / 8)
    assert f["precision"] == pytest.approx(3 / 4)
    assert f["recall"] == pytest.approx(3 / 4)
    assert f["f1"] == pytest.approx(3 / 4)
    # positives 0.9, 0.8, 0.3, 0.7 vs negatives 0.6, 0.2, 0.1, 0.4: 14 of 16 pairs ordered
    assert f["roc_auc"] == pytest.approx(14 / 16)
    expected_loss = -np.mean([math.log(s) if y else math.log(1 - s) for y, s in zip(labels, scores)])
    assert f["loss"] == pytest.approx(expected_loss)
    assert f["n"] == 8
    assert tuple(f) == METRIC_KEYS


def test_threshold_moves_the_decision():
    f = evaluate_scores([0, 1], [0.3, 0.4], threshold=0.35)
    assert f["confusion_matrix"] == [[1, 0], [0, 1]]


def test_ties_count_half():
    assert roc_auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert roc_auc([0, 0, 1, 1], [0.1, 0.5, 0.5, 0.9]) == pytest.approx((1 + 1 + 0.5 + 1) / 4)


def test_undefined_figures_are_none_not_zero():
    f = evaluate_scores([1, 1], [0.1, 0.2])
    assert f["roc_auc"] is None  # one class only
    assert f["precision"] is None  # nothing predicted positive
    assert f["recall"] == 0.0


def test_loss_is_finite_for_extreme_scores():
    f = evaluate_scores([1, 0], [0.0, 1.0])
    assert math.isfinite(f["loss"]) and f["loss"] > 10


def test_round_figures():
    assert round_figures({"a": 0.123456, "b": float("nan"), "n": 3}) == {"a": 0.1235, "b": None, "n": 3}


def test_mismatched_lengths():
    with pytest.raises(ValueError):
        evaluate_scores([1, 0], [0.5])
