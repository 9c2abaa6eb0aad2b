"""Small rules with large consequences, tested by direct calls: which epoch a resumed run
restores, the label a printed score gets, how --resume recognises a word-vector file,
what --debug shows, worker threads released, the Keras internals rnncli mends."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from rnncli.inference.predict import Predictor
from rnncli.training import resume

# --------------------------------------------------------------------------- resume


def test_best_epoch_compares_the_losses_early_stopping_compares():
    """Rounded to 5 places both are 0.12345 and the first would win; EarlyStopping, on the
    raw values, restores the second. A resumed run must restore the same epoch."""
    raw = [0.1234549, 0.1234541]
    assert [round(v, 5) for v in raw] == [0.12345, 0.12345]
    assert resume.best_epoch(raw) == 2
    assert resume.best_epoch([0.5, None, 0.4, 0.4]) == 3  # the first of equals
    assert resume.best_epoch([None, None]) == 0


def test_finished_counts_patience_from_the_raw_best():
    history = [{"epoch": i + 1} for i in range(3)]
    # best raw epoch 2, one epoch without improvement since: not finished with patience 2
    state = {"history": history, "val_losses": [0.30000049, 0.30000041, 0.31]}
    assert not resume.finished(state, epochs=10, patience=2)
    assert resume.finished(state, epochs=3, patience=2)  # all epochs run
    state["val_losses"] = [0.2, 0.3, 0.31]
    assert resume.finished(state, epochs=10, patience=2)


# --------------------------------------------------------------------------- records


class _Scores:
    def __init__(self, values):
        self.values = np.asarray(values, np.float32)

    def scores(self, texts, batch_size=256):
        return self.values[: len(texts)]


@pytest.mark.parametrize("raw, score, label", [
    # decided on the raw score, as evaluate decides (metrics.decide); the record's score
    # is the label's own probability, 1 - 0.49999997 printed as 0.5
    (0.49999997, 0.5, "neg"),
    (0.4999994, 0.500001, "neg"),
    (0.5, 0.5, "pos"),
])
def test_the_label_is_decided_on_the_raw_score(raw, score, label):
    predictor = Predictor(Path("m"), {"labels": {"negative": "neg", "positive": "pos"}},
                          _Scores([np.float64(raw)]), 0.5)
    predictor.engine.values = np.asarray([raw], np.float64)
    [record] = predictor.records(["text"])
    assert (record["score"], record["label"]) == (score, label)


# --------------------------------------------------------------------------- --resume key


def test_a_word_vector_file_is_known_without_reading_all_of_it(tmp_path, monkeypatch):
    from rnncli.training import resume

    path = tmp_path / "glove.txt"
    with open(path, "wb") as fh:
        fh.write(b"the 0.1 0.2\n")
        fh.truncate(64 * 2**20)  # sparse: 64 MB
    read = []
    real_open = open

    class Counting:
        def __init__(self, fh):
            self.fh = fh

        def read(self, n=-1):
            data = self.fh.read(n)
            read.append(len(data))
            return data

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    monkeypatch.setattr(resume, "open", lambda *a, **k: Counting(real_open(*a, **k)),
                        raising=False)
    key = resume.file_key(path)
    assert sum(read) <= 2 * resume.KEY_SAMPLE_BYTES
    monkeypatch.undo()
    assert resume.file_key(path) == key
    stat = path.stat()
    with open(path, "r+b") as fh:  # the same size and time, other words at the start
        fh.write(b"THE")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert resume.file_key(path) != key
    with open(path, "r+b") as fh:  # or at the end
        fh.seek(-4, 2)
        fh.write(b"0.5\n")
    assert resume.file_key(path) != key
    assert resume.file_key(None) is None


# --------------------------------------------------------------------------- --debug


@pytest.mark.parametrize("debug", [False, True])
def test_debug_shows_what_tensorflow_prints_while_it_starts(debug):
    code = ("import os\nfrom rnncli.network.runtime import stderr_to_file\n"
            "with stderr_to_file():\n    os.write(2, b'no GPU: libcudnn not found\\n')\n")
    env = {**os.environ, "RNNCLI_DEBUG": "1" if debug else ""}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env,
                            timeout=60)
    assert result.returncode == 0
    assert (b"libcudnn not found" in result.stderr) == debug


# --------------------------------------------------------------------------- engines


@pytest.mark.slow
def test_the_onnx_engine_releases_its_threads(gru_model):
    from rnncli.inference.onnx_engine import OnnxEngine

    others = set(threading.enumerate())  # other tests' engines may hold threads

    def workers():
        return [t for t in threading.enumerate()
                if t.name.startswith("rnncli-onnx") and t not in others]

    with OnnxEngine.load(gru_model) as engine:
        engine.scores(["a fine film"] * 300)
        assert workers()
    assert not workers()
    assert engine.scores(["usable again"] * 300).shape == (300,)
    assert workers()
    engine.close()
    assert not workers()


@pytest.mark.slow
@pytest.mark.parametrize("version", ["3.14.0", "3.16.0", "4.0.0"])
def test_keras_internals_are_mended_only_where_known(monkeypatch, version):
    import keras

    from rnncli.core.errors import DeviceError
    from rnncli.network import multi_worker

    monkeypatch.setattr(keras, "__version__", version)
    with pytest.raises(DeviceError, match=r"pip install 'keras<3\.16'"):
        multi_worker._patch_keras_for_multi_worker()


def test_a_state_kept_before_val_losses_existed_still_resumes(tmp_path):
    """State written by an earlier rnncli has no val_losses: the history's (rounded)
    losses stand in, as they did then."""
    import json

    backup = resume.resume_dir(tmp_path / "m")
    backup.mkdir()
    for name in ("epoch-2.weights.h5", "best-1.npz"):
        (backup / name).write_bytes(b"x")
    key = {"data": "d"}
    state = {"key": key, "history": [{"epoch": 1, "val_loss": 0.3},
                                     {"epoch": 2, "val_loss": 0.4}],
             "weights": "epoch-2.weights.h5", "precision": "float32",
             "best": {"epoch": 1, "val_loss": 0.3, "weights": "best-1.npz"}}
    (backup / resume.STATE).write_text(json.dumps(state))
    progress = resume.prepare(tmp_path / "m", key, resume=True)
    assert progress.state["val_losses"] == [0.3, 0.4]
    assert resume.finished(progress.state, epochs=10, patience=1)
