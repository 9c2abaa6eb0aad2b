"""Evaluation figures from labels and scores (light: NumPy only)."""

from __future__ import annotations

import math

import numpy as np

METRIC_KEYS = ("accuracy", "precision", "recall", "f1", "roc_auc", "loss", "n",
               "confusion_matrix")
# appended after METRIC_KEYS for two classes, so readers of the old keys see no change
CLASS_KEYS = ("classes", "macro_precision", "macro_recall", "macro_f1", "weighted_precision",
              "weighted_recall", "weighted_f1", "per_class", "ece")
MULTI_METRIC_KEYS = ("accuracy", "macro_precision", "macro_recall", "macro_f1",
                     "weighted_precision", "weighted_recall", "weighted_f1", "roc_auc", "loss",
                     "n", "confusion_matrix", "classes", "per_class", "ece")
ECE_BINS = 15  # equal-width confidence bins of the expected calibration error
_EPS = 1e-7  # Keras's epsilon for binary cross-entropy
_FIGURES = ("precision", "recall", "f1")


def decide(scores, threshold: float = 0.5) -> np.ndarray:
    """The one decision rule, for predict, evaluate, report, serve and training's figures:
    class indexes from raw scores (never from rounded ones). A vector (or one column) of
    positive-class probabilities: the positive class (1) where p >= ``threshold``, compared
    in float64; rows of k class probabilities: the most probable class, ties to the lowest
    index (``threshold`` is not used)."""
    p = np.asarray(scores, dtype=np.float64)
    if p.ndim == 2 and p.shape[1] != 1:
        return np.argmax(p, axis=1)
    return (p.reshape(-1) >= threshold).astype(np.int64)


def label_probability(scores, decided: np.ndarray) -> np.ndarray:
    """Each row's probability of the class ``decide`` chose: a record's ``score``."""
    p = np.asarray(scores, dtype=np.float64)
    if p.ndim == 2 and p.shape[1] != 1:
        return p[np.arange(len(p)), decided]
    p = p.reshape(-1)
    return np.where(decided == 1, p, 1 - p)


def evaluate_scores(labels, scores, *, threshold: float = 0.5, class_names=None) -> dict:
    """Evaluation figures for two classes (1-D scores) or more (2-D scores).

    Two classes: ``scores`` holds the positive-class probability (an (n, 1) array counts
    as 1-D) and ``labels`` are 0/1. The keys are METRIC_KEYS (accuracy, precision, recall,
    F1 and ROC AUC of the positive class, log loss, n, [[tn, fp], [fn, tp]]), then
    CLASS_KEYS; a row is predicted positive when its score >= ``threshold``.

    More classes: ``scores`` has shape (n, k), one row of class probabilities per label,
    and ``labels`` are class indexes 0..k-1. The keys are MULTI_METRIC_KEYS; the predicted
    class is the argmax (ties to the lowest index) and ``threshold`` is ignored. ROC AUC is
    one-vs-rest, averaged over the classes that occur in ``labels`` (None with fewer than
    two); the loss is categorical cross-entropy with probabilities clipped to
    [1e-7, 1 - 1e-7]. The confusion matrix has actual classes as rows, predicted as columns.

    ``classes`` is ``class_names`` as strings, or "0", "1", ... when None; ``per_class``
    lists {"class", "precision", "recall", "f1", "support"} in class order.

    Figures that are undefined for the data (precision of a class never predicted, recall
    of a class absent from the labels, ROC AUC with one class only) are ``None``, never a
    made-up 0. A class's F1 is 2tp / (2tp + fp + fn): 0 for a class that occurs but is
    never predicted, None only for a class neither in the labels nor predicted (the
    binary ``f1`` key keeps its older rule: None when precision or recall is). The macro
    and weighted averages are scikit-learn's (``zero_division=0``): over the classes that
    occur in the labels or the predictions, an undefined figure counting 0, weighted by
    support; None when there are no rows.

    Raises ValueError when labels and scores differ in length, when a 2-D ``scores`` is not
    as wide as ``class_names``, or when a label is not a class index.
    """
    y = np.asarray(labels, dtype=np.int64).ravel()
    p = np.asarray(scores, dtype=np.float64)
    if p.ndim == 2 and p.shape[1] != 1:
        return _evaluate_classes(y, p, class_names)
    return _evaluate_binary(y, p.ravel(), threshold, class_names)


def _evaluate_binary(y: np.ndarray, p: np.ndarray, threshold: float, class_names) -> dict:
    if y.shape != p.shape:
        raise ValueError(f"{y.size} labels but {p.size} scores")
    names = _class_names(class_names, 2)
    pred = decide(p, threshold) == 1
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    tn = int(np.sum(~pred & (y == 0)))
    n = int(y.size)
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    clipped = np.clip(p, _EPS, 1 - _EPS)
    loss = float(-np.mean(y * np.log(clipped) + (1 - y) * np.log(1 - clipped))) if n else None
    values = {
        "accuracy": _ratio(tp + tn, n),
        "precision": precision,
        "recall": recall,
        "f1": _f1(precision, recall),
        "roc_auc": roc_auc(y, p),
        "loss": loss,
        "n": n,
        "confusion_matrix": [[tn, fp], [fn, tp]],
        "classes": names,
        **_class_figures(np.array([[tn, fp], [fn, tp]]), names),
        "ece": expected_calibration_error(np.where(pred, p, 1 - p), pred == (y == 1)),
    }
    return {key: values[key] for key in METRIC_KEYS + CLASS_KEYS}


def _evaluate_classes(y: np.ndarray, p: np.ndarray, class_names) -> dict:
    n, k = p.shape
    if y.size != n:
        raise ValueError(f"{y.size} labels but {n} score rows")
    if k == 0:
        raise ValueError("scores have no class columns")
    names = _class_names(class_names, k)
    if n and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"labels must be class indexes 0..{k - 1}, found {int(y.min())}.."
                         f"{int(y.max())}")
    pred = decide(p) if n else np.zeros(0, dtype=np.int64)
    matrix = np.bincount(y * k + pred, minlength=k * k).reshape(k, k)
    aucs = [roc_auc((y == c).astype(np.int64), p[:, c]) for c in range(k)]
    aucs = [a for a in aucs if a is not None]
    picked = np.clip(p[np.arange(n), y], _EPS, 1 - _EPS)
    values = {
        "accuracy": _ratio(int(np.trace(matrix)), n),
        "roc_auc": sum(aucs) / len(aucs) if aucs else None,
        "loss": float(-np.mean(np.log(picked))) if n else None,
        "n": int(n),
        "confusion_matrix": matrix.tolist(),
        "classes": names,
        **_class_figures(matrix, names),
        "ece": expected_calibration_error(p.max(axis=1) if n else np.zeros(0), pred == y),
    }
    return {key: values[key] for key in MULTI_METRIC_KEYS}


def _class_names(class_names, k: int) -> list[str]:
    if class_names is None:
        return [str(i) for i in range(k)]
    names = [str(name) for name in class_names]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names but scores for {k} classes")
    return names


def _class_figures(matrix: np.ndarray, names: list[str]) -> dict:
    """Per-class, macro and weighted figures from a confusion matrix (rows actual)."""
    per_class = []
    for i, name in enumerate(names):
        tp, support = int(matrix[i, i]), int(matrix[i].sum())
        precision = _ratio(tp, int(matrix[:, i].sum()))
        recall = _ratio(tp, support)
        # 2tp / (2tp + fp + fn): 0, not undefined, for a class present but never predicted
        # (its recall is 0 whatever the precision), so macro F1 counts it as a miss
        f1 = _ratio(2 * tp, 2 * tp + int(matrix[:, i].sum()) - tp + support - tp)
        per_class.append({"class": name, "precision": precision, "recall": recall,
                          "f1": f1, "support": support})
    out: dict = {"per_class": per_class}
    # scikit-learn's averages: over the classes that occur in the labels or the
    # predictions, an undefined figure counting 0 (zero_division=0)
    seen = [row for i, row in enumerate(per_class)
            if matrix[i].sum() or matrix[:, i].sum()]
    for figure in _FIGURES:
        values = [row[figure] or 0.0 for row in seen]
        out[f"macro_{figure}"] = _mean(values, [1] * len(seen))
        out[f"weighted_{figure}"] = _mean(values, [row["support"] for row in seen])
    return out


def _mean(values: list[float], weights: list[int]) -> float | None:
    total = sum(weights)
    return None if total == 0 else sum(v * w for v, w in zip(values, weights)) / total


def _f1(precision: float | None, recall: float | None) -> float | None:
    if precision is None or recall is None:
        return None
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def expected_calibration_error(confidence, correct, bins: int = ECE_BINS) -> float | None:
    """How far the predicted class's probability is from how often it is right: the rows
    in ECE_BINS equal-width bins of that probability, each bin's |accuracy - mean
    probability| weighted by its share of the rows (Guo et al. 2017). None for no rows."""
    confidence = np.asarray(confidence, dtype=np.float64).ravel()
    correct = np.asarray(correct, dtype=np.float64).ravel()
    if confidence.size == 0 or not np.all(np.isfinite(confidence)):
        return None  # no rows, or a score that is not a number
    index = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    gap = np.bincount(index, weights=correct - confidence, minlength=bins)
    return float(np.sum(np.abs(gap)) / confidence.size)


def confident_errors(labels, scores, texts: list[str], class_names, *, count: int,
                     threshold: float = 0.5) -> list[dict]:
    """The ``count`` wrong predictions made with the highest probability, most confident
    first: {"text", "label" (the true one), "predicted", "score" (its probability)}. Such
    rows are often label errors worth checking in the data."""
    y = np.asarray(labels, dtype=np.int64).ravel()
    pred = decide(scores, threshold)
    confidence = label_probability(scores, pred)
    wrong = np.flatnonzero((pred != y) & np.isfinite(confidence))
    chosen = wrong[np.argsort(-confidence[wrong], kind="stable")][:count]
    return [{"text": texts[i], "label": str(class_names[y[i]]),
             "predicted": str(class_names[pred[i]]), "score": float(confidence[i])}
            for i in chosen]


def roc_auc(labels, scores) -> float | None:
    """Area under the ROC curve via the rank-sum (Mann-Whitney U) formula, ties averaged."""
    y = np.asarray(labels).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    n_pos = int(np.sum(y == 1))
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    sorted_scores = s[order]
    ranks = np.empty(s.size, dtype=np.float64)
    # average rank for each run of equal scores
    _, start, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = start + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _ratio(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


def round_figures(figures: dict, digits: int = 4) -> dict:
    """Copy with floats rounded for display and JSON, nested ones too (NaN becomes None)."""
    return {key: _rounded(value, digits) for key, value in figures.items()}


def _rounded(value, digits: int):
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, digits)
    if isinstance(value, dict):
        return {key: _rounded(item, digits) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(item, digits) for item in value]
    return value
