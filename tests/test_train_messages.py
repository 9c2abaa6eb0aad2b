"""What a person sees while a model trains: interruptions, early stopping, small splits,
the blend's rule (issue 25). Tiny real training (240 reviews, a few units)."""

from __future__ import annotations

import os
import re
import signal
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from conftest import TINY

from rnncli.cli.main import cli
from rnncli.modeldir import artifacts

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


@pytest.mark.slow
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
    assert "kept the state at step 2/6 of epoch 2: the same command with --resume" in err
    last = err.strip().splitlines()[-1]
    assert re.fullmatch(r"Error: interrupted during epoch 2/3 \(step 2/\d+\); "
                        + ("an existing model there was left as it was" if existing
                           else "no model was written"), last), last
    if existing:
        assert {p.name: artifacts.sha256_file(p) for p in out.iterdir()} == before
    else:
        assert not out.exists()


def test_small_splits_are_warned_about_with_the_rows_that_would_do():
    from rnncli.training.train_notes import SMALL_SPLIT_ROWS, split_warnings

    val, test = split_warnings(24, 4)
    assert val.startswith("the validation split has only 24 rows") and "0.10" in val
    assert test.startswith("the test split has only 4 rows") and "up to 0.25" in test
    assert f"{SMALL_SPLIT_ROWS} rows bring that to 0.05" in test and "--test-split" in test
    assert split_warnings(SMALL_SPLIT_ROWS, 5000) == []
    assert split_warnings(5000, SMALL_SPLIT_ROWS - 1)[0].startswith("the test split")


def test_the_blend_line_says_how_the_weight_was_set():
    import numpy as np

    from rnncli.training.blend import BLEND_MIN_ROWS, choose_blend

    def blend(rows):
        labels = np.arange(rows) % 2
        good = np.where(labels == 1, 0.9, 0.1)
        ngram = SimpleNamespace(ngrams=10, solver={}, val_scores=np.full(rows, 0.5),
                                test_scores=np.full(4, 0.5))
        return choose_blend(ngram, labels, labels[:4], good, good[:4])

    few, enough = blend(BLEND_MIN_ROWS - 1), blend(BLEND_MIN_ROWS)
    assert few.describe("gru") == (
        f"blend: 0.50 x GRU + 0.50 x n-gram model (an even blend: {BLEND_MIN_ROWS - 1} "
        f"validation rows are too few to choose it, {BLEND_MIN_ROWS} are needed)")
    assert enough.describe("lstm") == ("blend: 1.00 x LSTM + 0.00 x n-gram model (chosen on "
                                       "the validation split)")


@pytest.mark.slow
def test_training_on_few_rows_says_so(tmp_path, tiny_csv, no_onnx, no_fit):
    """240 rows: 24 validation and 24 test rows."""
    result = invoke("train", tiny_csv, "-o", tmp_path / "m", *TINY)  # --quiet: warnings show
    assert result.exit_code == 0, result.output[-2000:]
    assert "warning: the validation split has only 24 rows" in result.output
    assert "warning: the test split has only 24 rows" in result.output
    loud = invoke("train", tiny_csv, "-o", tmp_path / "m", *LOUD)
    assert "(an even blend: 24 validation rows are too few" in loud.output
    assert "chosen on the validation split" not in loud.output
    assert "(n=24, standard error up to 0.10)" in loud.output.splitlines()[-1]


def test_stopping_note_says_why_training_ended_and_which_weights_are_kept():
    from rnncli.training.train_notes import stopping_note

    def epochs(*val_losses):
        return [{"epoch": i + 1, "loss": 0.5, "val_loss": v} for i, v in enumerate(val_losses)]

    assert stopping_note(epochs(0.6, 0.5, 0.4, 0.4, 0.3, 0.31, 0.32), 5, 10) == (
        "stopped early after epoch 7: validation loss had not improved for 2 epochs; "
        "keeping epoch 5's weights")
    assert stopping_note(epochs(0.6, 0.7), 1, 10).endswith("for 1 epoch; keeping epoch 1's "
                                                           "weights")
    assert stopping_note(epochs(0.6, 0.5, 0.55), 2, 3) == (
        "keeping epoch 2's weights, the lowest validation loss of the 3")
    assert stopping_note(epochs(0.6, 0.5), 2, 2) is None  # ran to the end, kept the last
    assert stopping_note(epochs(0.6, None), 1, 5) == (
        "stopped after epoch 2: the loss is not finite (diverged); keeping epoch 1's weights")


@pytest.mark.slow
def test_early_stopping_is_reported(tmp_path, tiny_csv, no_onnx):
    """A learning rate too small to change a weight: the validation loss never improves
    on epoch 1's, so patience 1 stops training after epoch 2."""
    result = invoke("train", tiny_csv, "-o", tmp_path / "m", *LOUD, "--no-ngrams",
                    "--epochs", "5", "--patience", "1", "--lr", "1e-20")
    assert result.exit_code == 0, result.output[-2000:]
    lines = result.output.splitlines()
    at = lines.index("stopped early after epoch 2: validation loss had not improved for 1 "
                     "epoch; keeping epoch 1's weights")
    assert lines[at - 1].startswith("epoch 2/5 ")


@pytest.mark.slow
def test_a_failed_write_where_there_was_no_model_says_none_was_written(
        tmp_path, tiny_csv, no_onnx, no_fit, monkeypatch):
    import errno

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(artifacts, "write_manifest", full_disk)
    result = invoke("train", tiny_csv, "-o", tmp_path / "new", *TINY, "--no-ngrams")
    assert result.exit_code == 2, result.output
    last = result.output.strip().splitlines()[-1]
    assert "cannot write the model (No space left on device)" in last
    assert last.endswith("(no model was written)") and not (tmp_path / "new").exists()


@pytest.mark.slow
@pytest.mark.parametrize("step, skipped", [(3, True), (10, False)])
def test_the_validation_of_a_cut_epoch_is_skipped(step, skipped):
    """Interrupted at step 3 of 10, the epoch's validation stops after its first batch; an
    epoch whose batches all ran is validated in full. The hook is on_test_begin, not a
    batch hook, which would turn off Keras's asynchronous dispatch of validation logs."""
    from rnncli.training import fitloop

    callback = fitloop.progress_callback(SimpleNamespace(), 2, 10, [KeyboardInterrupt()])
    callback.set_model(SimpleNamespace(stop_evaluating=False))
    callback.step = step
    callback.on_test_begin()
    assert callback.model.stop_evaluating is skipped
    assert type(callback).on_test_batch_end is fitloop.keras.callbacks.Callback.on_test_batch_end


def test_a_batch_whose_gradients_are_not_finite_is_skipped():
    """An infinite gradient (clipping cannot tame one) leaves the weights as they were,
    instead of writing NaN into them and failing the run; a finite one is applied."""
    import numpy as np

    from rnncli.core.config import TrainConfig
    from rnncli.network import model as M
    from rnncli.training import fitloop

    config = TrainConfig(units=2, embed_dim=2, max_tokens=10, seq_len=4, classes=2)
    core = M.build_core(config)
    fitloop.compile_classifier(core, config, replicas=1)
    variables = core.trainable_variables
    before = [v.numpy().copy() for v in variables]
    grads = [np.ones(v.shape, np.float32) for v in variables]
    grads[0][0] = np.inf
    assert fitloop.skipped_note(core) is None
    for _ in range(200):  # the scale stays 1: skips never add up to skipping everything
        core.optimizer.apply(grads, variables)
    assert all(np.array_equal(b, v.numpy()) for b, v in zip(before, variables))
    assert fitloop.skipped_note(core).startswith("note: 200 batch(es) skipped")
    core.optimizer.apply([np.ones(v.shape, np.float32) for v in variables], variables)
    assert all(np.isfinite(v.numpy()).all() and not np.array_equal(b, v.numpy())
               for b, v in zip(before, variables))
    # the language models' too; not on several devices (Keras checks only the first's)
    from rnncli.training import pretrain

    language_model = pretrain.build_language_model(config)
    pretrain._compile_language_model(language_model, config, replicas=1)
    assert isinstance(language_model.optimizer, fitloop.SkipNonFinite)
    assert not isinstance(fitloop.adam(core, config, replicas=2), fitloop.SkipNonFinite)
