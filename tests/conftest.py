"""Shared fixtures. Training fixtures are session-scoped: a handful of tiny models
(a few hundred real reviews, one or two epochs, a few units) serve every slow test."""

from __future__ import annotations

import csv
import gzip
import io
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data" / "imdb_sample.csv.gz"
ZH_SAMPLE = ROOT / "sample_data" / "chnsenticorp_htl_sample.csv.gz"
# Small and fast: the point is files, shapes, round trips and exit codes, not accuracy.
TINY = ["--epochs", "1", "--units", "4", "--embed-dim", "8", "--seq-len", "32",
        "--max-tokens", "2000", "--batch-size", "32", "--quiet"]

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def sample_rows(n: int, sample: Path = SAMPLE) -> list[list[str]]:
    """The first n rows of a bundled sample, without the header: real text. For the IMDB
    sample (review, sentiment), for the Chinese one (label, review)."""
    with gzip.open(sample, "rt", encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        return [row for _, row in zip(range(n), reader)]


def secret_table():
    """An ONNX TensorProto "table" whose data is the first 32 bytes of ./secret.txt
    ("external data", read by ONNX Runtime relative to the current directory)."""
    from onnx import TensorProto

    table = TensorProto(name="table", data_type=TensorProto.UINT8, dims=[32])
    table.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "secret.txt"), ("offset", "0"), ("length", "32")):
        entry = table.external_data.add()
        entry.key, entry.value = key, value
    return table


def write_csv(path: Path, rows, header=("review", "sentiment")) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")
    return path


def interrupt_after_first_epoch(args: list[str], timeout: float = 120) -> str:
    """Run ``rnncli train`` (``args``) in a process of its own, send it Ctrl-C once its
    first epoch is reported, check that it exits 130, and return the rest of its
    stderr."""
    import signal
    import subprocess

    proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.PIPE)
    for line in proc.stderr:
        if line.startswith(b"epoch 1/"):
            break
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read().decode()
    assert proc.wait(timeout=timeout) == 130, rest
    return rest


def two_workers(command) -> tuple[str, str]:
    """Run ``command(index)`` for workers 0 and 1 of a two-process TF_CONFIG cluster on
    this machine; both must exit 0. Returns (the chief's stderr, the other's)."""
    import json
    import socket
    import subprocess

    sockets = [socket.socket() for _ in range(2)]
    for sock in sockets:
        sock.bind(("localhost", 0))
    hosts = [f"localhost:{sock.getsockname()[1]}" for sock in sockets]
    for sock in sockets:
        sock.close()
    procs = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps(
            {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}})}
        procs.append(subprocess.Popen(command(index), env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE))
    try:
        results = [proc.communicate(timeout=300) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    for proc, (_, err) in zip(procs, results):
        assert proc.returncode == 0, err.decode()[-2000:]
    return results[0][1].decode(), results[1][1].decode()


def positive_probability(record: dict) -> float:
    """A two-class record's positive-class probability (its ``score`` is its label's)."""
    return list(record["scores"].values())[1]


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("data") / "tiny.csv", sample_rows(240))


def _train(out: Path, data: Path, *extra: str) -> Path:
    from click.testing import CliRunner

    from rnncli.cli.main import cli

    result = CliRunner().invoke(cli, ["train", str(data), "-o", str(out), *TINY, *extra])
    assert result.exit_code == 0, result.output + str(result.exception)
    return out


@pytest.fixture(scope="session")
def gru_model(tmp_path_factory, tiny_csv) -> Path:
    return _train(tmp_path_factory.mktemp("models") / "gru", tiny_csv, "--cell", "gru")


@pytest.fixture(scope="session")
def lstm_model(tmp_path_factory, tiny_csv) -> Path:
    return _train(tmp_path_factory.mktemp("models") / "lstm", tiny_csv, "--cell", "lstm",
                  "--layers", "2")


@pytest.fixture(scope="session")
def train_model():
    """Train into a given directory (for tests that need their own copy)."""
    return _train


@pytest.fixture
def old_model(tmp_path, gru_model) -> Path:
    """A good model directory at tmp_path/"m" (a copy of the session's GRU model), for
    tests about what happens to an existing model: copying takes milliseconds, training
    one takes seconds."""
    import shutil

    return Path(shutil.copytree(gru_model, tmp_path / "m"))


@pytest.fixture
def no_onnx(monkeypatch):
    """Train without writing the ONNX engine's files, where they are not under test (the
    export takes 1-3 s of a tiny training); the model is published as one whose export
    failed is, with a note."""
    from rnncli.training import saving

    monkeypatch.setattr(saving, "_write_onnx",
                        lambda staged, text_model, tokenizer: "skipped by the test")


@pytest.fixture
def no_fit(monkeypatch):
    """Train without fitting the recurrent network, where fitting is not under test (the
    network keeps its initial weights; a tiny fit costs 2-3 s, mostly tracing): reading,
    the n-gram model, saving, verifying and publishing all run as usual."""
    from rnncli.training import fitloop

    def one_unfitted_epoch(core, config, *args, **kwargs):
        return [{"epoch": 1, "loss": 0.69, "accuracy": 0.5, "val_loss": 0.69,
                 "val_accuracy": 0.5, "seconds": 0.0}], 1

    monkeypatch.setattr(fitloop, "fit", one_unfitted_epoch)
