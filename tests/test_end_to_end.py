"""Real but tiny models: train, predict, evaluate, export, info, devices, and exit codes.

Models come from session fixtures in conftest.py (240 real reviews, one epoch, 4 units),
so these tests assert on files, shapes, round trips and one-output-per-input, never on
accuracy.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import (
    TINY,
    interrupt_after_first_epoch,
    positive_probability,
    sample_rows,
    two_workers,
    write_csv,
)

from rnncli.cli.main import cli
from rnncli.inference.metrics import CLASS_KEYS, METRIC_KEYS
from rnncli.modeldir import artifacts

pytestmark = pytest.mark.slow


def invoke(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def jsonl(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


# --------------------------------------------------------------------------- train


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_model_directory_contract(gru_model):
    assert gru_model.stat().st_mode & 0o077 == 0o777 & ~_umask() & 0o077  # not private
    names = sorted(p.name for p in gru_model.iterdir())
    assert names == ["core.onnx", "model.keras", "rnncli.json", "serving.npz", "test.jsonl.gz"]
    manifest = json.loads((gru_model / "rnncli.json").read_text())
    for key in ("format_version", "rnncli_version", "keras_version", "tensorflow_version",
                "settings", "labels", "threshold", "data", "training", "validation", "test",
                "files"):
        assert key in manifest
    assert manifest["labels"] == {"negative": "negative", "positive": "positive"}
    assert manifest["settings"]["seq_len"] == 32 and manifest["settings"]["max_tokens"] <= 2000
    assert manifest["data"]["fingerprint"].startswith("sha256:")
    assert len(manifest["training"]["history"]) == manifest["training"]["epochs_run"] == 1
    assert tuple(manifest["test"]) == METRIC_KEYS + CLASS_KEYS
    for name, digest in manifest["files"].items():
        assert artifacts.sha256_file(gru_model / name) == digest
    # nothing left beside it: no staging or lock debris other than the lock file
    debris = [p.name for p in gru_model.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    assert debris == []


def test_no_pickle_and_vocabulary_inside(gru_model):
    import zipfile

    with zipfile.ZipFile(gru_model / "model.keras") as z:
        names = z.namelist()
    assert any(n.startswith("assets/") and n.endswith("vocabulary.txt") for n in names)
    assert not any(n.endswith((".pkl", ".pickle")) for n in names)


def test_auto_settings_are_derived_and_recorded(tmp_path, tiny_csv, no_onnx, no_fit):
    out = tmp_path / "auto"
    result = invoke("train", tiny_csv, "-o", out, "--epochs", "1", "--units", "4",
                    "--embed-dim", "8", "--quiet", "--no-ngrams")
    assert result.exit_code == 0, result.output
    settings = json.loads((out / "rnncli.json").read_text())["settings"]
    assert 16 <= settings["seq_len"] <= 800 and settings["seq_len"] % 8 == 0
    assert 3 <= settings["max_tokens"] <= 20002


def test_unicode_line_breaks_survive_save_and_reload(tmp_path, train_model, no_fit):
    rows = sample_rows(60)
    rows += [["Great\x85film\u2028loved it\r\nreally", "positive"],
             ["awful\u2029waste\x85of time", "negative"]] * 10
    data = write_csv(tmp_path / "nel.csv", rows)
    out = train_model(tmp_path / "m", data)
    result = invoke("predict", "-m", out, "-f", "jsonl", "Great\x85film")
    assert result.exit_code == 0 and jsonl(result.stdout)[0]["status"] == "ok"


def test_symlinked_output_keeps_the_link(tmp_path, tiny_csv, train_model, no_onnx, no_fit):
    real = tmp_path / "real"
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    train_model(link, tiny_csv, "--no-ngrams")
    assert link.is_symlink() and (real / "rnncli.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]


def test_real_train_command_keeps_stderr_clean(tmp_path, tiny_csv, no_onnx):
    """The real command (a fresh process: TensorFlow's C++ start-up lines go to file
    descriptor 2) prints only rnncli's own lines; --quiet (in this process) only warnings
    (240 rows: the validation and test splits are small)."""
    args = ["rnncli", "train", str(tiny_csv), *TINY, "--no-ngrams"]
    quiet = CliRunner().invoke(cli, [*args[1:], "-o", str(tmp_path / "q")])
    assert quiet.exit_code == 0 and quiet.stdout == ""
    assert [line[:24] for line in quiet.stderr.splitlines()] == [
        "warning: the validation ", "warning: the test split "]
    loud = subprocess.run([a for a in args if a != "--quiet"] + ["-o", str(tmp_path / "l")],
                          capture_output=True, timeout=300)
    assert loud.returncode == 0 and loud.stdout == b""
    lines = loud.stderr.decode().splitlines()
    assert lines[0].startswith("text column:") and lines[-1].startswith("validation accuracy")
    assert sum(line.startswith("epoch 1/1") for line in lines) == 1
    for noise in ("I0000", "absl", "oneDNN", "cuda", "Warning", "Traceback"):
        assert noise not in loud.stderr.decode()


def test_retraining_replaces_the_model(old_model, tiny_csv, train_model, no_onnx, no_fit):
    before = artifacts.sha256_file(old_model / "model.keras")
    train_model(old_model, tiny_csv, "--seed", "7", "--no-ngrams")
    manifest = json.loads((old_model / "rnncli.json").read_text())
    assert manifest["settings"]["seed"] == 7 and not manifest["settings"]["ngrams"]
    assert artifacts.sha256_file(old_model / "model.keras") != before
    assert not (old_model / artifacts.ONNX_FILE).exists()  # nothing of the old model stays


def test_interrupted_training_leaves_the_old_model(tmp_path, tiny_csv, old_model, monkeypatch):
    out = old_model
    before = {p.name: artifacts.sha256_file(p) for p in out.iterdir()}
    import keras

    def interrupted_fit(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(keras.Model, "fit", interrupted_fit)
    result = invoke("train", tiny_csv, "-o", out, *TINY)
    assert result.exit_code == 130 and "interrupted" in result.output
    assert {p.name: artifacts.sha256_file(p) for p in out.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_unexpected_errors_exit_1_without_traceback(tmp_path, tiny_csv, monkeypatch):
    import rnncli.training.train

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(rnncli.training.train, "fit_and_publish", boom)
    result = invoke("train", tiny_csv, "-o", tmp_path / "m")
    assert result.exit_code == 1
    assert "unexpected RuntimeError: disk on fire" in result.output
    assert "Traceback" not in result.output
    # --debug sets RNNCLI_DEBUG in this process; set here first, monkeypatch undoes it
    monkeypatch.setenv("RNNCLI_DEBUG", "1")
    result = invoke("--debug", "train", tiny_csv, "-o", tmp_path / "m")
    assert result.exit_code == 1 and "Traceback" in result.output


def test_absent_gpu_is_an_error_not_a_fallback(tiny_csv, tmp_path, gru_model):
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    for args in (["train", tiny_csv, "-o", tmp_path / "m", "--device", "gpu", *TINY],
                 ["predict", "-m", gru_model, "--device", "gpu:1", "hi"],
                 ["evaluate", "-m", gru_model, "--device", "gpu"]):
        result = invoke(*args)
        assert result.exit_code == 5, result.output
        assert "no GPU" in result.output and "cpu" in result.output


def test_two_devices_train_mirrored(tmp_path, tiny_csv, gru_model):
    """--device cpu:0,1 with the CPU split in two (RNNCLI_CPU_DEVICES=2) stands in for two
    GPUs: MirroredStrategy splits each batch between them. A fresh process: the split must
    happen before TensorFlow starts."""
    out = tmp_path / "mirrored"
    env = {**os.environ, "RNNCLI_CPU_DEVICES": "2"}
    # 231 rows: 185 train (a partial last batch), 23 validation (odd, smaller than a batch).
    data = write_csv(tmp_path / "odd.csv", sample_rows(231))
    args = ["rnncli", "train", str(data), *TINY, "--epochs", "2", "--device", "cpu:0,1",
            "--no-ngrams", "-o", str(out)]
    result = subprocess.run(args, env=env, capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    manifest = json.loads((out / "rnncli.json").read_text())
    assert manifest["training"]["device"] == "cpu:0,cpu:1"
    assert manifest["data"]["split"]["validation"] % 2 == 1
    assert invoke("predict", "-m", out, "great movie").exit_code == 0
    # A batch that cannot be split evenly is refused before any work (the device choice
    # itself stands in: this process has one CPU device).
    from rnncli.core.config import TrainConfig
    from rnncli.core.errors import UsageError
    from rnncli.network import runtime
    from rnncli.training import fitting

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runtime, "select_devices", lambda spec: ["/cpu:0", "/cpu:1"])
        with pytest.raises(UsageError, match="multiple of 2"):
            fitting._devices("cpu:0,1", None, TrainConfig(batch_size=33), 185, fitting.Reporter())
    # Without the split there is one CPU device.
    one = invoke("train", tiny_csv, "-o", tmp_path / "x", "--device", "cpu:0,1", *TINY)
    assert one.exit_code == 5 and "RNNCLI_CPU_DEVICES" in one.output
    # predict runs on one device: several are refused when the options are read.
    several = invoke("predict", "-m", gru_model, "--device", "gpu:0,1", "hi")
    assert several.exit_code == 2 and "only 'rnncli train'" in several.output


def test_two_machines_train_from_tf_config(tmp_path, tiny_csv):
    """Two processes on this machine stand in for two machines: TF_CONFIG gives the cluster,
    MultiWorkerMirroredStrategy splits each batch between them; only the chief (worker 0)
    writes the model, and both saw the same training."""
    chief, worker = two_workers(lambda index: [
        "rnncli", "train", str(tiny_csv), *TINY[:-1], "--epochs", "2",
        "-o", str(tmp_path / f"out{index}")])
    assert "worker 1 of 2 processes: training finished; the chief writes" in worker
    assert not (tmp_path / "out1").exists()
    manifest = json.loads((tmp_path / "out0" / "rnncli.json").read_text())
    assert manifest["training"]["workers"] == 2 and manifest["training"]["replicas"] == 2

    def epochs(log):  # "epoch 1/2  loss ...  val_acc ...  8.1s", without the seconds
        return [line.rsplit("  ", 1)[0] for line in log.splitlines() if line.startswith("epoch ")]

    # synchronous training: the same figures in both processes
    assert len(epochs(chief)) == 2 and epochs(chief) == epochs(worker)
    assert invoke("predict", "-m", tmp_path / "out0", "great movie").exit_code == 0


def test_mixed_precision_trains_and_saves_a_float32_model(tmp_path, tiny_csv, train_model):
    """--mixed-precision: bfloat16 on the CPU; float16 with loss scaling (the GPU policy)
    also trains on the CPU. Either way the saved model computes in float32."""
    import zipfile

    from rnncli.core.config import TrainConfig
    from rnncli.training.train import run

    out = train_model(tmp_path / "bf16", tiny_csv, "--mixed-precision", "--no-ngrams")
    manifest = json.loads((out / "rnncli.json").read_text())
    assert manifest["training"]["precision"] == "mixed_bfloat16"
    assert manifest["training"]["device"] == "cpu:0"
    config = zipfile.ZipFile(out / "model.keras").read("config.json").decode()
    assert "mixed_" not in config
    config = TrainConfig(epochs=1, units=4, embed_dim=8, seq_len=32, max_tokens=2000,
                         batch_size=32, ngrams=False)
    manifest = run(tiny_csv, config, out=tmp_path / "f16", mixed_precision="mixed_float16")
    assert manifest["training"]["precision"] == "mixed_float16"
    assert np.isfinite(manifest["validation"]["loss"])
    result = invoke("predict", "-m", tmp_path / "f16", "--engine", "onnx", "great movie")
    assert result.exit_code == 0


# --------------------------------------------------------------------------- predict


def test_predict_arguments(gru_model):
    """Each argument is scored as the Keras model scores it (the reference: TensorFlow,
    not the ONNX engine predict uses), and labelled from its positive probability."""
    from rnncli.inference.predict import Predictor

    texts = ["great movie", "a dull, boring waste of time", "!!!", "zzqx unknownword"]
    result = invoke("predict", "-m", gru_model, "-f", "jsonl", *texts)
    assert result.exit_code == 0, result.output
    records = jsonl(result.stdout)
    assert [r["text"] for r in records] == texts
    with Predictor.load(gru_model, engine="tf", device="cpu") as keras_model:
        reference = keras_model.scores(texts)
    positive = [r["scores"]["positive"] for r in records]
    np.testing.assert_allclose(positive, reference, atol=1e-4, rtol=0)
    assert len({round(p, 3) for p in positive}) == len(texts)  # no constant answer
    threshold = json.loads((gru_model / "rnncli.json").read_text())["threshold"]
    for r, p in zip(records, positive):
        assert r["status"] == "ok" and r["score"] in r["scores"].values()
        assert abs(sum(r["scores"].values()) - 1) < 2e-6
        assert r["label"] == ("positive" if p >= threshold else "negative")


def test_predict_stdin_keeps_blank_lines(gru_model):
    result = invoke("predict", "-m", gru_model, input="good\n\nbad\n")
    records = jsonl(result.stdout)
    assert result.exit_code == 0 and len(records) == 3
    assert [r["status"] for r in records] == ["ok", "empty", "ok"]
    assert records[1]["score"] is None and records[1]["label"] is None
    dash = invoke("predict", "-m", gru_model, "-", input="good\n\nbad\n")
    assert jsonl(dash.stdout) == records


def test_predict_invalid_utf8_is_marked_and_exit_3(gru_model):
    result = CliRunner().invoke(cli, ["predict", "-m", str(gru_model)],
                                input=b"fine\n\xff\xfe broken\nalso fine\r\n")
    records = jsonl(result.stdout)
    assert result.exit_code == 3
    assert [r["status"] for r in records] == ["ok", "invalid_utf8", "ok"]
    assert records[2]["text"] == "also fine"
    # Across many windows: the count of all, the numbers of the first five
    many = CliRunner().invoke(cli, ["predict", "-m", str(gru_model), "--batch-size", "1"],
                              input=b"ok\n\xff\n" * 8)
    assert many.exit_code == 3 and len(jsonl(many.stdout)) == 16
    assert "8 input line(s) not valid UTF-8 (line 2, 4, 6, 8, 10, ...)" in many.stderr


def test_non_utf8_arguments_are_marked_not_crashed(gru_model):
    bad = b"bad\xffbyte".decode("utf-8", "surrogateescape")  # how Python passes such argv
    result = invoke("predict", "-m", gru_model, "-f", "jsonl", bad, "fine")
    records = jsonl(result.stdout)
    assert result.exit_code == 3
    assert [r["status"] for r in records] == ["invalid_utf8", "ok"]
    assert records[0]["text"] == "bad\ufffdbyte" and records[0]["score"] is not None
    assert "1 input line(s) not valid UTF-8 (line 1)" in result.stderr


def test_huge_lines_are_cut_and_still_answered(gru_model, monkeypatch):
    import rnncli.inference.predict

    monkeypatch.setattr(rnncli.inference.predict, "MAX_LINE_BYTES", 64)
    lines = b"short\n" + "é".encode() * 100 + b"\n" + b"x" * 64 + b"\nlast"
    result = CliRunner().invoke(cli, ["predict", "-m", str(gru_model)], input=lines)
    records = jsonl(result.stdout)
    assert result.exit_code == 0
    assert [r["status"] for r in records] == ["ok", "truncated", "ok", "ok"]
    assert records[1]["text"] == "é" * 32 and records[1]["score"] is not None
    assert records[3]["text"] == "last"


def test_markup_in_texts_is_printed_literally(gru_model):
    result = invoke("predict", "-m", gru_model, "-f", "table", "closing [/] tag", "[bold]x")
    assert result.exit_code == 0
    assert "closing [/] tag" in result.stdout and "[bold]x" in result.stdout


def test_empty_stdin_gives_nothing(gru_model):
    result = invoke("predict", "-m", gru_model, input="")
    assert result.exit_code == 0 and result.stdout == ""


def _records_as(fmt: str, output: str) -> list[tuple]:
    """(text, label, score, status) from predict's output in ``fmt``; the label format
    has labels alone; the table has its status column when a row is not ok."""
    if fmt in ("json", "jsonl"):
        parsed = json.loads(output) if fmt == "json" else jsonl(output)
        return [(r["text"], r["label"], r["score"], r["status"]) for r in parsed]
    if fmt == "csv":
        import csv
        import io

        return [(r["text"], r["label"] or None, float(r["score"]) if r["score"] else None,
                 r["status"]) for r in csv.DictReader(io.StringIO(output))]
    if fmt == "label":
        return [(None, line or None, None, None) for line in output.splitlines()]
    rows = [[cell.strip() for cell in line.split("│")]
            for line in output.splitlines() if "│" in line]  # the table's body
    return [(text, None if label == "-" else label, None if score == "-" else float(score),
             status) for text, label, score, status in rows]


# A threshold between the texts' scores makes both labels occur; one text is empty.
FORMAT_TEXTS = ["good film", 'terrible, "dull", long', "a wonderful, moving film", "   ",
                "boring"]


@pytest.mark.parametrize("fmt", ["json", "csv", "label", "table"])
def test_predict_formats_agree(gru_model, fmt):
    """Every format gives the labels and scores JSON lines give for the same texts."""
    reference = jsonl(invoke("predict", "-m", gru_model, "-f", "jsonl", *FORMAT_TEXTS).stdout)
    positive = sorted(r["scores"]["positive"] for r in reference if r["status"] == "ok")
    assert positive[0] < positive[1]
    threshold = repr((positive[0] + positive[1]) / 2)  # the lowest alone is negative
    args = ("predict", "-m", gru_model, "--threshold", threshold)
    expected = _records_as("jsonl", invoke(*args, "-f", "jsonl", *FORMAT_TEXTS).stdout)
    assert [label for _, label, _, _ in expected].count("negative") == 1
    assert [status for *_, status in expected] == ["ok", "ok", "ok", "empty", "ok"]
    result = invoke(*args, "-f", fmt, *FORMAT_TEXTS)
    assert result.exit_code == 0, result.output
    got = _records_as(fmt, result.stdout)
    if fmt == "label":
        assert got == [(None, label, None, None) for _, label, _, _ in expected]
    elif fmt == "table":  # cells are stripped: the empty text is ""
        assert got == [(text.strip(), *rest) for text, *rest in expected]
    else:
        assert got == expected


def test_threshold_override(gru_model):
    texts = ["a wonderful film", "boring and far too long", "fine"]
    records = jsonl(invoke("predict", "-m", gru_model, *texts).stdout)
    scores = sorted(positive_probability(r) for r in records)
    assert scores[0] < scores[-1]

    def labels(threshold):
        result = invoke("predict", "-m", gru_model, "--threshold", threshold, *texts)
        assert result.exit_code == 0, result.output
        return {positive_probability(r): r["label"] for r in jsonl(result.stdout)}

    assert set(labels("0").values()) == {"positive"}
    assert set(labels("1").values()) == {"negative"}
    between = labels(repr((scores[0] + scores[1]) / 2))  # the lowest alone is negative
    assert [between[s] for s in scores] == ["negative", "positive", "positive"]


def test_stdin_is_streamed_lazily(gru_model):
    """Results of the first window come out before the rest of the input is read."""
    from rnncli.inference.predict import STREAM_WINDOW, Predictor

    predictor = Predictor.load(gru_model)
    consumed = []

    def lines():
        for i in range(10_000):
            consumed.append(i)
            yield f"line {i}\n".encode()

    stream = predictor.stream(lines(), batch_size=50)
    first = next(stream)
    assert len(first) == 50 * STREAM_WINDOW and len(consumed) <= 50 * STREAM_WINDOW + 1
    total = len(first) + sum(len(batch) for batch in stream)
    assert total == 10_000


def test_real_command_in_a_pipe(gru_model):
    """The installed console script: clean stderr, one record per line, quiet on head -1."""
    env = {**os.environ, "RNNCLI_MODEL": str(gru_model)}
    proc = subprocess.run(["rnncli", "predict"], input=b"good\n\nbad\n", capture_output=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 3
    assert proc.stderr == b""  # TensorFlow's start-up chatter is contained
    pipe = subprocess.Popen(["rnncli", "predict", "--batch-size", "10"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    pipe.stdin.write(b"some review\n" * 5000)
    pipe.stdin.close()
    pipe.stdout.readline()
    pipe.stdout.close()  # like '| head -1'
    assert pipe.wait(timeout=120) == 0
    assert pipe.stderr.read() == b""


# --------------------------------------------------------------------------- evaluate


def test_evaluate_saved_split(gru_model):
    result = invoke("evaluate", "-m", gru_model, "-f", "json")
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert tuple(figures) == METRIC_KEYS + CLASS_KEYS  # today's keys first, unchanged
    manifest = json.loads((gru_model / "rnncli.json").read_text())
    assert figures["n"] == manifest["data"]["split"]["test"]
    (tn, fp), (fn, tp) = figures["confusion_matrix"]
    assert tn + fp + fn + tp == figures["n"]
    assert figures["accuracy"] == pytest.approx(manifest["test"]["accuracy"], abs=1e-4)


def test_evaluate_given_file(gru_model, tiny_csv):
    result = invoke("evaluate", tiny_csv, "-m", gru_model, "-f", "json")
    assert result.exit_code == 0
    figures = json.loads(result.stdout)
    assert figures["n"] == 240


def test_evaluate_lists_skipped_lines_on_request(gru_model, tmp_path):
    data = write_csv(tmp_path / "gaps.csv", [["good film", "positive"], ["", "negative"],
                                              ["  ", "positive"], ["awful", "negative"]])
    result = CliRunner().invoke(cli, ["evaluate", str(data), "-m", str(gru_model),
                                      "--show-skipped", "-f", "json"])
    assert result.exit_code == 0, result.output
    assert "skipped (empty text): lines 3, 4" in result.stderr
    assert "skipped (empty text): lines" not in CliRunner().invoke(
        cli, ["evaluate", str(data), "-m", str(gru_model), "-f", "json"]).stderr


def test_evaluate_foreign_labels_exit_3(gru_model, tmp_path):
    data = write_csv(tmp_path / "other.csv", [["nice", "good"], ["meh", "bad"]])
    result = invoke("evaluate", data, "-m", gru_model)
    assert result.exit_code == 3
    assert ("2 rows have labels that are not the model's ('negative', 'positive'): 'good' "
            "(1 row), 'bad' (1 row) (first at line 2)") in result.output


# --------------------------------------------------------------------------- export, info


def test_export_serves_raw_strings_with_predict_scores(gru_model, tmp_path):
    import tensorflow as tf

    dest = tmp_path / "served"
    result = invoke("export", "-m", gru_model, "-o", dest)
    assert result.exit_code == 0, result.output
    texts = ["great movie", "boring", "", "Ça n'était pas terrible<br />", "x" * 5000]
    loaded = tf.saved_model.load(str(dest))
    served = np.asarray(loaded.serve(tf.constant(texts))).reshape(-1)
    signature = loaded.signatures["serving_default"]
    via_signature = np.asarray(list(signature(tf.constant(texts)).values())[0]).reshape(-1)
    predicted = [positive_probability(r) for r in jsonl(invoke(
        "predict", "-m", gru_model, "-f", "jsonl", *texts[:2], *texts[3:]).stdout)]
    np.testing.assert_allclose(served[[0, 1, 3, 4]], predicted, atol=1e-4)
    np.testing.assert_allclose(via_signature, served, atol=1e-6)
    again = invoke("export", "-m", gru_model, "-o", dest)
    assert again.exit_code == 2 and "--force" in again.output
    assert invoke("export", "-m", gru_model, "-o", dest, "--force").exit_code == 0


def test_lstm_with_out_and_model_dir(lstm_model):
    manifest = json.loads((lstm_model / "rnncli.json").read_text())
    assert manifest["settings"]["cell"] == "lstm" and manifest["settings"]["layers"] == 2
    result = invoke("predict", "-m", lstm_model, "-f", "jsonl", "fine")
    assert result.exit_code == 0 and jsonl(result.stdout)[0]["status"] == "ok"
    assert invoke("evaluate", "-m", lstm_model, "-f", "json").exit_code == 0


def test_model_from_environment(gru_model, monkeypatch):
    monkeypatch.setenv("RNNCLI_MODEL", str(gru_model))
    result = invoke("predict", "-f", "label", "fine")
    assert result.exit_code == 0 and result.stdout.strip() in {"positive", "negative"}


def test_info(gru_model):
    table = invoke("info", "-m", gru_model, "-f", "table")
    assert table.exit_code == 0 and "Bidirectional GRU" in table.output
    shown = " ".join(table.output.split())  # however the table wraps
    assert "1-2-grams of words; output =" in shown  # English: words, and nothing else
    manifest = json.loads((gru_model / "rnncli.json").read_text())
    weight, parts = manifest["blend"]["rnn_weight"], manifest["blend"]["parts"]
    assert f"output = {weight:.2f} x GRU" in shown
    # each part and the blend on the same rows, validation and test
    assert (f"test accuracy GRU {parts['rnn']['test_accuracy']:.4f}, n-gram "
            f"{parts['ngram']['test_accuracy']:.4f}, both "
            f"{manifest['test']['accuracy']:.4f}") in shown
    assert "refit" not in shown  # 24 validation rows: too few for the refit
    data = json.loads(invoke("info", "-m", gru_model, "-f", "json").stdout)
    assert data["settings"]["cell"] == "gru"


def test_devices_lists_the_cpu():
    result = invoke("devices", "-f", "json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert any(r["option"] == "cpu" for r in rows)


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_mid_training_keeps_the_old_model(tmp_path, old_model, signum, code):
    """A real signal to the real command, while it trains into a good model directory."""
    out = old_model
    before = {p.name: artifacts.sha256_file(p) for p in out.iterdir()}
    big = write_csv(tmp_path / "big.csv", sample_rows(600))
    proc = subprocess.Popen(["rnncli", "train", str(big), "-o", str(out), "--epochs", "50",
                             "--patience", "50", "--seq-len", "64", "--no-ngrams"],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE)
    for line in proc.stderr:  # plain progress: one line per epoch
        if line.startswith(b"epoch 1/"):
            break
    proc.send_signal(signum)
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == code, rest
    assert (b"interrupted" in rest or b"terminated" in rest) and b"Traceback" not in rest
    assert {p.name: artifacts.sha256_file(p) for p in out.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    assert invoke("predict", "-m", out, "fine").exit_code == 0


def test_resume_continues_an_interrupted_run(tmp_path):
    """Ctrl-C after the first epoch keeps its state beside the model directory; --resume
    with other settings is refused; --resume with the same ones continues from there."""
    import re

    big = write_csv(tmp_path / "big.csv", sample_rows(600))
    out = tmp_path / "m"
    args = ["rnncli", "train", str(big), "-o", str(out), "--epochs", "3", "--patience", "5",
            "--seq-len", "64", "--no-ngrams"]
    rest = interrupt_after_first_epoch(args, timeout=60)
    kept = re.search(r"kept the state after epoch (\d)", rest)
    assert kept and not out.exists(), rest
    assert (tmp_path / ".m.resume").is_dir()

    # The rest in this process (the interruption had to be a real signal to a real one).
    changed = invoke(*args[1:], "--resume", "--lr", "0.01")
    assert changed.exit_code == 2 and "settings changed" in changed.output
    state = tmp_path / ".m.resume"
    import shutil

    shutil.copytree(state, tmp_path / "kept")
    for weights in state.glob("epoch-*.weights.h5"):
        weights.write_bytes(weights.read_bytes()[:1000])  # truncated by a crash, say
    broken = invoke(*args[1:], "--resume")
    assert broken.exit_code == 2 and "unreadable" in broken.output, broken.output[-2000:]
    # --epochs 1: the interrupted run had finished that; its best weights, as kept, are
    # published without training more.
    shutil.rmtree(state)
    shutil.copytree(tmp_path / "kept", state)
    kept_state = json.loads((state / "rnncli-resume.json").read_text())
    with np.load(state / kept_state["best"]["weights"]) as best:
        kept_weights = [best[f"arr_{i}"] for i in range(len(best.files))]
    first = invoke(*args[1:5], "--epochs", "1", *args[7:], "--resume")
    assert first.exit_code == 0, first.output[-2000:]
    assert not re.search(r"^epoch \d", first.output, re.M)  # nothing trained
    from rnncli.network import loading
    _, model = loading.load_model(out)
    published = model.get_layer("core").get_weights()
    assert len(published) == len(kept_weights)
    for got, want in zip(published, kept_weights):
        np.testing.assert_array_equal(got, want)
    shutil.rmtree(out)
    shutil.copytree(tmp_path / "kept", state)
    shutil.rmtree(tmp_path / "kept")
    resumed = invoke(*args[1:], "--resume")
    err = resumed.output
    assert resumed.exit_code == 0, err[-2000:]
    assert f"resuming after epoch {kept.group(1)}" in err
    assert not re.search(r"^epoch 1/3", err, re.M)  # epoch 1 is not trained again
    manifest = json.loads((out / "rnncli.json").read_text())
    assert [h["epoch"] for h in manifest["training"]["history"]] == [1, 2, 3]
    assert not (tmp_path / ".m.resume").exists()  # published: the state is gone
    nothing = invoke(*args[1:], "--resume")
    assert nothing.exit_code == 2 and "no interrupted training to resume" in nothing.output


def _hashes(model_dir: Path) -> dict[str, str]:
    return {p.name: artifacts.sha256_file(p) for p in model_dir.iterdir()}


@pytest.mark.parametrize("failure", ["write_manifest", "_exchange", "h5py"])
def test_failed_write_while_publishing_keeps_the_old_model(tmp_path, tiny_csv, old_model,
                                                          no_onnx, no_fit, monkeypatch, failure):
    """A full disk while the new model is written beside the old one (write_manifest's
    OSError, or h5py's RuntimeError while the weights are written), or an I/O error at the
    swap itself (_exchange): exit 2, the old model as it was, nothing left beside it."""
    import errno

    import keras

    from rnncli.core import fsio

    out = old_model
    before = _hashes(out)

    def fail(*args, **kwargs):
        if failure == "h5py":  # what h5py raises when the disk fills during a write
            raise RuntimeError("Can't write data (file write failed: errno = 28, error "
                               "message = 'No space left on device')")
        code = errno.ENOSPC if failure == "write_manifest" else errno.EIO
        raise OSError(code, os.strerror(code))

    (tmp_path / ".m.tmp-0123456789ab").mkdir()  # a SIGKILLed run's: cleared under the lock
    where, name = {"write_manifest": (artifacts, "write_manifest"),
                   "_exchange": (fsio, "_exchange"), "h5py": (keras.Model, "save")}[failure]
    monkeypatch.setattr(where, name, fail)
    result = invoke("train", tiny_csv, "-o", out, *TINY, "--no-ngrams", "--seed", "7")
    assert result.exit_code == 2, result.output
    assert "cannot write the model" in result.output and "left as it was" in result.output
    if failure == "h5py":
        assert "No space left on device" in result.output
    assert _hashes(out) == before
    # no staging or lock debris; the trained state stays for --resume
    assert {p.name for p in tmp_path.iterdir()} <= {"m", ".m.resume"}
    monkeypatch.undo()
    assert invoke("predict", "-m", out, "fine").exit_code == 0


def test_smuggled_code_in_a_model_never_runs(gru_model, tmp_path):
    """A model.keras holding a Lambda layer with marshalled code (which would create a
    canary file) and the manifest rewritten to match: refused before Keras reads it. The
    payload is real: Keras without safe mode runs it."""
    import keras

    canary = tmp_path / "canary"
    evil_fn = eval(compile(f"lambda x: (__import__('pathlib').Path({str(canary)!r}).touch(), x)[1]",
                           "<smuggled>", "eval"))
    evil = keras.Sequential([keras.Input((1,)), keras.layers.Lambda(evil_fn)])
    evil.save(tmp_path / "evil.keras")
    canary.unlink(missing_ok=True)  # building it above ran the function once
    keras.saving.load_model(tmp_path / "evil.keras", safe_mode=False)
    assert canary.exists()  # the payload works where nothing checks it
    canary.unlink()

    out = tmp_path / "copy"
    import shutil

    shutil.copytree(gru_model, out)
    shutil.copy(tmp_path / "evil.keras", out / artifacts.MODEL_FILE)
    artifacts.write_manifest(out, json.loads((out / "rnncli.json").read_text()))
    for args in (["predict", "-m", out, "--engine", "tf", "hi"], ["evaluate", "-m", out,
                                                                  "--engine", "tf"],
                 ["export", "-m", out, "-o", tmp_path / "sm"]):
        result = invoke(*args)
        assert result.exit_code == 4 and "refusing to load" in result.output, result.output
    assert not canary.exists()


@pytest.mark.parametrize("pooling", ["last", "mean", "attention"])
def test_every_pooling_saves_reloads_and_exports(tmp_path, tiny_csv, train_model, pooling,
                                                 no_fit):
    import tensorflow as tf

    out = train_model(tmp_path / pooling, tiny_csv, "--pooling", pooling, "--no-ngrams")
    texts = ["fine film", "!!!", "a" * 300]
    scores = [positive_probability(r) for r in jsonl(invoke(
        "predict", "-m", out, "-f", "jsonl", "--engine", "onnx", *texts).stdout)]
    assert invoke("export", "-m", out, "-o", tmp_path / "sm").exit_code == 0
    served = tf.saved_model.load(str(tmp_path / "sm"))
    np.testing.assert_allclose(np.asarray(served.serve(tf.constant(texts))).ravel(), scores,
                               atol=1e-4)


@pytest.mark.parametrize("engine", ["tf", "onnx"])
def test_length_grouped_scoring_keeps_input_order(gru_model, engine):
    """Both engines (score_texts in TensorFlow) batch texts of similar length; the scores
    come back in input order."""
    from rnncli.inference.predict import Predictor

    predictor = Predictor.load(gru_model, engine=engine)
    texts = ["long review " * (i * 37 % 50) + f"number {i}" for i in range(23)]
    one_by_one = np.concatenate([predictor.scores([t]) for t in texts])
    np.testing.assert_allclose(predictor.scores(texts, batch_size=4), one_by_one, atol=1e-5)


@pytest.mark.parametrize("engine", ["tf", "onnx"])
def test_padding_never_changes_a_score(gru_model, engine):
    """Texts are padded per batch; the masks (Keras's, in the TensorFlow engine) must make
    a text's score independent of the other texts in its batch (short alone vs next to a
    long one)."""
    from rnncli.inference.predict import Predictor

    predictor = Predictor.load(gru_model, engine=engine)
    assert predictor.engine.name == engine
    alone = predictor.scores(["a good film"])
    beside_long = predictor.scores(["a good film", "long review " * 200])[:1]
    np.testing.assert_allclose(alone, beside_long, atol=1e-5)


def test_word_vectors_from_a_file_and_from_unlabelled_texts(tmp_path, tiny_csv, train_model,
                                                           no_onnx, no_fit):
    vectors = tmp_path / "vectors.txt"
    vectors.write_text("3 4\nthe 0.1 0.2 0.3 0.4\nfilm 1 2 3 4\ngood -1 0 1 0.5\n")
    out = train_model(tmp_path / "glove", tiny_csv, "--embeddings", vectors, "--no-ngrams")
    manifest = json.loads((out / "rnncli.json").read_text())
    assert manifest["settings"]["embed_dim"] == 4
    assert manifest["data"]["embeddings"] == {"file": "vectors.txt", "found": 3}
    # the file's vectors sit in the rows of their words (not fitted: as they were set)
    from rnncli.network import loading
    _, model = loading.load_model(out)
    vocab = model.get_layer("vectorizer").get_vocabulary()
    table = model.get_layer("core").get_layer("embedding").get_weights()[0]
    np.testing.assert_allclose(table[vocab.index("film")], [1, 2, 3, 4], atol=1e-5)
    np.testing.assert_allclose(table[vocab.index("good")], [-1, 0, 1, 0.5], atol=1e-5)
    unlabelled = write_csv(tmp_path / "unlabelled.csv", [[r[0]] for r in sample_rows(300)],
                           header=("review",))
    result = invoke("train", tiny_csv, "-o", tmp_path / "ppmi",
                    *[a for a in TINY if a != "--quiet"], "--unlabelled", unlabelled,
                    "--no-ngrams", "--word-vectors", "--pretrain-epochs", "0")
    assert result.exit_code == 0, result.output[-2000:]
    assert "learned word vectors from 492 texts" in result.output
    manifest = json.loads((tmp_path / "ppmi" / "rnncli.json").read_text())
    assert manifest["data"]["unlabelled"] == {"file": "unlabelled.csv", "texts": 300}
    assert "pretraining" not in manifest["data"] and manifest["settings"]["pretrain_epochs"] == 0
    bad = tmp_path / "bad.txt"
    bad.write_text("the 0.1 0.2\nfilm 1\n")
    result = invoke("train", tiny_csv, "-o", tmp_path / "bad", *TINY, "--embeddings", bad)
    assert result.exit_code == 3 and "line 2" in result.output


def test_length_batches_use_every_row_once_per_epoch_cut_to_their_longest():
    """Each epoch's order is its own, and the same whenever it is made again (what
    --resume inside an epoch relies on); a resumed run's batches are the unbroken run's."""
    from rnncli.training import epochs as E
    from rnncli.training.fitloop import length_epochs

    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 40, size=203)
    ids = np.zeros((203, 40), dtype=np.int32)
    for i, n in enumerate(lengths):
        ids[i, :n] = i + 2  # row i is recognisable by its token
    one_epoch = length_epochs(ids, np.arange(203) % 2, 16, seed=1)

    def rows_of(data):
        seen = []
        for x, _ in data:
            x = x.numpy()
            assert x.shape[1] == max(1, lengths[x[:, 0] - 2].max())  # cut to the longest
            seen.append(list(x[:, 0] - 2))
        return seen

    epochs = [rows_of(one_epoch(e)) for e in (0, 1, 1)]
    for seen in epochs:
        assert sorted(sum(seen, [])) == list(range(203)) and len(seen) == 13
    assert epochs[0] != epochs[1]  # reshuffled
    assert epochs[1] == epochs[2]  # made again: the same
    assert one_epoch(0).cardinality().numpy() == 13
    unbroken = rows_of(E.segments(one_epoch, 0, 0, 3, 13)[0].data)
    resumed = [rows_of(part.data) for part in E.segments(one_epoch, 1, 5, 3, 13)]
    assert len(unbroken) == 39 and unbroken[13:] == epochs[1] + unbroken[26:]
    assert resumed == [epochs[1][5:], unbroken[26:]]  # the rest of epoch 2, then epoch 3
    other = length_epochs(ids, np.arange(203) % 2, 16, seed=2)
    assert rows_of(other(0)) != epochs[0]  # --seed matters


# --------------------------------------------------------------------------- n-gram blend


def test_saved_model_serves_the_recorded_blend(gru_model):
    """model.keras computes w * RNN + (1 - w) * n-gram model, with w from the manifest."""
    import tensorflow as tf

    manifest = json.loads((gru_model / "rnncli.json").read_text())
    assert manifest["settings"]["ngrams"] is True
    blend = manifest["blend"]
    assert 0 <= blend["rnn_weight"] <= 1 and blend["ngrams"] > 0
    for part in ("rnn", "ngram"):
        assert set(blend["parts"][part]) == {"validation_accuracy", "test_accuracy"}
    # words: Adam with early stopping (and 1-2-grams), as "auto" chooses for them
    assert manifest["settings"]["ngram_solver"] == "adam" and blend["ngram_epochs"] >= 1
    assert manifest["settings"]["ngram_order"] == 2
    from rnncli.network import loading
    model = loading.load_keras_model(gru_model)
    texts = tf.constant(["a great movie", "dull, dull, dull", "", "<br />?!"])
    ids = model.get_layer("truncate")(model.get_layer("vectorizer")(texts))
    rnn = model.get_layer("core")(ids).numpy()
    ngram = model.get_layer("ngram")(model.get_layer("ngram_vectorizer")(texts)).numpy()
    w = blend["rnn_weight"]
    np.testing.assert_allclose(model(texts).numpy(), w * rnn + (1 - w) * ngram, atol=1e-6)


def test_the_ngram_refit_is_recorded_and_shown(tmp_path, tiny_csv, no_onnx, no_fit):
    """With 60 validation rows the served n-gram model is refit on training + validation
    rows; the manifest and info say so, with the test accuracy before the refit."""
    out = tmp_path / "model"
    result = invoke("train", tiny_csv, "-o", out, *TINY, "--val-split", "0.25")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "rnncli.json").read_text())
    split, refit = manifest["data"]["split"], manifest["blend"]["ngram_refit"]
    assert split["validation"] == 60
    assert refit["rows"] == split["train"] + split["validation"]
    shown = " ".join(invoke("info", "-m", out, "-f", "table").output.split())
    assert (f"n-gram part refit on the {refit['rows']} training + validation rows "
            f"(before it: test accuracy n-gram {refit['before']['ngram_test_accuracy']:.4f},"
            f" both {refit['before']['test_accuracy']:.4f})") in shown


def test_unigrams_fitted_exactly_serve_the_same_scores_in_both_engines(tmp_path, tiny_csv,
                                                                       no_fit):
    """--ngram-order 1 --ngram-solver lbfgs on English words: recorded, shown, and the ONNX
    engine's n-grams match TextVectorization's."""
    from rnncli.inference.predict import Predictor

    out = tmp_path / "model"
    result = invoke("train", tiny_csv, "-o", out, *TINY, "--ngram-order", "1",
                    "--ngram-solver", "lbfgs")
    assert result.exit_code == 0, result.output
    settings = json.loads((out / "rnncli.json").read_text())["settings"]
    assert (settings["ngram_order"], settings["ngram_solver"]) == (1, "lbfgs")
    assert "1-grams of words" in " ".join(invoke("info", "-m", out, "-f", "table")
                                          .output.split())
    texts = ["a great film", "not good, not good at all", "", "dull dull dull"]
    onnx = Predictor.load(out, engine="onnx")
    tf = Predictor.load(out, engine="tf", device="cpu")
    np.testing.assert_allclose(onnx.scores(texts), tf.scores(texts), atol=1e-4, rtol=0)


def test_ngram_features_are_unit_length_sublinear_tfidf():
    """NgramLogistic's features, checked against the formula computed by hand."""
    import tensorflow as tf

    from rnncli.network.layers import NgramLogistic

    layer = NgramLogistic(4)
    counts = tf.SparseTensor([[0, 0], [0, 1], [0, 3], [1, 2]], [5, 1, 3, 2], [2, 4])
    layer(counts)
    idf = np.array([0.0, 1.5, 2.0, 1.2], np.float32)
    kernel = np.array([[0.7], [-1.0], [2.0], [0.5]], np.float32)
    layer.idf.assign(idf)
    layer.kernel.assign(kernel)
    layer.bias.assign([0.25])
    dense = np.array([[5, 1, 0, 3], [0, 0, 2, 0]], np.float32)
    features = np.where(dense > 0, 1 + np.log(np.maximum(dense, 1)), 0) * idf
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    expected = 1 / (1 + np.exp(-(features @ kernel + 0.25)))
    np.testing.assert_allclose(layer(counts).numpy(), expected, rtol=1e-5)


def test_ngram_model_never_asks_for_xla(monkeypatch):
    """Keras's jit_compile="auto" turns XLA on when any GPU is listed; XLA has no sparse
    matmul, so the n-gram layer must opt out (a real GPU machine crashed without it)."""
    import tensorflow as tf

    from rnncli.network import model as M

    gpu = tf.config.PhysicalDevice(name="/physical_device:GPU:0", device_type="GPU")
    real = tf.config.list_physical_devices
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: real(kind) + ([gpu] if kind in (None, "GPU") else []))
    ngram_model = M.build_ngram_model(8, np.ones(8, np.float32))
    ngram_model.compile(optimizer="adam", loss="binary_crossentropy")  # jit_compile="auto"
    assert ngram_model.jit_compile is False


def test_ngram_vocabulary_leaves_out_the_start_marker(gru_model):
    from rnncli.network import loading
    vocab = loading.load_keras_model(gru_model).get_layer("ngram_vectorizer").get_vocabulary()
    assert len(vocab) > 100
    assert not [g for g in vocab if g == "xxbos" or g.startswith("xxbos ")]


def test_no_ngrams_trains_the_rnn_alone(tmp_path, tiny_csv, train_model, no_fit):
    out = train_model(tmp_path / "m", tiny_csv, "--no-ngrams")
    manifest = json.loads((out / "rnncli.json").read_text())
    assert manifest["settings"]["ngrams"] is False and manifest["blend"] is None
    from rnncli.network import loading
    names = {layer.name for layer in loading.load_keras_model(out).layers}
    assert "ngram" not in names and "blend" not in names
    result = invoke("predict", "-m", out, "great movie")
    assert result.exit_code == 0 and jsonl(result.stdout)[0]["status"] == "ok"
    assert "none (RNN alone)" in invoke("info", "-m", out, "-f", "table").output
