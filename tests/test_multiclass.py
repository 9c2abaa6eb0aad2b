"""Models of three or more classes: a softmax head, the multinomial n-gram model, every
class's probability in predict, evaluate, the ONNX engine and the export; class weights.

One tiny three-class model (real reviews, labels negative / neutral / positive, where
"neutral" is every third row: the figures mean nothing) serves most tests; they assert on
shapes, keys, round trips and exit codes, never on accuracy.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY, interrupt_after_first_epoch, sample_rows, write_csv

from rnncli.cli.main import cli
from rnncli.inference.metrics import MULTI_METRIC_KEYS
from rnncli.modeldir import artifacts

pytestmark = pytest.mark.slow
CLASSES = ["negative", "neutral", "positive"]
# Texts the two engines must agree on: English, Chinese, Japanese, odd input.
PROBES = ["a wonderful, moving film", "dull and far too long", "NOT bad at all?!", "",
          "这款iPhone很好用", "ｻｰﾋﾞｽ最悪", "x" * 3000, "naïve café — 東京 😀"]


def invoke(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def jsonl(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def three_class_rows(n: int = 300) -> list[list[str]]:
    return [[text, "neutral" if i % 3 == 0 else label]
            for i, (text, label) in enumerate(sample_rows(n))]


@pytest.fixture(scope="module")
def three_csv(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("data") / "three.csv", three_class_rows())


@pytest.fixture(scope="module")
def three_model(tmp_path_factory, three_csv, train_model) -> Path:
    return train_model(tmp_path_factory.mktemp("models") / "three", three_csv)


# --------------------------------------------------------------------------- train


def test_the_manifest_records_the_classes_and_their_counts(three_model):
    manifest = artifacts.read_manifest(three_model)
    assert manifest["format_version"] == artifacts.FORMAT_VERSION
    assert manifest["labels"] == {"classes": CLASSES}
    assert manifest["threshold"] is None
    assert manifest["settings"]["classes"] == 3
    assert manifest["settings"]["class_weight"] == "none"
    counts = manifest["data"]["class_counts"]
    assert list(counts) == CLASSES and sum(counts.values()) == 300
    assert "positive_rate" not in manifest["data"]
    assert tuple(manifest["test"]) == MULTI_METRIC_KEYS
    assert np.array(manifest["test"]["confusion_matrix"]).shape == (3, 3)
    # the ONNX engine reproduced the Keras model at training time, or it would be absent
    assert {"core.onnx", "serving.npz"} <= set(manifest["files"])
    assert manifest["blend"]["parts"]["ngram"]["test_accuracy"] is not None


def test_info_shows_the_classes_with_their_counts(three_model):
    result = invoke("info", "-m", three_model, "-f", "table")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "3 classes: 'negative' (" in text and "'neutral' (100 rows)" in text
    assert "macro F1" in text


# --------------------------------------------------------------------------- predict


def test_records_give_every_class_probability_in_class_order(three_model):
    result = invoke("predict", "-m", three_model, "-f", "jsonl", "great movie", "awful", "")
    assert result.exit_code == 0, result.output
    records = jsonl(result.stdout)
    assert len(records) == 3
    for record in records[:2]:
        assert list(record) == ["text", "label", "score", "status", "scores"]
        assert list(record["scores"]) == CLASSES
        assert sum(record["scores"].values()) == pytest.approx(1, abs=1e-5)
        assert record["label"] == max(record["scores"], key=record["scores"].get)
        assert record["score"] == record["scores"][record["label"]]
    assert records[2] == {"text": "", "label": None, "score": None, "status": "empty",
                          "scores": None}


def test_csv_has_a_column_per_class_and_label_prints_the_label(three_model):
    result = invoke("predict", "-m", three_model, "-f", "csv", "great movie", "")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == ("text,label,score,status,score_negative,score_neutral,"
                        "score_positive")
    cells = lines[1].split(",")
    assert cells[1] in CLASSES and len(cells) == 7
    assert sum(map(float, cells[4:])) == pytest.approx(1, abs=1e-5)
    assert lines[2] == ",,,empty,,,"
    labels = invoke("predict", "-m", three_model, "-f", "label", "great movie", "bad")
    assert [line in CLASSES for line in labels.stdout.splitlines()] == [True, True]


def test_the_table_shows_the_top_classes(three_model):
    result = invoke("predict", "-m", three_model, "-f", "table", "great movie")
    assert result.exit_code == 0, result.output
    assert "top 3 classes" in result.stdout
    assert all(name in result.stdout for name in CLASSES)


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_threshold_is_a_usage_error_on_a_multi_class_model(three_model, command):
    result = invoke(command, "-m", three_model, "--threshold", "0.3",
                    *(["some text"] if command == "predict" else []))
    assert result.exit_code == 2
    assert ("--threshold applies to two-class models; this one has 3 classes (negative, "
            "neutral, positive)") in result.output


def test_both_engines_give_the_same_class_probabilities(three_model):
    from rnncli.inference.predict import Predictor

    with Predictor.load(three_model, engine="onnx") as onnx:
        fast = onnx.scores(PROBES)
    with Predictor.load(three_model, engine="tf") as tf:
        reference = tf.scores(PROBES)
    assert fast.shape == reference.shape == (len(PROBES), 3)
    np.testing.assert_allclose(fast, reference, atol=1e-4)


# --------------------------------------------------------------------------- evaluate


def test_evaluate_gives_the_multi_class_figures(three_model, three_csv):
    result = invoke("evaluate", "-m", three_model, "-f", "json")
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert tuple(figures) == MULTI_METRIC_KEYS
    assert figures["classes"] == CLASSES
    assert [c["class"] for c in figures["per_class"]] == CLASSES
    assert sum(map(sum, figures["confusion_matrix"])) == figures["n"] == 30
    table = invoke("evaluate", "-m", three_model, "-f", "table")
    assert "actual neutral" in table.stdout and "predicted positive" in table.stdout
    on_file = invoke("evaluate", str(three_csv), "-m", three_model, "-f", "json")
    assert json.loads(on_file.stdout)["n"] == 300


def test_evaluate_refuses_labels_the_model_does_not_know(three_model, tmp_path):
    data = write_csv(tmp_path / "other.csv", [["fine", "mixed"], ["bad", "negative"]])
    result = invoke("evaluate", str(data), "-m", three_model)
    assert result.exit_code == 3
    assert ("1 row has a label that is not the model's ('negative', 'neutral', 'positive'): "
            "'mixed' (1 row) (first at line 2); check --label-col") in result.output


# --------------------------------------------------------------------------- export


def test_the_saved_model_gives_every_class_probability(three_model, tmp_path):
    import tensorflow as tf

    from rnncli.inference.predict import Predictor

    result = invoke("export", "-m", three_model, "-o", tmp_path / "saved")
    assert result.exit_code == 0, result.output
    loaded = tf.saved_model.load(str(tmp_path / "saved"))  # owns the variables: keep it
    served = loaded.serve(tf.constant(PROBES)).numpy()
    with Predictor.load(three_model, engine="tf") as predictor:
        expected = predictor.scores(PROBES)
    assert served.shape == (len(PROBES), 3)
    np.testing.assert_allclose(served, expected, atol=1e-4)


# --------------------------------------------------------------------------- n-grams


def test_the_exact_multinomial_n_gram_model_is_served_by_both_engines(
        tmp_path, three_csv, train_model, no_fit):
    """--ngram-solver lbfgs with three classes: the softmax regression, C chosen on 60
    validation rows, refit, and its weights in the ONNX engine's file."""
    out = train_model(tmp_path / "m", three_csv, "--ngram-solver", "lbfgs",
                      "--val-split", "0.2")
    manifest = artifacts.read_manifest(out)
    assert manifest["blend"]["ngram_solver"] == "lbfgs"
    assert manifest["blend"]["ngram_refit"]["rows"] == 300 - 30
    assert "core.onnx" in manifest["files"]  # ONNX/Keras parity held at training
    from rnncli.modeldir.serving import read_serving

    serving = read_serving(out / "serving.npz")
    assert serving["outputs"] == 3 and serving["ngram_kernel"].shape[1] == 3


def test_class_weight_balanced_on_a_skewed_binary_file(tmp_path, train_model, no_fit):
    """Two classes, 1 negative in 5: the setting is recorded and both parts train with it
    (the balanced weights are scikit-learn's)."""
    from sklearn.utils.class_weight import compute_class_weight

    from rnncli.core.config import TrainConfig
    from rnncli.data.dataset import load_dataset
    from rnncli.training.fitting import _class_weights

    rows = [r for r in sample_rows(400) if r[1] == "positive"][:160]
    rows += [r for r in sample_rows(400) if r[1] == "negative"][:40]
    data = write_csv(tmp_path / "skewed.csv", rows)
    out = train_model(tmp_path / "m", data, "--class-weight", "balanced")
    manifest = artifacts.read_manifest(out)
    assert manifest["settings"]["class_weight"] == "balanced"
    assert manifest["data"]["class_counts"] == {"negative": 40, "positive": 160}
    dataset = load_dataset(data)
    np.testing.assert_allclose(
        _class_weights(TrainConfig(class_weight="balanced"), dataset),
        compute_class_weight("balanced", classes=np.array([0, 1]), y=dataset.labels))
    assert _class_weights(TrainConfig(), dataset) is None


def test_star_ratings_train_in_numeric_order(tmp_path, train_model, no_fit, no_onnx):
    """Labels 1, 2, 10 are classes in that order (not "1" < "10" < "2")."""
    stars = {"negative": "1", "positive": "10"}
    rows = [[text, "2" if i % 3 == 0 else stars[label]]
            for i, (text, label) in enumerate(sample_rows(240))]
    out = train_model(tmp_path / "m", write_csv(tmp_path / "stars.csv", rows))
    assert artifacts.read_manifest(out)["labels"] == {"classes": ["1", "2", "10"]}


# --------------------------------------------------------------------------- binary


def test_binary_records_have_the_same_fields_as_multi_class_ones(gru_model):
    """A two-class model's records have the fields a multi-class model's have, meaning the
    same: score is the label's probability, scores every class's; CSV gives both."""
    records = jsonl(invoke("predict", "-m", gru_model, "-f", "jsonl", "great", "").stdout)
    assert list(records[0]) == ["text", "label", "score", "status", "scores"]
    positive = records[0]["scores"]["positive"]
    assert records[0]["scores"] == {"negative": round(1 - positive, 6), "positive": positive}
    assert records[0]["score"] == records[0]["scores"][records[0]["label"]] >= 0.5
    assert records[1]["scores"] is None
    csv_out = invoke("predict", "-m", gru_model, "-f", "csv", "great").stdout.splitlines()
    assert csv_out[0] == "text,label,score,status,score_negative,score_positive"
    row = csv_out[1].split(",")
    assert [float(v) for v in row[2:3] + row[4:]] == [records[0]["score"],
                                                       round(1 - positive, 6), positive]


# --------------------------------------------------------------------------- options


def test_the_training_options_work_with_three_classes(tmp_path):
    """A stacked LSTM with attention pooling, word vectors, balanced class weights (the
    weighted Adam n-gram fit too), adversarial training, mixed precision and two devices
    (the CPU split in two stands in for two GPUs: sample weights and full batches under
    MirroredStrategy), in one fresh process, as the device split needs."""
    out = tmp_path / "m"
    env = {**os.environ, "RNNCLI_CPU_DEVICES": "2"}
    data = write_csv(tmp_path / "three.csv", three_class_rows(231))
    args = ["rnncli", "train", str(data), *TINY, "--epochs", "2", "--device", "cpu:0,1",
            "--cell", "lstm", "--layers", "2", "--pooling", "attention", "--word-vectors",
            "--class-weight", "balanced", "--adversarial", "0.3", "--mixed-precision",
            "-o", str(out)]
    result = subprocess.run(args, env=env, capture_output=True, timeout=600)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    manifest = artifacts.read_manifest(out)
    assert manifest["training"]["device"] == "cpu:0,cpu:1"
    assert manifest["training"]["precision"] == "mixed_bfloat16"
    assert manifest["settings"]["classes"] == 3 and manifest["settings"]["cell"] == "lstm"
    assert manifest["settings"]["class_weight"] == "balanced"
    assert manifest["settings"]["adversarial"] == 0.3
    assert {"core.onnx", "serving.npz"} <= set(manifest["files"])  # engines agreed
    records = jsonl(invoke("predict", "-m", out, "-f", "jsonl", "great movie").stdout)
    assert list(records[0]["scores"]) == CLASSES


def test_resume_continues_an_interrupted_three_class_run(tmp_path):
    """Ctrl-C after the first epoch, then --resume: the softmax network's state (weights,
    optimizer, history) is restored as a binary one's is."""
    data = write_csv(tmp_path / "three.csv", three_class_rows(600))
    out = tmp_path / "m"
    args = ["rnncli", "train", str(data), "-o", str(out), "--epochs", "2", "--patience", "5",
            "--seq-len", "64", "--units", "8", "--no-ngrams"]
    rest = interrupt_after_first_epoch(args)
    assert "kept the state after epoch 1" in rest and not out.exists(), rest
    resumed = invoke(*args[1:], "--resume")
    assert resumed.exit_code == 0, resumed.output[-2000:]
    assert "resuming after epoch 1" in resumed.output
    manifest = artifacts.read_manifest(out)
    assert [h["epoch"] for h in manifest["training"]["history"]] == [1, 2]
    assert manifest["labels"] == {"classes": CLASSES}


@pytest.mark.parametrize(("model", "extra"), [("three_model", []),
                                              ("gru_model", ["--threshold", "0"])])
def test_evaluate_lists_the_most_confidently_wrong_texts(model, extra, request):
    """--errors N: the wrong predictions made with the highest probability, in JSON and in
    the table; every figure set has the calibration error. (--threshold 0 calls every
    text positive, so the binary model surely has wrong rows to list.)"""
    model_dir = request.getfixturevalue(model)
    result = invoke("evaluate", "-m", model_dir, "-f", "json", "--errors", "3", *extra)
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert 0 <= figures["ece"] <= 1
    errors = figures["errors"]
    assert len(errors) <= 3 and (errors or not extra)
    assert all(e["label"] != e["predicted"] for e in errors)
    assert [e["score"] for e in errors] == sorted((e["score"] for e in errors), reverse=True)
    table = invoke("evaluate", "-m", model_dir, "-f", "table", "--errors", "2", *extra)
    assert "ece (calibration error)" in table.stdout
    assert ("most confidently wrong" in table.stdout) == bool(errors)
    plain = json.loads(invoke("evaluate", "-m", model_dir, "-f", "json", *extra).stdout)
    assert "errors" not in plain


def test_explain_a_three_class_model(three_model):
    from rnncli.inference.explain import explain_records, load_explainer

    texts = ["a great film, I loved it", "dull, boring and far too long", "it was okay"]
    with load_explainer(three_model) as predictor:
        records = explain_records(predictor, texts)
        engine = predictor.engine
        names = predictor.label_names
        for record in records:
            target = names.index(record["label"])
            assert record["label"] == max(record["scores"], key=record["scores"].get)
            # the n-gram shares add up to the class's logit against the others' mean,
            # which is log p(class) - mean log p(other classes) of the n-gram model
            total = record["ngram_base"] + sum(t["ngram"] for t in record["tokens"])
            assert abs(total - record["ngram_log_odds"]) < 1e-4
            p = np.log(engine.ngram_scores([engine.tokens(record["text"])])[0].astype(float))
            assert abs(p[target] - np.delete(p, target).mean() - total) < 1e-3
            # and the blend's contributions are occlusion reruns of predict
            t = record["tokens"][1]
            edited = record["text"][:t["start"]] + " qqzxv " + record["text"][t["end"]:]
            q = predictor.scores([record["text"], edited]).astype(float)
            odds = np.log(q[:, target]) - np.log(1 - q[:, target])
            assert abs(odds[0] - odds[1] - t["contribution"]) < 2e-3


def test_report_of_a_three_class_model(three_model, tmp_path):
    result = invoke("report", "-m", three_model, "-o", tmp_path / "r", "--errors", "3")
    assert result.exit_code == 0, result.output
    page = (tmp_path / "r" / "index.html").read_text(encoding="utf-8")
    names = artifacts.label_names(json.loads((three_model / "rnncli.json").read_text()))
    assert len(names) == 3
    for name in names:
        assert f"<tr><td>{name}</td>" in page  # one per-class row each
    assert page.count('src="data:image/png;base64,') == 6
    assert "<th>macro_f1</th>" in page
