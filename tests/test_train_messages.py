"""What a person sees while a model trains: interruptions, early stopping, small splits,
the blend's rule (issue 25). Tiny real training (240 reviews, a few units)."""

from __future__ import annotations

import os
import re
import signal

import pytest
from click.testing import CliRunner

from rnncli import artifacts
from rnncli.cli import cli

from conftest import TINY

pytestmark = pytest.mark.slow

LOUD = [a for a in TINY if a != "--quiet"]  # epoch lines and notes on stderr


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _sigint_at(monkeypatch, epoch: int, step: int) -> None:
    """Send this process Ctrl-C after batch ``step`` of ``epoch`` (1-based), as a person
    would in the middle of an epoch."""
    import keras

    class CtrlC(keras.callbacks.TerminateOnNaN):  # a callback fitloop adds anyway
        def on_epoch_begin(self, e, logs=None):
            self.epoch = e + 1

        def on_train_batch_end(self, batch, logs=None):
            super().on_train_batch_end(batch, logs)
            if (self.epoch, batch + 1) == (epoch, step):
                os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(keras.callbacks, "TerminateOnNaN", CtrlC)


@pytest.mark.parametrize("existing", [False, True])
def test_ctrl_c_mid_epoch_says_which_epoch_was_cut_and_what_became_of_the_model(
        tmp_path, tiny_csv, old_model, monkeypatch, no_onnx, existing):
    out = old_model if existing else tmp_path / "new"
    before = {p.name: artifacts.sha256_file(p) for p in out.iterdir()} if existing else None
    _sigint_at(monkeypatch, epoch=2, step=2)
    result = invoke("train", tiny_csv, "-o", out, *LOUD, "--epochs", "3", "--patience", "5",
                    "--no-ngrams")
    err = result.output
    assert result.exit_code == 130, err[-2000:]
    assert re.search(r"^epoch 1/3 ", err, re.M)  # finished: reported
    assert not re.search(r"^epoch 2/3", err, re.M), err  # cut after 2 batches: not reported
    assert "kept the state after epoch 1: the same command with --resume" in err
    last = err.strip().splitlines()[-1]
    assert re.fullmatch(r"Error: interrupted during epoch 2/3 \(step 2/\d+\); "
                        + ("an existing model there was left as it was" if existing
                           else "no model was written"), last), last
    if existing:
        assert {p.name: artifacts.sha256_file(p) for p in out.iterdir()} == before
    else:
        assert not out.exists()
