"""Evaluation figures from labels and scores (light: NumPy only)."""

from __future__ import annotations

import math

import numpy as np

METRIC_KEYS = ("accuracy", "precision", "recall", "f1", "roc_auc", "loss", "n",
               "confusion_matrix")
_EPS = 1e-7  # Keras's epsilon for binary cross-entropy


def evaluate_scores(labels, scores, *, threshold: float = 0.5) -> dict:
    """Accuracy, precision, recall, F1, ROC AUC, log loss, n, [[tn, fp], [fn, tp]].

    Figures that are undefined for the data (precision with no positive prediction,
    ROC AUC with one class only) are ``None``, never a made-up 0.
    """
    y = np.asarray(labels, dtype=np.int64).ravel()
    p = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"{y.size} labels but {p.size} scores")
    pred = p >= threshold
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    tn = int(np.sum(~pred & (y == 0)))
    n = int(y.size)
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    f1 = (None if precision is None or recall is None
          else (0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)))
    clipped = np.clip(p, _EPS, 1 - _EPS)
    loss = float(-np.mean(y * np.log(clipped) + (1 - y) * np.log(1 - clipped))) if n else None
    return {
        "accuracy": _ratio(tp + tn, n),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "roc_auc": roc_auc(y, p),
        "loss": loss,
        "n": n,
        "confusion_matrix": [[tn, fp], [fn, tp]],
    }


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
    """Copy with floats rounded for display and JSON (NaN becomes None)."""
    out = {}
    for key, value in figures.items():
        if isinstance(value, float):
            value = None if math.isnan(value) else round(value, digits)
        out[key] = value
    return out
