"""Each part of the model learns: on separable data (the label is decided by one word
among neutral filler) the recurrent network alone, the n-gram model alone and their blend
label held-out texts right, and the same texts with their labels permuted teach nothing.
A label swapped or misaligned anywhere between the file and the served engine fails it.

Deterministic: the data come from fixed seeds, and training is seeded."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_csv

from rnncli.cli.main import cli
from rnncli.inference.predict import Predictor

pytestmark = pytest.mark.slow

POSITIVE = ("good", "great", "lovely")
NEGATIVE = ("bad", "awful", "dull")
FILLER = ("the a film plot story actor scene music was and it this movie cast ending "
          "script long we saw").split()
# 400 rows: 40 validation rows, fewer than blend.BLEND_MIN_ROWS, so the blend is even
# and the served engine keeps both parts; a bigger learning rate than the default, so
# that three short epochs of a few units learn.
SETTINGS = ["--epochs", "3", "--units", "8", "--embed-dim", "8", "--lr", "0.01",
            "--batch-size", "32", "--quiet"]


def reviews(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """n short texts, every other one positive: 4 to 8 filler words with one word of
    the label's among them, anywhere."""
    rng = np.random.default_rng(seed)
    texts, labels = [], np.arange(n) % 2
    for label in labels:
        words = [str(w) for w in rng.choice(FILLER, rng.integers(4, 9))]
        words.insert(int(rng.integers(0, len(words) + 1)),
                     str(rng.choice(POSITIVE if label else NEGATIVE)))
        texts.append(" ".join(words))
    return texts, labels


def held_out_accuracy(model_dir, texts: list[str], labels: np.ndarray) -> dict[str, float]:
    """The share of ``texts`` each part of the served (ONNX) model labels right at 0.5,
    and the share predict's records label right."""
    with Predictor.load(model_dir, engine="onnx") as predictor:
        engine = predictor.engine
        assert engine.rnn_weight == 0.5  # both parts are served (see SETTINGS)
        tokens = [engine.tokens(t) for t in texts]
        parts = {"rnn": engine.network_scores([engine.ids(t) for t in tokens]),
                 "ngram": engine.ngram_scores(tokens)}
        accuracy = {name: float(np.mean((np.asarray(p) >= 0.5) == labels))
                    for name, p in parts.items()}
        names = predictor.label_names
        predicted = [names.index(r["label"]) for r in predictor.records(texts)]
    accuracy["blend"] = float(np.mean(np.array(predicted) == labels))
    return accuracy


def train(tmp_path, name: str, texts: list[str], labels: np.ndarray):
    data = write_csv(tmp_path / f"{name}.csv",
                     [(t, "positive" if y else "negative") for t, y in zip(texts, labels)])
    out = tmp_path / name
    result = CliRunner().invoke(cli, ["train", str(data), "-o", str(out), *SETTINGS])
    assert result.exit_code == 0, result.output + str(result.exception)
    return out, json.loads((out / "rnncli.json").read_text())["blend"]["parts"]


def test_each_part_learns_separable_data_and_nothing_from_permuted_labels(tmp_path):
    texts, labels = reviews(400, seed=0)
    held_texts, held_labels = reviews(200, seed=1)

    model, parts = train(tmp_path, "true", texts, labels)
    # the parts' own figures on the rows training set aside, as train measured them
    for part in ("rnn", "ngram"):
        assert parts[part]["validation_accuracy"] >= 0.9, parts
        assert parts[part]["test_accuracy"] >= 0.9, parts
    learned = held_out_accuracy(model, held_texts, held_labels)
    assert min(learned.values()) >= 0.9, learned

    permuted = np.random.default_rng(2).permutation(labels)
    assert abs(np.mean(permuted == labels) - 0.5) < 0.1  # about half the labels moved
    model, parts = train(tmp_path, "permuted", texts, permuted)
    chance = held_out_accuracy(model, held_texts, held_labels)
    assert max(chance.values()) <= 0.7, chance
    assert all(0.3 <= p["test_accuracy"] <= 0.7 for p in parts.values()), parts
