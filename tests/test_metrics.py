import math

import numpy as np
import pytest

from rnncli.inference.metrics import (
    CLASS_KEYS,
    METRIC_KEYS,
    MULTI_METRIC_KEYS,
    confident_errors,
    decide,
    evaluate_scores,
    roc_auc,
    round_figures,
)


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
    expected_loss = -np.mean([math.log(s) if y else math.log(1 - s)
                              for y, s in zip(labels, scores)])
    assert f["loss"] == pytest.approx(expected_loss)
    assert f["n"] == 8
    assert tuple(f)[:len(METRIC_KEYS)] == METRIC_KEYS
    assert tuple(f) == METRIC_KEYS + CLASS_KEYS


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
    rounded = round_figures({"a": 0.123456, "b": float("nan"), "n": 3})
    assert rounded == {"a": 0.1235, "b": None, "n": 3}


def test_mismatched_lengths():
    with pytest.raises(ValueError):
        evaluate_scores([1, 0], [0.5])


# --------------------------------------------------------------------------- per class


def test_binary_per_class_figures_use_the_threshold():
    labels = [1, 1, 1, 0, 0, 0, 0, 1]
    scores = [0.9, 0.8, 0.3, 0.6, 0.2, 0.1, 0.4, 0.7]
    f = evaluate_scores(labels, scores, class_names=["neg", "pos"])
    assert f["classes"] == ["neg", "pos"]
    neg, pos = f["per_class"]
    assert pos == {"class": "pos", "precision": f["precision"], "recall": f["recall"],
                   "f1": f["f1"], "support": 4}
    # negatives: tn=3 of 4 predicted negative, 3 of 4 actual negatives
    assert neg == {"class": "neg", "precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 4}
    assert f["macro_f1"] == pytest.approx(0.75) and f["weighted_recall"] == pytest.approx(0.75)
    f = evaluate_scores(labels, scores, threshold=0.95)  # nothing predicted positive
    assert f["classes"] == ["0", "1"]
    assert f["per_class"][1]["precision"] is None and f["per_class"][1]["f1"] == 0.0
    assert f["f1"] is None  # the binary key keeps its older rule
    # scikit-learn's averages: the undefined precision of class 1 counts 0
    assert f["macro_precision"] == pytest.approx((4 / 8 + 0) / 2)


def test_hand_computed_three_classes():
    labels = [0, 0, 1, 1, 1, 2]
    scores = [[0.6, 0.3, 0.1],  # 0 -> 0
              [0.2, 0.5, 0.3],  # 0 -> 1
              [0.1, 0.8, 0.1],  # 1 -> 1
              [0.4, 0.4, 0.2],  # 1 -> 0 (tie goes to the lowest index)
              [0.1, 0.2, 0.7],  # 1 -> 2
              [0.2, 0.1, 0.7]]  # 2 -> 2
    f = evaluate_scores(labels, scores, class_names=["a", "b", "c"], threshold=0.99)
    assert tuple(f) == MULTI_METRIC_KEYS
    assert f["confusion_matrix"] == [[1, 1, 0], [1, 1, 1], [0, 0, 1]]
    assert f["accuracy"] == pytest.approx(3 / 6)
    assert f["n"] == 6 and f["classes"] == ["a", "b", "c"]
    # precision a 1/2, b 1/2, c 1/2; recall a 1/2, b 1/3, c 1/1
    f1 = [0.5, 2 * 0.5 * (1 / 3) / (0.5 + 1 / 3), 2 * 0.5 / 1.5]
    assert [r["f1"] for r in f["per_class"]] == pytest.approx(f1)
    assert [r["support"] for r in f["per_class"]] == [2, 3, 1]
    assert f["macro_precision"] == pytest.approx(0.5)
    assert f["macro_recall"] == pytest.approx((1 / 2 + 1 / 3 + 1) / 3)
    assert f["macro_f1"] == pytest.approx(sum(f1) / 3)
    assert f["weighted_recall"] == pytest.approx(3 / 6)  # equals accuracy
    assert f["weighted_f1"] == pytest.approx((2 * f1[0] + 3 * f1[1] + f1[2]) / 6)
    # one-vs-rest: a: positives .6 .2 vs .1 .4 .1 .2 -> (4 + 2.5) / 8;
    # b: .8 .4 .2 vs .3 .5 .1 -> (3 + 2 + 1) / 9; c: .7 vs .1 .3 .1 .2 .7 -> 4.5 / 5
    assert f["roc_auc"] == pytest.approx((6.5 / 8 + 6 / 9 + 4.5 / 5) / 3)
    picked = [0.6, 0.2, 0.8, 0.4, 0.2, 0.7]
    assert f["loss"] == pytest.approx(-np.mean(np.log(picked)))


@pytest.mark.parametrize("k", [3, 5])
def test_agrees_with_sklearn(k):
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(k)
    n = 300
    labels = rng.integers(0, k, size=n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[labels]  # better than chance
    scores = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    f = evaluate_scores(labels, scores)
    pred = scores.argmax(axis=1)
    assert f["accuracy"] == pytest.approx(metrics.accuracy_score(labels, pred))
    for average in ("macro", "weighted"):
        p, r, f1, _ = metrics.precision_recall_fscore_support(labels, pred, average=average)
        assert (f[f"{average}_precision"], f[f"{average}_recall"], f[f"{average}_f1"]) == (
            pytest.approx((p, r, f1)))
    p, r, f1, support = metrics.precision_recall_fscore_support(labels, pred)
    assert [row["precision"] for row in f["per_class"]] == pytest.approx(p)
    assert [row["recall"] for row in f["per_class"]] == pytest.approx(r)
    assert [row["f1"] for row in f["per_class"]] == pytest.approx(f1)
    assert [row["support"] for row in f["per_class"]] == support.tolist()
    assert f["roc_auc"] == pytest.approx(
        metrics.roc_auc_score(labels, scores, multi_class="ovr", average="macro"))
    assert f["loss"] == pytest.approx(metrics.log_loss(labels, scores), rel=1e-6)
    assert f["confusion_matrix"] == metrics.confusion_matrix(labels, pred).tolist()


def test_class_absent_from_the_labels():
    labels = [0, 0, 1, 1]
    scores = [[0.7, 0.2, 0.1], [0.2, 0.1, 0.7], [0.1, 0.8, 0.1], [0.3, 0.6, 0.1]]
    f = evaluate_scores(labels, scores)
    assert f["confusion_matrix"] == [[1, 0, 1], [0, 2, 0], [0, 0, 0]]
    absent = f["per_class"][2]
    # predicted once, never right: precision 0, recall undefined, F1 = 2tp / (2tp + fp + fn)
    # = 0 (as scikit-learn's)
    assert absent == {"class": "2", "precision": 0.0, "recall": None, "f1": 0.0, "support": 0}
    # averages over the classes in the labels or the predictions, undefined counting 0
    assert f["macro_precision"] == pytest.approx((1 + 1 + 0) / 3)
    assert f["macro_recall"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert f["macro_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert f["weighted_precision"] == pytest.approx(1.0)  # the absent class weighs 0
    metrics = pytest.importorskip("sklearn.metrics")
    predicted = np.argmax(scores, axis=1)
    for average in ("macro", "weighted"):
        p, r, f1, _ = metrics.precision_recall_fscore_support(labels, predicted,
                                                              average=average,
                                                              zero_division=0)
        assert (f[f"{average}_precision"], f[f"{average}_recall"], f[f"{average}_f1"]) \
            == pytest.approx((p, r, f1))
    # one-vs-rest over the classes present only: 0: .7 .2 vs .1 .3 -> 3 / 4; 1: 4 / 4
    assert f["roc_auc"] == pytest.approx((3 / 4 + 1) / 2)


def test_multi_class_undefined_figures_are_none():
    f = evaluate_scores([1, 1], [[0.1, 0.9, 0.0], [0.2, 0.7, 0.1]])
    assert f["roc_auc"] is None  # one class only
    assert f["per_class"][0]["precision"] is None  # never predicted, never present
    assert f["per_class"][0]["f1"] is None
    assert f["accuracy"] == 1.0 and f["macro_f1"] == 1.0
    empty = evaluate_scores([], np.zeros((0, 3)))
    assert empty["n"] == 0 and empty["accuracy"] is None and empty["loss"] is None
    assert empty["macro_precision"] is None and empty["weighted_f1"] is None
    assert empty["confusion_matrix"] == [[0, 0, 0]] * 3


def test_multi_class_loss_is_finite_for_extreme_scores():
    f = evaluate_scores([0, 1, 2], [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert math.isfinite(f["loss"]) and f["loss"] > 10


def test_column_vector_scores_are_binary():
    f = evaluate_scores([0, 1], [[0.2], [0.7]])
    assert tuple(f) == METRIC_KEYS + CLASS_KEYS and f["accuracy"] == 1.0


def test_round_figures_nested():
    figures = {"a": 0.123456, "b": float("nan"), "n": 3, "confusion_matrix": [[1, 2], [3, 4]],
               "classes": ["x"], "per_class": [{"class": "x", "precision": 2 / 3,
                                                "recall": float("nan"), "f1": None,
                                                "support": 5}]}
    assert round_figures(figures) == {
        "a": 0.1235, "b": None, "n": 3, "confusion_matrix": [[1, 2], [3, 4]], "classes": ["x"],
        "per_class": [{"class": "x", "precision": 0.6667, "recall": None, "f1": None,
                       "support": 5}]}
    assert figures["per_class"][0]["precision"] == 2 / 3  # a copy, the input is untouched


@pytest.mark.parametrize("labels, scores, names", [
    ([0, 1], [[0.5, 0.3, 0.2]], None),  # 2 labels, 1 row
    ([0, 1], [[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]], ["a", "b"]),  # 3 columns, 2 names
    ([0, 3], [[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]], None),  # label 3 of 3 classes
    ([0, -1], [[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]], None),
    ([0, 1], [0.2, 0.7], ["a", "b", "c"]),  # two classes, three names
])
def test_wrong_shapes_raise(labels, scores, names):
    with pytest.raises(ValueError):
        evaluate_scores(labels, scores, class_names=names)


def test_expected_calibration_error():
    from rnncli.inference.metrics import expected_calibration_error

    # two bins used: 0.95 (right 1 of 2: gap 0.45) and 0.55 (right 2 of 2: gap 0.45)
    assert expected_calibration_error([0.95, 0.95, 0.55, 0.55], [1, 0, 1, 1]) == \
        pytest.approx((2 * 0.45 + 2 * 0.45) / 4)
    assert expected_calibration_error([0.8] * 5, [1, 1, 1, 1, 0]) == pytest.approx(0.0)
    assert expected_calibration_error([], []) is None
    # the binary figure uses the predicted label's probability; a perfect split is 0.1 off
    f = evaluate_scores([1, 0], [0.9, 0.1])
    assert f["ece"] == pytest.approx(0.1)
    multi = evaluate_scores([0, 1], [[0.6, 0.3, 0.1], [0.6, 0.2, 0.2]])
    assert multi["ece"] == pytest.approx(abs(0.5 - 0.6))  # one bin: right 1 of 2 at 0.6


def test_confident_errors_lists_the_surest_mistakes_first():
    from rnncli.inference.metrics import confident_errors

    texts = ["a", "b", "c", "d"]
    got = confident_errors([1, 0, 0, 1], [0.9, 0.8, 0.6, 0.1], texts, ("neg", "pos"), count=5)
    assert got == [{"text": "d", "label": "pos", "predicted": "neg", "score": pytest.approx(0.9)},
                   {"text": "b", "label": "neg", "predicted": "pos", "score": pytest.approx(0.8)},
                   {"text": "c", "label": "neg", "predicted": "pos", "score": pytest.approx(0.6)}]
    assert len(confident_errors([1, 0, 0, 1], [0.9, 0.8, 0.6, 0.1], texts, ("neg", "pos"),
                                count=1)) == 1
    multi = confident_errors([2, 0], [[0.7, 0.2, 0.1], [0.5, 0.4, 0.1]], ["x", "y"],
                             ("a", "b", "c"), count=3)
    assert multi == [{"text": "x", "label": "c", "predicted": "a", "score": pytest.approx(0.7)}]


def test_a_score_that_is_not_a_number_leaves_the_figures_defined():
    """A NaN score (a diverged model) gives no ECE and is no listed error, never a crash."""
    from rnncli.inference.metrics import confident_errors

    assert evaluate_scores([1, 0], [0.9, float("nan")])["ece"] is None
    assert evaluate_scores([0, 1], [[0.9, 0.1], [float("nan"), 0.5]])["ece"] is None
    assert confident_errors([1, 0], [float("nan"), 0.8], ["a", "b"], ("n", "p"),
                            count=3) == [{"text": "b", "label": "n", "predicted": "p",
                                          "score": pytest.approx(0.8)}]


# --------------------------------------------------------------------------- one rule

class _FixedEngine:
    """An engine whose raw scores are given: what predict's records are made from."""

    def __init__(self, raw):
        self.raw = np.asarray(raw, np.float32)

    def scores(self, texts, batch_size=256):
        return self.raw[: len(texts)]


def _predictor(raw, names=("neg", "pos"), threshold=0.5):
    from rnncli.inference.predict import Predictor

    labels = ({"negative": names[0], "positive": names[1]} if len(names) == 2
              else {"classes": list(names)})
    return Predictor(None, {"labels": labels}, _FixedEngine(raw), threshold)


def test_predict_and_evaluate_decide_on_the_same_raw_score():
    """0.4999996 rounds to 0.5 in a record; the label is decided on the raw score, as
    evaluate (metrics) and report decide it, so it is negative everywhere, and the record's
    score is that label's probability."""
    raw = [0.4999996, 0.5, 0.2, 0.9]
    records = _predictor(raw).records(["a", "b", "c", "d"])
    assert [r["label"] for r in records] == ["neg", "pos", "neg", "pos"]
    figures = evaluate_scores([0, 1, 0, 1], np.asarray(raw, np.float32))
    assert figures["accuracy"] == 1.0  # every row counted as the record labels it
    assert [r["score"] for r in records] == [0.5, 0.5, 0.8, 0.9]
    assert [r["scores"]["pos"] for r in records] == [0.5, 0.5, 0.2, 0.9]
    errors = confident_errors([1, 0, 1, 0], np.asarray(raw, np.float32), list("abcd"),
                              ["neg", "pos"], count=4)
    by_text = {e["text"]: e for e in errors}
    for record in records:  # each wrong row: the label and score predict gives it
        wrong = by_text[record["text"]]
        assert (wrong["predicted"], round(wrong["score"], 6)) == (record["label"],
                                                                  record["score"])


def test_threshold_compares_in_float64():
    """A float32 score against a Python float threshold: NumPy 2 compares them in float32,
    where 0.30000002 rounds to float32(0.3) and the score would reach it; in float64 the
    score (0.3000000119...) is below it."""
    score = np.float32(0.3)
    assert np.asarray([score]) >= 0.30000002  # the float32 comparison that must not decide
    assert decide(np.asarray([score]), 0.30000002)[0] == 0
    assert _predictor([score], threshold=0.30000002).records(["a"])[0]["label"] == "neg"


def test_score_means_the_labels_probability_for_every_model():
    three = _predictor([[0.2, 0.5, 0.3]], names=("a", "b", "c"), threshold=None)
    record = three.records(["x"])[0]
    assert (record["label"], record["score"]) == ("b", 0.5)
    for record in _predictor([0.1, 0.7]).records(["x", "y"]):
        assert record["score"] == record["scores"][record["label"]]
        assert record["score"] >= 0.5
