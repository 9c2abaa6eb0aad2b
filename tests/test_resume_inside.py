"""--resume inside an epoch (issue 27): the state is kept where Ctrl-C cut an epoch and
every KEEP_SECONDS inside one, and a resumed run ends with the unbroken run's weights.
Tiny real training (240 reviews, a few units), in this process."""

from __future__ import annotations

import json
import os
import re
import signal

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY

from rnncli.cli.main import cli
from rnncli.core.errors import UsageError

LOUD = [a for a in TINY if a not in ("--quiet", "--epochs", "1")]
RUN = [*LOUD, "--epochs", "3", "--patience", "5", "--no-ngrams", "--seed", "7",
       "--batch-size", "20"]  # 192 training rows: a short last batch


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _stop_at(monkeypatch, epoch: int, step: int, how: str) -> None:
    """After batch ``step`` of ``epoch`` (1-based): Ctrl-C as a person sends it
    ("sigint"), or the process dies at once ("crash", as by SIGKILL: nothing after runs)."""
    import keras

    class Stop(keras.callbacks.TerminateOnNaN):  # a callback fitloop adds before Keep
        def on_epoch_begin(self, e, logs=None):
            self.epoch = e + 1

        def on_train_batch_end(self, batch, logs=None):
            super().on_train_batch_end(batch, logs)
            if (self.epoch, batch + 1) == (epoch, step):
                if how == "crash":
                    raise SystemExit(137)
                os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(keras.callbacks, "TerminateOnNaN", Stop)


def _weights(out) -> list[np.ndarray]:
    from rnncli.network import loading

    _, model = loading.load_model(out)
    return model.get_layer("core").get_weights()


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory, tiny_csv):
    """The unbroken runs, read whole and streamed, by their reading option; "--seed 0":
    read whole with --seed 0 (TensorFlow treats a seed of 0 apart); "--adversarial 0.3":
    read whole, trained adversarially (its trainer's state is what is kept)."""
    runs = {}
    for name in ("--no-stream", "--stream", "--seed 0", "--adversarial 0.3"):
        out = runs[name] = tmp_path_factory.mktemp("unbroken") / "m"
        result = invoke("train", tiny_csv, "-o", out, *RUN, *name.split())
        assert result.exit_code == 0, result.output[-2000:]
    return runs


@pytest.mark.parametrize("how, read", [("sigint", "--no-stream"), ("crash", "--no-stream"),
                                       ("sigint", "--stream"), ("sigint", "--adversarial 0.3")])
def test_a_run_resumed_inside_an_epoch_ends_as_the_unbroken_run(
        tmp_path, tiny_csv, unbroken, monkeypatch, no_onnx, how, read):
    """Cut at batch 3 of epoch 2 (by Ctrl-C: the state is kept at that batch; by a
    crash: the last kept state, every batch here). --resume trains the rest of epoch 2
    and epoch 3, and the weights equal the unbroken run's, read whole or streamed."""
    from rnncli.training import resume

    run = [*RUN, *read.split()]
    unbroken = unbroken[read]
    out = tmp_path / "m"
    if how == "crash":
        monkeypatch.setattr(resume, "KEEP_SECONDS", 0.0)
    _stop_at(monkeypatch, epoch=2, step=3, how=how)
    cut = invoke("train", tiny_csv, "-o", out, *run)
    assert cut.exit_code == (130 if how == "sigint" else 137), cut.output[-2000:]
    state = json.loads((tmp_path / ".m.resume" / "rnncli-resume.json").read_text())
    # a crash at batch 3 comes before batch 3's state is kept: batch 2's is there
    assert state["cut"]["epoch"] == 2 and state["cut"]["step"] == (3 if how == "sigint" else 2)
    assert [h["epoch"] for h in state["history"]] == [1]
    if how == "sigint":
        assert re.search(r"kept the state at step 3/\d+ of epoch 2: the same command with "
                         r"--resume", cut.output), cut.output[-2000:]
    monkeypatch.undo()
    resumed = invoke("train", tiny_csv, "-o", out, *run, "--resume")
    assert resumed.exit_code == 0, resumed.output[-2000:]
    assert re.search(r"resuming at step \d of epoch 2 of the interrupted run",
                     resumed.output)
    assert not re.search(r"^epoch 1/3", resumed.output, re.M)
    assert re.search(r"^epoch 2/3 .*\n(.*\n)*epoch 3/3 ", resumed.output, re.M)
    manifest = json.loads((out / "rnncli.json").read_text())
    history = manifest["training"]["history"]
    want = json.loads((unbroken / "rnncli.json").read_text())["training"]["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    for got, expected in zip(history, want):  # figures of whole epochs, as unbroken
        for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert got[name] == pytest.approx(expected[name], abs=2e-5), (name, got, expected)
    for got, expected in zip(_weights(out), _weights(unbroken), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert not (tmp_path / ".m.resume").exists()


def test_a_cut_in_the_first_epoch_resumes_without_a_best_epoch(tmp_path, tiny_csv, unbroken,
                                                               monkeypatch, no_onnx):
    """Ctrl-C in epoch 1 (with --seed 0): no epoch has finished, so there is no best
    epoch yet; the state still resumes, to the unbroken run's weights."""
    out = tmp_path / "m"
    run = [*RUN, "--seed", "0"]
    _stop_at(monkeypatch, epoch=1, step=2, how="sigint")
    cut = invoke("train", tiny_csv, "-o", out, *run)
    assert cut.exit_code == 130 and "kept the state at step 2/" in cut.output
    state = json.loads((tmp_path / ".m.resume" / "rnncli-resume.json").read_text())
    assert state["history"] == [] and state["best"] is None and state["cut"]["step"] == 2
    monkeypatch.undo()
    resumed = invoke("train", tiny_csv, "-o", out, *run, "--resume")
    assert resumed.exit_code == 0, resumed.output[-2000:]
    assert "resuming at step 2 of epoch 1 of the interrupted run" in resumed.output
    for got, expected in zip(_weights(out), _weights(unbroken["--seed 0"]), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_a_state_with_another_optimizer_is_refused_not_half_loaded(tmp_path, tiny_csv,
                                                                    monkeypatch, no_onnx):
    """A state kept with plain Adam (an rnncli from before the skipping of non-finite
    steps): Keras would load the weights, skip the optimizer's state with a hidden
    warning and train on with fresh moments and the first learning rate."""
    import keras

    from rnncli.training import fitloop

    _stop_at(monkeypatch, epoch=1, step=2, how="sigint")
    monkeypatch.setattr(fitloop, "adam", lambda model, config, replicas: keras.optimizers.Adam(
        config.lr, clipnorm=config.clipnorm))
    assert invoke("train", tiny_csv, "-o", tmp_path / "m", *RUN).exit_code == 130
    monkeypatch.undo()
    resumed = invoke("train", tiny_csv, "-o", tmp_path / "m", *RUN, "--resume")
    assert resumed.exit_code == 2, resumed.output[-2000:]
    assert "the kept weights are unreadable (its optimizer state is another's" in \
        resumed.output


def test_a_cut_state_resumes_only_with_as_many_batches_an_epoch(tmp_path, tiny_csv,
                                                                 monkeypatch, no_onnx):
    """Other devices (here: another number of batches an epoch) would skip other rows."""
    from rnncli.training import resume

    _stop_at(monkeypatch, epoch=1, step=2, how="sigint")
    assert invoke("train", tiny_csv, "-o", tmp_path / "m", *RUN).exit_code == 130
    state = resume.prepare(tmp_path / "m", json.loads(
        (tmp_path / ".m.resume" / "rnncli-resume.json").read_text())["key"], True).state
    resume.check_steps(state, state["cut"]["steps"])
    with pytest.raises(UsageError) as refused:
        resume.check_steps(state, state["cut"]["steps"] + 1)
    assert "was cut inside epoch 1, of" in refused.value.message
    assert "other devices?" in refused.value.message


def test_learning_rate_decay_resumes_from_the_loss_it_held():
    """Keras moves its best loss only on an improvement of more than min_delta."""
    from rnncli.training.resume import plateau_best

    assert plateau_best([0.70, 0.69995, None, 0.69], 1e-4) == 0.69
    assert plateau_best([0.70, 0.69995], 1e-4) == 0.70  # not min(): 0.69995
    assert plateau_best([None], 1e-4) is None


def test_the_state_is_kept_every_keep_seconds_and_a_stale_cut_is_replaced(
        tmp_path, tiny_csv, monkeypatch, no_onnx):
    """With KEEP_SECONDS at 0 the state follows every batch; an epoch's end replaces the
    cut, and the files of earlier states are removed."""
    from rnncli.training import resume

    seen = []
    real = resume.write_state

    def spy(model, backup, epoch, new_best, **kwargs):
        seen.append((epoch, (kwargs.get("cut") or {}).get("step")))
        return real(model, backup, epoch, new_best, **kwargs)

    monkeypatch.setattr(resume, "write_state", spy)
    monkeypatch.setattr(resume, "KEEP_SECONDS", 0.0)
    _stop_at(monkeypatch, epoch=2, step=1, how="crash")
    result = invoke("train", tiny_csv, "-o", tmp_path / "m", *RUN)
    assert result.exit_code == 137
    steps = max(s for e, s in seen if e == 1 and s)  # every batch of epoch 1 but the last
    assert seen[:steps + 1] == [(1, s) for s in range(1, steps + 1)] + [(1, None)]
    backup = tmp_path / ".m.resume"
    state = json.loads((backup / "rnncli-resume.json").read_text())
    assert state["cut"] is None and state["history"][0]["epoch"] == 1
    assert sorted(p.name for p in backup.iterdir()) == sorted(
        ["rnncli-resume.json", state["weights"], state["weights"].replace(".weights.h5",
                                                                          ".random.npz"),
         state["best"]["weights"]])


def test_ctrl_c_in_the_streamed_n_gram_fit_keeps_the_network(tmp_path, tiny_csv, monkeypatch,
                                                             no_onnx):
    """The n-gram model of a streamed file is fitted after the network: Ctrl-C there
    says that the network's state is kept, and --resume publishes it without training."""
    from rnncli.training import ngrams_stream

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    run = [*[a for a in RUN if a != "--no-ngrams"], "--stream", "--epochs", "1"]
    monkeypatch.setattr(ngrams_stream, "fit_ngrams_streamed", interrupted)
    cut = invoke("train", tiny_csv, "-o", tmp_path / "m", *run)
    assert cut.exit_code == 130, cut.output[-2000:]
    assert "kept the state after epoch 1: the same command with --resume" in cut.output
    assert cut.output.strip().splitlines()[-1] == (
        "Error: interrupted while the n-gram model was fitted, after the network; no model "
        "was written")
    monkeypatch.undo()
    resumed = invoke("train", tiny_csv, "-o", tmp_path / "m", *run, "--resume")
    assert resumed.exit_code == 0, resumed.output[-2000:]
    assert not re.search(r"^epoch 1/", resumed.output, re.M)  # nothing trained again


@pytest.mark.parametrize("stop", ["early stopping", "signal", None])
def test_the_fit_after_a_cut_epoch_runs_only_if_the_first_did_not_stop(stop):
    """Early stopping at the end of the resumed epoch (or a signal between the two fit
    calls) ends the run there, and the carried callbacks end once, in every case."""
    from types import SimpleNamespace

    from rnncli.training import epochs as E

    calls = []

    class Carried(E.Segment):
        def on_train_end(self, logs=None):
            if not self.continued:
                calls.append("end")

    class Core:
        stop_training = False

        def fit(self, data, **kwargs):
            calls.append(("fit", kwargs["initial_epoch"], kwargs["steps_per_epoch"]))
            for callback in kwargs["callbacks"]:
                callback.on_train_end()
            self.stop_training = stop == "early stopping"

    parts = [SimpleNamespace(data=None, first=1, end=2, steps=4),
             SimpleNamespace(data=None, first=2, end=3, steps=10)]
    E.run(Core(), parts, None, [Carried()], stopped=lambda: stop == "signal")
    ran = [("fit", 1, 4)] + ([("fit", 2, 10)] if stop is None else [])
    assert calls == ran + ["end"]
