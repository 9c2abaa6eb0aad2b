"""The plain install (``pip install rnncli``: no TensorFlow, Keras, tf2onnx, onnx or SciPy)
predicts, explains, evaluates and describes a model trained with the full one, with the
same scores; the commands that need the ``train`` or ``report`` extra exit 2 with the
line that installs it.

Two ways: here, by running the CLI in a fresh interpreter where those packages cannot be
imported (always); and, when ``RNNCLI_PLAIN_VENV`` names a virtual environment made with
a plain ``pip install .`` (``.ci/run`` makes one), in that environment itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

MODELS = Path(__file__).resolve().parent / "models"
FORMAT4 = MODELS / "format4"
EXPECTED4 = json.loads((MODELS / "format4.expected.json").read_text(encoding="utf-8"))
TRAIN_EXTRA = ("tensorflow", "keras", "tf2onnx", "onnx", "scipy")
ABSENT = (*TRAIN_EXTRA, "matplotlib", "pandas", "sklearn")

# The CLI with the packages of the extras made unimportable (as if not installed).
WITHOUT_EXTRAS = f"""
import sys
for name in {ABSENT!r}:
    sys.modules[name] = None
from rnncli.cli.main import main
sys.argv = ["rnncli", *sys.argv[1:]]
main()
"""
PLAIN_VENV = os.environ.get("RNNCLI_PLAIN_VENV")


def _simulated(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_EXTRAS, *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def _plain(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(PLAIN_VENV) / "bin" / "rnncli"), *map(str, args)],
                          capture_output=True, text=True, timeout=120)


RUNNERS = [pytest.param(_simulated, id="simulated"),
           pytest.param(_plain, id="plain-venv", marks=pytest.mark.skipif(
               not PLAIN_VENV, reason="RNNCLI_PLAIN_VENV is not set (.ci/run sets it)"))]


@pytest.mark.parametrize("run", RUNNERS)
def test_predict_explain_evaluate_info_without_the_train_extra(run):
    texts = EXPECTED4["texts"]
    result = run("predict", "-m", FORMAT4, "-f", "jsonl", *texts)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == len(texts)
    scored = [(r["scores"]["positive"], expected) for r, expected
              in zip(records, EXPECTED4["scores"]["onnx"]) if r["status"] != "empty"]
    assert len(scored) == len(texts) - 1  # one text is blank
    got, expected = zip(*scored)  # records round to 6 decimals
    np.testing.assert_allclose(got, expected, atol=2e-6, rtol=0)
    result = run("explain", "-m", FORMAT4, "-f", "json", texts[0])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["tokens"]
    result = run("evaluate", "-m", FORMAT4, "-f", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["n"] > 0
    result = run("info", "-m", FORMAT4, "-f", "json")
    assert result.returncode == 0 and json.loads(result.stdout)["format_version"] == 4


@pytest.mark.parametrize("run", RUNNERS)
@pytest.mark.parametrize("args, extra", [
    (["train", "data.csv"], "train"),
    (["export", "-m", str(FORMAT4), "-o", "served"], "train"),
    (["devices"], "train"),
    (["predict", "-m", str(FORMAT4), "--engine", "tf", "fine"], "train"),
    (["evaluate", "-m", str(FORMAT4), "--engine", "tf"], "train"),
    (["report", "-m", str(FORMAT4), "-o", "report"], "report"),
])
def test_commands_that_need_an_extra_say_how_to_install_it(run, args, extra, tmp_path,
                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run(*args)
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("Error: ") and line.endswith(f"pip install 'rnncli[{extra}]'")
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())  # said before anything was written


@pytest.mark.skipif(not PLAIN_VENV, reason="RNNCLI_PLAIN_VENV is not set (.ci/run sets it)")
def test_the_plain_venv_has_none_of_the_extras():
    python = Path(PLAIN_VENV) / "bin" / "python"
    probe = ("import importlib.util, json; print(json.dumps([n for n in "
             f"{ABSENT!r} if importlib.util.find_spec(n)]))")
    found = subprocess.run([str(python), "-c", probe], capture_output=True, text=True,
                           check=True).stdout
    assert json.loads(found) == []


SERVERS = [pytest.param((sys.executable, "-c", WITHOUT_EXTRAS), id="simulated"),
           pytest.param((str(Path(PLAIN_VENV or ".") / "bin" / "rnncli"),), id="plain-venv",
                        marks=pytest.mark.skipif(not PLAIN_VENV, reason="RNNCLI_PLAIN_VENV "
                                                 "is not set (.ci/run sets it)"))]


@pytest.mark.slow
@pytest.mark.parametrize("command", SERVERS)
def test_the_plain_install_serves_what_the_full_one_trained(command, gru_model):
    """A model trained here (the full install) served by the plain one: the scores the
    full install's own engine gives."""
    from test_serve import Server

    import rnncli

    texts = ["a wonderful, moving film", "dull and far too long", "一部好电影", ""]
    with rnncli.load(gru_model) as model:
        expected = model.predict(texts)
    server = Server(gru_model, command=command)
    try:
        status, records = server.request("POST", "/predict", {"texts": texts})
    finally:
        server.stop()
    assert status == 200
    assert [(r["label"], r["scores"], r["status"]) for r in records] == \
        [(r["label"], r["scores"], r["status"]) for r in expected]
