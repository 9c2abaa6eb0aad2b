"""Figures for a labelled file (or the test split saved at training time): the scoring
that ``evaluate`` and ``report`` share. Light: TensorFlow only if the engine needs it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rnncli.inference.predict import SCORE_DIGITS, Predictor, check_files, check_threshold
from rnncli.modeldir import artifacts

if TYPE_CHECKING:
    from rnncli.data.dataset import Dataset


@dataclass(frozen=True)
class Scored:
    """A labelled file (or the saved test split) and the model's scores for it."""

    manifest: dict[str, Any]
    data: Dataset
    scores: np.ndarray
    threshold: float  # the decision threshold of a two-class model (0.5 for more classes)


def score_dataset(model_dir: str | Path, data_path: str | Path | None = None, *,
                  text_col: str | None = None, label_col: str | None = None,
                  encoding: str | None = None, device: str = "auto", engine: str = "auto",
                  threshold: float | None = None) -> Scored:
    """Read and check the file (the model first, then the data, then TensorFlow if the
    engine needs it) and score it."""
    from rnncli.data.dataset import load_dataset

    model_dir = Path(model_dir)
    manifest = artifacts.read_manifest(model_dir)
    check_files(model_dir, manifest, engine, device)  # a bad model fails before the data
    check_threshold(manifest, threshold)
    if data_path is None:
        data_path = model_dir / artifacts.TEST_FILE
        artifacts.verify_files(model_dir, manifest, names=(artifacts.TEST_FILE,))
        text_col, label_col = "text", "label"
    data = load_dataset(data_path, text_col=text_col, label_col=label_col, encoding=encoding,
                        known_labels=artifacts.label_names(manifest))
    predictor = Predictor.load(model_dir, device=device, engine=engine, threshold=threshold,
                               manifest=manifest)
    with predictor:
        scores = predictor.scores(data.texts)
    return Scored(manifest, data, scores,
                  predictor.threshold if predictor.threshold is not None else 0.5)


def figures_of(scored: Scored, errors: int = 0) -> dict[str, Any]:
    """The evaluation figures, and with ``errors`` that many of the most confidently wrong
    texts (figures["errors"])."""
    from rnncli.inference.metrics import confident_errors, evaluate_scores, round_figures

    data = scored.data
    figures = round_figures(evaluate_scores(data.labels, scored.scores,
                                            threshold=scored.threshold,
                                            class_names=data.label_names))
    if errors:
        figures["errors"] = [{**e, "score": round(e["score"], SCORE_DIGITS)}
                             for e in confident_errors(data.labels, scored.scores, data.texts,
                                                       data.label_names, count=errors,
                                                       threshold=scored.threshold)]
    return figures


def notes_of(scored: Scored, show_skipped: bool = False) -> list[str]:
    """What the user is told about the data read (stderr)."""
    data = scored.data
    return [*data.notes, data.summary(), *(data.skipped_report() if show_skipped else [])]


def evaluate(model_dir: str | Path, data_path: str | Path | None = None, *,
             show_skipped: bool = False, errors: int = 0,
             **scoring: Any) -> tuple[dict[str, Any], list[str]]:
    """Figures for a labelled file, or for the test split saved at training time.

    Returns (figures, notes for the user). The file is read and checked before the
    model (and TensorFlow) is loaded. ``scoring``: text_col, label_col, encoding,
    device, engine, threshold as for :func:`score_dataset`.
    """
    scored = score_dataset(model_dir, data_path, **scoring)
    return figures_of(scored, errors), notes_of(scored, show_skipped)
