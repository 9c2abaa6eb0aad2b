"""The blend of the recurrent network and the n-gram model: the weight chosen on the
validation split, and the record the manifest keeps. Light: numpy only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rnncli.core.scoring import CLIP, TEMPERATURES, with_temperature
from rnncli.inference.metrics import decide, label_probability

BLEND_TOLERANCE = 1e-4  # validation log loss
BLEND_MIN_ROWS = 50


@dataclass
class Blend:
    """The chosen weight of the recurrent network, and the blended scores."""

    rnn_weight: float
    record: dict[str, Any]  # what the manifest's "blend" section holds
    val_scores: np.ndarray
    test_scores: np.ndarray
    validation_rows: int  # under BLEND_MIN_ROWS the blend is even, not chosen

    def describe(self, cell: str) -> str:
        """The line training prints: the weights, and how they were set."""
        how = ("chosen on the validation split" if self.validation_rows >= BLEND_MIN_ROWS
               else f"an even blend: {self.validation_rows} validation rows are too few to "
                    f"choose it, {BLEND_MIN_ROWS} are needed")
        return (f"blend: {self.rnn_weight:.2f} x {cell.upper()} + {1 - self.rnn_weight:.2f} "
                f"x n-gram model ({how})")


def choose_blend(ngram: Any, val_labels, test_labels, rnn_val: np.ndarray,
                 rnn_test: np.ndarray, val_weights: np.ndarray | None = None) -> Blend:
    """Choose the RNN's weight in the blend of the two probabilities (the n-gram model
    gets the rest): the weight in 0, 0.05, ..., 1 with the lowest validation log loss.

    Losses within BLEND_TOLERANCE of the lowest count as ties, won by the weight nearest an
    even blend; with fewer than BLEND_MIN_ROWS validation rows the blend is even, since
    so few rows cannot tell the parts apart. Scores are positive-class probabilities (two
    classes) or rows of class probabilities; ``val_weights``: the rows' class weights.
    ``ngram``: the n-gram model's fit (an ``ngrams.NgramFit``, not imported here: ngrams
    imports this module).
    """
    y_val = np.asarray(val_labels)
    weights = np.linspace(0.0, 1.0, 21)
    losses = np.array([log_loss(y_val, w * rnn_val + (1 - w) * ngram.val_scores, val_weights)
                       for w in weights])
    near_best = np.flatnonzero(losses <= losses.min() + BLEND_TOLERANCE)
    weight = round(float(weights[min(near_best, key=lambda i: abs(weights[i] - 0.5))]), 2)
    if len(y_val) < BLEND_MIN_ROWS:
        weight = 0.5
    record = {
        "rnn_weight": weight,
        "ngrams": ngram.ngrams,
        **ngram.solver,
        "parts": {
            "rnn": {"validation_accuracy": accuracy(val_labels, rnn_val),
                    "test_accuracy": accuracy(test_labels, rnn_test)},
            "ngram": {"validation_accuracy": accuracy(val_labels, ngram.val_scores),
                      "test_accuracy": accuracy(test_labels, ngram.test_scores)},
        },
    }
    return Blend(weight, record, weight * rnn_val + (1 - weight) * ngram.val_scores,
                 weight * rnn_test + (1 - weight) * ngram.test_scores, len(y_val))


def log_loss(labels, scores: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Mean log loss of probabilities ``scores`` (clipped to [1e-7, 1 - 1e-7]): binary for
    a vector (the positive class's), categorical for rows of class probabilities;
    ``weights``: one per row (class weights), else all 1."""
    y = np.asarray(labels)
    p = np.clip(np.asarray(scores, np.float64), CLIP, 1 - CLIP)
    if p.ndim == 2:
        losses = -np.log(p[np.arange(len(y)), y.astype(np.int64)])
    else:
        y = y.astype(np.float64)
        losses = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    return float(np.average(losses, weights=weights)) if len(y) else 0.0


def accuracy(labels, scores: np.ndarray) -> float | None:
    """Accuracy (at 0.5 for two classes), rounded to 4 decimals as the manifest keeps it;
    None for no rows."""
    labels = np.asarray(labels)
    return round(float(np.mean(decide(scores) == labels)), 4) if len(labels) else None


# Calibration: temperature scaling (Guo et al. 2017) of the blend's probabilities.
CALIBRATION_ECE = 0.02  # validation ECE above which a temperature is fitted
CALIBRATION_GAIN = 0.002  # validation log loss it must save to be kept


def calibrate(labels, scores: np.ndarray, weights: np.ndarray | None = None) -> dict[str, Any]:
    """The manifest's "calibration": a temperature fitted on the validation rows
    (``scores``, the blend's) when their expected calibration error is above
    CALIBRATION_ECE, kept when it lowers their log loss by CALIBRATION_GAIN or more;
    ``temperature`` 1.0 otherwise. The label of every text stays what it was."""
    from scipy.optimize import minimize_scalar

    from rnncli.inference.metrics import expected_calibration_error

    y = np.asarray(labels)
    before_loss = log_loss(y, scores, weights)
    before_ece = _ece(y, scores, expected_calibration_error)
    record = {"temperature": 1.0, "validation_ece": before_ece,
              "validation_loss": round(before_loss, 4)}
    if len(y) < BLEND_MIN_ROWS or before_ece is None or before_ece <= CALIBRATION_ECE:
        return record
    low, high = np.log(TEMPERATURES)
    found = minimize_scalar(lambda t: log_loss(y, with_temperature(scores, float(np.exp(t))),
                                               weights),
                            bounds=(low, high), method="bounded", options={"xatol": 1e-4})
    temperature = round(float(np.exp(found.x)), 4)
    after = with_temperature(scores, temperature)
    if before_loss - log_loss(y, after, weights) < CALIBRATION_GAIN:
        return record
    return {"temperature": temperature, "validation_ece": before_ece,
            "validation_loss": round(before_loss, 4),
            "calibrated_validation_ece": _ece(y, after, expected_calibration_error),
            "calibrated_validation_loss": round(log_loss(y, after, weights), 4)}


def _ece(labels: np.ndarray, scores: np.ndarray, ece) -> float | None:
    chosen = decide(scores)
    value = ece(label_probability(scores, chosen), chosen == labels)
    return None if value is None else round(value, 4)
