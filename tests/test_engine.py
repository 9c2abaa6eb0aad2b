"""The TensorFlow-free predict engine (ONNX Runtime + Python tokenization) against the
reference Keras model: same tokens, same scores (1e-4), no TensorFlow import, and the
same refusals for a bad or tampered model directory."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from rnncli import artifacts, engine
from rnncli.cli import cli
from rnncli.errors import ModelError, UsageError
from rnncli.predict import Predictor, choose_engine

from conftest import sample_rows

# Texts where a re-implementation of the standardization would most likely slip.
TRICKY = [
    "", " ", "!!!", "???!", "'", "''", "' '", "a' 'b", "a'  'b", "'quoted'", "rock'n'roll",
    "don't", "it’s ‘fine’ `really`", "ʼtwas", "NOT BAD?!", "1/10", "10/10!!!", "x" * 3000,
    "<br /><br />tags<b>bold</b> <i", "<" + "a" * 250 + ">", "a<>b", "ΟΔΥΣΣΕΥΣ ΚΑΙ ΣΥ",
    "ΣΑΣ.", "Σ", "aΣb", "İSTANBUL ıi", "Ⱟ ꟀꟐ 𐕰", "ﬀ ß ẞ", "naïve café — 東京 😀", "nul\x00after",
    "\x00", "tab\tand\u0085nel\u2028line\u2029", "\u00a0nbsp\u3000ideographic", "e\u0301",
    "١٢٣ ٤٥", "𝐁𝐨𝐥𝐝 𝟏𝟐", "Ⅻ ⅻ", "ǅ ǈ", "a\u200bb\u200d", "\ufeffbom", "😀👍🏽",
]


def invoke(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


# --------------------------------------------------------------------------- fast


def test_choose_engine():
    both = {"files": {"model.keras": "x", "core.onnx": "y", "serving.npz": "z"}}
    keras_only = {"files": {"model.keras": "x"}}
    assert choose_engine(both) == "onnx"
    assert choose_engine(both, "auto", "cpu") == "onnx"
    assert choose_engine(both, "auto", "gpu:1") == "tf"
    assert choose_engine(both, "tf") == "tf"
    assert choose_engine(keras_only) == "tf"
    with pytest.raises(ModelError, match="no ONNX files"):
        choose_engine(keras_only, "onnx")
    with pytest.raises(UsageError, match="runs on the CPU"):
        choose_engine(both, "onnx", "gpu")


def _tables():
    return {"keep": [[48, 57], [97, 122]], "lower_from": [65], "lower_to": ["a"],
            "max_chars": 100, "start_token": "xxbos"}


def test_serving_file_round_trip(tmp_path):
    path = tmp_path / "serving.npz"
    engine.write_serving(path, tokens=["", "[UNK]", "xxbos", "good"], seq_len=8,
                         rnn_weight=0.25, tables=_tables(), ngrams=["[UNK]", "good"],
                         idf=[0.0, 1.5], kernel=[[0.0], [2.0]], bias=[0.5])
    serving = engine.read_serving(path)
    assert serving["tokens"] == ["", "[UNK]", "xxbos", "good"]
    assert serving["ngrams"] == ["[UNK]", "good"]
    assert serving["text"]["rnn_weight"] == 0.25 and serving["text"]["seq_len"] == 8
    np.testing.assert_array_equal(serving["ngram_kernel"], [0.0, 2.0])


def test_serving_file_with_pickled_objects_is_refused(tmp_path):
    canary = tmp_path / "canary"

    class Smuggled:
        def __reduce__(self):
            return (open, (str(canary), "w"))

    path = tmp_path / "serving.npz"
    np.savez(path, text=np.array([Smuggled()], dtype=object))
    with pytest.raises(ModelError, match="unreadable"):
        engine.read_serving(path)
    assert not canary.exists()


@pytest.mark.parametrize("change", ["version", "lengths", "not_zip"])
def test_malformed_serving_file_is_a_model_error(tmp_path, change):
    path = tmp_path / "serving.npz"
    engine.write_serving(path, tokens=["", "[UNK]"], seq_len=8, rnn_weight=0.5,
                         tables=_tables(), ngrams=["[UNK]", "good"], idf=[0.0, 1.0],
                         kernel=[0.0, 1.0], bias=[0.0])
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    if change == "version":
        text = json.loads(arrays["text"].tobytes())
        arrays["text"] = engine._encode(json.dumps({**text, "version": 99}))
    elif change == "lengths":
        arrays["ngram_idf"] = np.zeros(5, np.float32)
    np.savez(path, **arrays)
    if change == "not_zip":
        path.write_bytes(b"not a zip at all")
    with pytest.raises(ModelError, match="serving.npz: unreadable"):
        engine.read_serving(path)


# --------------------------------------------------------------------------- slow

slow = pytest.mark.slow


@pytest.fixture(scope="module")
def standardizers():
    """(Python Standardizer from TensorFlow's tables, TensorFlow's own standardize)."""
    from rnncli import model as M

    tables = M.standardize_tables()
    python = engine.Standardizer(keep=np.asarray(tables["keep"]),
                                 lower_from=np.asarray(tables["lower_from"]),
                                 lower_to=tables["lower_to"], max_chars=tables["max_chars"],
                                 start_token=tables["start_token"])

    def reference(texts):
        return [t.decode("utf-8") for t in M.standardize(M.tf.constant(texts)).numpy()]

    return python, reference


@slow
def test_standardization_matches_tensorflow_on_tricky_texts(standardizers):
    python, reference = standardizers
    assert [python(t) for t in TRICKY] == reference(TRICKY)


@slow
@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(exclude_categories=("Cs",))), min_size=1,
                max_size=20),
       st.lists(st.text(alphabet=st.sampled_from(list("aZ9 '!?`<>/\u2019\u03a3\x00\t.-")),
                        max_size=40), min_size=1, max_size=20))
def test_standardization_matches_tensorflow_on_any_text(standardizers, anything, ascii_like):
    python, reference = standardizers
    texts = anything + ascii_like
    assert [python(t) for t in texts] == reference(texts)


@slow
@pytest.mark.parametrize("fixture", ["gru_model", "lstm_model"])
def test_engines_agree_on_a_fixed_sample(request, fixture):
    model_dir = request.getfixturevalue(fixture)
    texts = [row[0] for row in sample_rows(400)[240:]] + TRICKY
    onnx = Predictor.load(model_dir, engine="onnx")
    reference = Predictor.load(model_dir, engine="tf", device="cpu")
    assert onnx.engine.name == "onnx" and reference.engine.name == "tf"
    np.testing.assert_allclose(onnx.scores(texts), reference.scores(texts), atol=1e-4, rtol=0)
    # one text at a time, and in parallel batches, give the same scores
    np.testing.assert_allclose(onnx.scores(texts[:5], batch_size=1),
                               onnx.scores(texts)[:5], atol=1e-6, rtol=0)


@slow
def test_predict_does_not_import_tensorflow(gru_model):
    code = ("import sys; from rnncli.cli import cli\n"
            f"try: cli.main(['predict', '-m', {str(gru_model)!r}, '-f', 'jsonl', 'good film'])\n"
            "except SystemExit as e: assert not e.code, e.code\n"
            "heavy = [m for m in ('tensorflow', 'keras') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "ok" and proc.stderr == ""


def _copy(model_dir, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(model_dir, out)
    return out


@slow
def test_model_without_onnx_files_falls_back_to_tensorflow(gru_model, tmp_path):
    out = _copy(gru_model, tmp_path)
    for name in (engine.ONNX_FILE, engine.SERVING_FILE):
        (out / name).unlink()
    manifest = json.loads((out / "rnncli.json").read_text())
    artifacts.write_manifest(out, manifest)
    result = invoke("predict", "-m", out, "-f", "jsonl", "good film")
    assert result.exit_code == 0, result.output
    result = invoke("predict", "-m", out, "--engine", "onnx", "good film")
    assert result.exit_code == 4 and "no ONNX files" in result.output
    assert "tf only" in invoke("info", "-m", out, "-f", "table").output


@slow
def test_tampered_onnx_files_are_refused(gru_model, tmp_path):
    out = _copy(gru_model, tmp_path)
    with open(out / engine.ONNX_FILE, "ab") as fh:
        fh.write(b"\0")
    result = invoke("predict", "-m", out, "good film")
    assert result.exit_code == 4 and "core.onnx" in result.output and "sha256" in result.output
    # A graph that is not ONNX at all, with the manifest rewritten to match it.
    (out / engine.ONNX_FILE).write_bytes(b"\x08\x07garbage")
    artifacts.write_manifest(out, json.loads((out / "rnncli.json").read_text()))
    result = invoke("predict", "-m", out, "good film")
    assert result.exit_code == 4 and "ONNX Runtime cannot load it" in result.output
    assert "Traceback" not in result.output


@slow
def test_engine_option_errors(gru_model):
    result = invoke("predict", "-m", gru_model, "--engine", "onnx", "--device", "gpu", "x")
    assert result.exit_code == 2 and "runs on the CPU" in result.output
    result = invoke("evaluate", "-m", gru_model, "--engine", "onnx", "-f", "json")
    assert result.exit_code == 0, result.output
    onnx = json.loads(result.stdout)
    tf = json.loads(invoke("evaluate", "-m", gru_model, "--engine", "tf", "-f", "json").stdout)
    assert onnx["accuracy"] == tf["accuracy"] and abs(onnx["loss"] - tf["loss"]) < 1e-4


@slow
def test_failed_onnx_export_still_publishes_the_keras_model(tmp_path, tiny_csv, train_model,
                                                            monkeypatch):
    from rnncli import export

    def broken(*args, **kwargs):
        raise RuntimeError("converter exploded")

    monkeypatch.setattr(export, "write_onnx", broken)
    out = train_model(tmp_path / "m", tiny_csv, "--no-ngrams")
    assert sorted(p.name for p in out.iterdir()) == ["model.keras", "rnncli.json",
                                                     "test.jsonl.gz"]
    assert invoke("predict", "-m", out, "good film").exit_code == 0
