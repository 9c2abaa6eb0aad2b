"""A calibrated model: the temperature recorded in the manifest is applied alike by the
ONNX engine, the Keras model, the exported SavedModel and explain."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from rnncli.cli.main import cli
from rnncli.core import scoring
from rnncli.inference.predict import Predictor
from rnncli.modeldir import artifacts
from rnncli.training import blend

pytestmark = pytest.mark.slow
TEXTS = ["great movie", "boring and far too long", "Ça n'était pas terrible<br />",
         "not bad at all, I loved it", "这家酒店很好"]


def invoke(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


@pytest.fixture(scope="module")
def pair(tmp_path_factory, tiny_csv, train_model):
    """The same tiny model twice (no fit: deterministic), once with temperature 0.5."""
    out = tmp_path_factory.mktemp("calibrated")
    patch = pytest.MonkeyPatch()
    from rnncli.training import fitloop

    patch.setattr(fitloop, "fit", lambda *a, **k: ([{"epoch": 1, "loss": 0.69,
                                                     "accuracy": 0.5, "val_loss": 0.69,
                                                     "val_accuracy": 0.5, "seconds": 0.0}], 1))
    try:
        for name, temperature in (("plain", 1.0), ("hot", 0.5)):
            patch.setattr(blend, "calibrate", lambda labels, scores, weights=None, t=temperature: {
                "temperature": t, "validation_ece": 0.1, "validation_loss": 0.7,
                **({} if t == 1.0 else {"calibrated_validation_ece": 0.05,
                                        "calibrated_validation_loss": 0.6})})
            train_model(out / name, tiny_csv)
    finally:
        patch.undo()
    return out / "plain", out / "hot"


def test_every_engine_applies_the_temperature(pair, tmp_path):
    import tensorflow as tf

    plain, hot = pair
    manifest = json.loads((hot / artifacts.MANIFEST).read_text())
    assert manifest["calibration"]["temperature"] == 0.5 and manifest["format_version"] >= 6
    with Predictor.load(plain) as p:
        base = p.scores(TEXTS)
    with Predictor.load(hot) as p:
        onnx = p.scores(TEXTS)
    with Predictor.load(hot, engine="tf") as p:
        keras = p.scores(TEXTS)
    expected = scoring.with_temperature(base, 0.5)
    np.testing.assert_allclose(onnx, expected, atol=1e-5)
    np.testing.assert_allclose(keras, expected, atol=1e-4)
    assert np.array_equal(onnx >= 0.5, base >= 0.5)
    assert invoke("export", "-m", hot, "-o", tmp_path / "sm").exit_code == 0
    served = tf.saved_model.load(str(tmp_path / "sm"))
    np.testing.assert_allclose(np.asarray(served.serve(tf.constant(TEXTS))).ravel(), expected,
                               atol=1e-4)
    assert "temperature 0.50" in invoke("info", "-m", hot, "-f", "table").output


def test_explain_is_faithful_to_the_calibrated_model(pair):
    from rnncli.inference.explain import explain_records, load_explainer

    _, hot = pair
    with load_explainer(hot) as predictor:
        record = explain_records(predictor, ["great movie, boring plot"])[0]
        target = predictor.label_names.index(record["label"])
        for t in record["tokens"]:
            edited = record["text"][:t["start"]] + " qqzxv " + record["text"][t["end"]:]
            p = predictor.scores([record["text"], edited]).astype(float)
            odds = np.log(p / (1 - p)) * (1 if target == 1 else -1)
            assert abs(odds[0] - odds[1] - t["contribution"]) < 2e-3


@pytest.mark.parametrize("value", ["hot", 0, -1.0, 1e9, True, None])
def test_a_bad_temperature_in_the_manifest_is_refused(pair, tmp_path, value):
    import shutil

    out = shutil.copytree(pair[1], tmp_path / "m")
    manifest = json.loads((out / artifacts.MANIFEST).read_text())
    manifest["calibration"]["temperature"] = value
    (out / artifacts.MANIFEST).write_text(json.dumps(manifest))
    result = invoke("predict", "-m", out, "good")
    assert result.exit_code == 4 and "calibration.temperature" in result.output


def test_the_layer_and_numpy_agree_on_saturated_scores():
    from rnncli.network.layers import Temperature

    p = np.array([[1.0], [0.0], [0.9999999], [1e-9], [0.5], [0.3]], np.float32)
    for t in (0.05, 0.5, 3.0, 20.0):
        layer = np.asarray(Temperature(t)(p)).ravel()
        np.testing.assert_allclose(layer, scoring.with_temperature(p.ravel(), t), atol=2e-6)
    rows = np.array([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]], np.float32)
    for t in (0.05, 3.0, 20.0):
        np.testing.assert_allclose(np.asarray(Temperature(t)(rows)),
                                   scoring.with_temperature(rows, t), atol=2e-6)


def test_a_manifest_whose_temperature_differs_from_the_model_is_refused(pair, tmp_path):
    import shutil

    out = shutil.copytree(pair[1], tmp_path / "m")
    manifest = json.loads((out / artifacts.MANIFEST).read_text())
    manifest["calibration"]["temperature"] = 0.6
    (out / artifacts.MANIFEST).write_text(json.dumps(manifest))
    result = invoke("predict", "-m", out, "--engine", "tf", "good")
    assert result.exit_code == 4 and "temperature 0.5 where the manifest says 0.6" in \
        result.output
