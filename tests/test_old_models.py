"""Models written by earlier versions of rnncli keep loading and scoring exactly as they
did (tests/models/README.md says how each was made)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rnncli.cli.main import cli
from rnncli.inference.predict import Predictor

MODELS = Path(__file__).resolve().parent / "models"
FORMAT2 = MODELS / "format2"
EXPECTED = json.loads((MODELS / "format2.expected.json").read_text(encoding="utf-8"))


def test_format2_scores_as_before_with_onnx():
    predictor = Predictor.load(FORMAT2, engine="onnx")
    assert predictor.engine.name == "onnx"
    np.testing.assert_allclose(predictor.scores(EXPECTED["texts"]),
                               EXPECTED["scores"]["onnx"], atol=1e-6, rtol=0)
    # The old tokenizer: a Chinese clause is one token, full-width letters stay as they are.
    assert predictor.engine.tokens("这款iPhone很好用") == ["xxbos", "这款iphone很好用"]
    assert predictor.engine.tokens("ＡＢＣ") == ["xxbos", "ａｂｃ"]


@pytest.mark.slow
def test_format2_scores_as_before_with_tensorflow():
    predictor = Predictor.load(FORMAT2, engine="tf", device="cpu")
    np.testing.assert_allclose(predictor.scores(EXPECTED["texts"]),
                               EXPECTED["scores"]["tf"], atol=1e-6, rtol=0)


def test_format2_info_names_its_tokenizer():
    result = CliRunner().invoke(cli, ["info", "-m", str(FORMAT2), "-f", "json"])
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["format_version"] == 2 and "tokenizer" not in manifest["settings"]
    table = CliRunner().invoke(cli, ["info", "-m", str(FORMAT2), "-f", "table"])
    shown = " ".join(table.output.split())
    assert "300 tokens (words)" in shown and "1-2-grams of words; output = 0.50 x GRU" in shown


def test_a_manifest_that_disagrees_with_serving_npz_is_refused(tmp_path):
    """serving.npz (version 1: "words") and a manifest edited to say "cjk-chars" disagree:
    the ONNX engine would tokenize otherwise than the Keras model, so it refuses."""
    import shutil

    model = shutil.copytree(FORMAT2, tmp_path / "m")
    manifest = json.loads((model / "rnncli.json").read_text())
    manifest["format_version"] = 3
    manifest["settings"].update(tokenizer="cjk-chars", bigram_dim=0)
    (model / "rnncli.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(cli, ["predict", "-m", str(model), "--engine", "onnx", "好"])
    assert result.exit_code == 4
    assert "tokenizes as 'words' where the manifest says 'cjk-chars'" in result.output


FORMAT4 = MODELS / "format4"
EXPECTED4 = json.loads((MODELS / "format4.expected.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("engine", ["onnx", pytest.param("tf", marks=pytest.mark.slow)])
def test_format4_scores_as_before(engine):
    """A binary model of the last format before more than two classes: one output, no
    "classes" setting, serving.npz version 3."""
    with Predictor.load(FORMAT4, engine=engine, device="cpu") as predictor:
        assert predictor.label_names == ("negative", "positive")
        np.testing.assert_allclose(predictor.scores(EXPECTED4["texts"]),
                                   EXPECTED4["scores"][engine], atol=1e-6, rtol=0)
        records = predictor.records(["a wonderful, moving film"])
    positive = records[0]["scores"]["positive"]
    assert records[0]["label"] == ("positive" if positive >= 0.5 else "negative")


def test_format4_info_and_evaluate():
    result = CliRunner().invoke(cli, ["info", "-m", str(FORMAT4), "-f", "table"])
    assert result.exit_code == 0, result.output
    shown = " ".join(result.output.split())
    assert "negative 'negative', positive 'positive', threshold 0.5" in shown
    figures = CliRunner().invoke(cli, ["evaluate", "-m", str(FORMAT4), "-f", "json"])
    assert figures.exit_code == 0, figures.output
    assert json.loads(figures.stdout)["confusion_matrix"][0][0] >= 0
