"""What the temperature fitted at training time does on the held-out test split.

    python benchmarks/calibration.py MODEL_DIR [MODEL_DIR ...]

For each model: the temperature (from the manifest), and the test split's log loss and
expected calibration error with the temperature (as the model scores) and without it
(the same scores with the temperature undone: scaling by 1/T inverts scaling by T).
Accuracy is the same either way: no label changes.
"""

from __future__ import annotations

import sys

import numpy as np

from rnncli.core.scoring import with_temperature
from rnncli.inference.evaluation import score_dataset
from rnncli.inference.metrics import evaluate_scores
from rnncli.modeldir import artifacts
from rnncli.training.blend import log_loss


def main() -> None:
    print("| model | T | test log loss without -> with | test ECE without -> with | n |")
    print("|---|---|---|---|---|")
    for model_dir in sys.argv[1:]:
        scored = score_dataset(model_dir)
        temperature = artifacts.temperature(scored.manifest)
        raw = with_temperature(scored.scores, 1.0 / temperature)
        labels = np.asarray(scored.data.labels)
        before = evaluate_scores(labels, raw, threshold=scored.threshold)
        after = evaluate_scores(labels, scored.scores, threshold=scored.threshold)
        assert before["accuracy"] == after["accuracy"]
        print(f"| {model_dir} | {temperature:.2f} | {log_loss(labels, raw):.4f} -> "
              f"{log_loss(labels, scored.scores):.4f} | {before['ece']:.4f} -> "
              f"{after['ece']:.4f} | {len(labels)} |")


if __name__ == "__main__":
    main()
