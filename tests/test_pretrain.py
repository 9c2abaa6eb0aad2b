"""Language-model pretraining (issue 28): the forward and backward language models'
loss, --unlabelled and --pretrain-epochs, the
encoder of `rnncli pretrain` reused by --encoder, and Ctrl-C while pretraining. Tiny
real training (a few hundred reviews, a few units)."""

from __future__ import annotations

import json
import os
import re
import signal

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY, ZH_SAMPLE, sample_rows, write_csv

from rnncli.cli.main import cli

PRE = [*TINY, "--no-ngrams", "--pretrain-epochs", "2", "--seed", "3"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def unlabelled_csv(tmp_path_factory):
    """Reviews without labels (rows 240-599 of the sample, not the training rows)."""
    rows = sample_rows(600)[240:]
    return write_csv(tmp_path_factory.mktemp("unl") / "unlabelled.csv",
                     [[text] for text, _ in rows], header=("review",))


@pytest.fixture(scope="module")
def pretrained_model(tmp_path_factory, tiny_csv, unlabelled_csv):
    out = tmp_path_factory.mktemp("pre") / "m"
    result = invoke("train", tiny_csv, "-o", out, "--unlabelled", unlabelled_csv,
                    *[a for a in PRE if a != "--quiet"])
    assert result.exit_code == 0, result.output[-3000:]
    return out, result.output


def _ctrl_c_at(monkeypatch, model: str, *, epoch: int, step: int) -> None:
    """Ctrl-C after batch ``step`` of ``epoch`` (1-based) of the model named ``model``
    ("language_model" while pretraining, "core" while learning the labels, trained by
    its "adversarial" trainer once pretrained)."""
    import keras

    names = ("core", "adversarial") if model == "core" else (model,)

    class Stop(keras.callbacks.TerminateOnNaN):  # a callback fitloop adds before Keep
        def on_epoch_begin(self, e, logs=None):
            self.epoch = e + 1

        def on_train_batch_end(self, batch, logs=None):
            super().on_train_batch_end(batch, logs)
            if self.model.name in names and (self.epoch, batch + 1) == (epoch, step):
                os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(keras.callbacks, "TerminateOnNaN", Stop)


def _loss_layer(vocab: int, units: int, gap: int = 1):
    from rnncli.training.pretrain import LanguageModelLoss

    layer = LanguageModelLoss(vocab, units, sampled=vocab, gap=gap)
    layer.build([(None, None, 2 * units), (None, None)])
    return layer


@pytest.mark.parametrize("gap", [1, 2])
def test_the_loss_is_next_token_forward_and_previous_token_backward(gap):
    """Eval mode (the full softmax) against the cross-entropies computed by hand: the
    forward half's states at t predict the token at t + 1, the backward half's the token
    at t - ``gap`` (2 with token pairs, whose input at t holds token t - 1), padding (0)
    is never a target, and the rows' outputs average to the mean over the tokens."""
    rng = np.random.default_rng(0)
    vocab, units = 7, 3
    layer = _loss_layer(vocab, units, gap)
    layer.kernel.assign(rng.normal(size=(vocab, units)).astype(np.float32))
    layer.bias.assign(rng.normal(size=vocab).astype(np.float32))
    ids = np.array([[2, 3, 4, 5], [6, 2, 0, 0]])
    states = rng.normal(size=(2, 4, 2 * units)).astype(np.float32)
    got = np.asarray(layer([states, ids], training=False))

    def xent(h, target):
        logits = layer.kernel.numpy() @ h + layer.bias.numpy()
        return np.log(np.exp(logits).sum()) - logits[target]

    per_row = [[], []]
    for r, row in enumerate(ids):
        for t in range(4):
            if t + 1 < 4 and row[t + 1]:
                per_row[r].append(xent(states[r, t, :units], row[t + 1]))
            if t >= gap and row[t - gap] and row[t]:
                per_row[r].append(xent(states[r, t, units:], row[t - gap]))
    # row 1: forward 6->2, backward 2->6 with gap 1 (and no target from the padding's)
    tokens = sum(len(p) for p in per_row)
    assert tokens == {1: 6 + 2, 2: 5 + 1}[gap]
    np.testing.assert_allclose(got.mean(), sum(map(sum, per_row)) / tokens, rtol=1e-5)
    np.testing.assert_allclose(got, [sum(p) * 2 / tokens for p in per_row], rtol=1e-5)


@pytest.mark.parametrize("pairs", [0, 4])
def test_the_language_models_cannot_see_the_token_they_predict(pairs):
    """On tokens drawn at random, no model can beat the vocabulary's perplexity; one that
    read the token it predicts (the halves swapped, or the backward half reading the
    pair that holds its target) would reach about 1."""
    from rnncli.core.config import TrainConfig
    from rnncli.render.output import PlainReporter
    from rnncli.training import pretrain

    vocab = 12
    config = TrainConfig(units=8, embed_dim=8, max_tokens=vocab, seq_len=16, batch_size=16,
                         dropout=0.0, seed=1, pretrain_epochs=6, classes=2, bigram_dim=pairs)
    ids = np.random.default_rng(1).integers(2, vocab, size=(400, 16)).astype(np.int32)
    data = pretrain.Corpus(ids[:360], ids[360:], 400)
    _, record = pretrain.run(config, data, PlainReporter(quiet=True))
    assert record["validation_perplexity"] > 0.8 * (vocab - 2)


def test_unlabelled_texts_pretrain_the_network_and_the_model_serves_as_any(
        pretrained_model, tmp_path):
    """--unlabelled: the pretraining's epochs with their perplexity, its record in the
    manifest; the model has the usual files (ONNX engine included, checked against
    Keras when it was written), and predict, evaluate, explain and export work."""
    out, output = pretrained_model
    assert re.search(r"pretraining on 360 unlabelled texts and 192 training texts \([\d,]+ "
                     r"tokens", output)
    assert re.search(r"^epoch 2/2 .*val_perplexity \d", output, re.M), output[-2000:]
    assert "adversarial training: each batch is also learnt with its words pushed along the " \
        "loss's gradient (0.3 word-vector lengths a text; --adversarial 0: off)" in output
    manifest = json.loads((out / "rnncli.json").read_text())
    record = manifest["data"]["pretraining"]
    assert record["texts"] == 552 and record["epochs_run"] == 2
    assert record["validation_perplexity"] == pytest.approx(
        np.exp(record["history"][record["best_epoch"] - 1]["val_loss"]), rel=1e-3)
    assert manifest["settings"]["pretrain_epochs"] == 2
    assert manifest["settings"]["adversarial"] == 0.3  # "auto" for a pretrained network
    assert (out / "core.onnx").is_file()
    for engine in ("onnx", "tf"):
        result = invoke("predict", "-m", out, "--engine", engine, "-f", "json", "a fine film")
        assert result.exit_code == 0, result.output
    assert invoke("explain", "-m", out, "a fine film").exit_code == 0
    assert invoke("evaluate", "-m", out).exit_code == 0
    assert invoke("export", "-m", out, "-o", tmp_path / "saved").exit_code == 0
    info = invoke("info", "-m", out, "-f", "table")
    assert re.search(r"pretraining +552 texts, [\d,]+ tokens, 2 epoch\(s\), validation",
                     info.output), info.output
    assert re.search(r"^ *training .*\(adversarial 0\.3\)", info.output, re.M), info.output


def test_pretraining_starts_the_classifier_from_the_language_models(
        tmp_path, tiny_csv, unlabelled_csv, monkeypatch, no_onnx):
    """The classifier's embedding and first recurrent layer are the pretrained ones when
    fine-tuning begins (not a fresh initialisation)."""
    from rnncli.training import fitloop, pretrain

    seen = {}
    real_fit = fitloop.fit

    def spy_fit(model, config, *args, **kwargs):
        core = model.core if model.name == "adversarial" else model  # its trainer's
        if core.name == "core":
            seen["core"] = {n: [w.copy() for w in core.get_layer(n).get_weights()]
                            for n in pretrain.pretrained_layers(config)}
        return real_fit(model, config, *args, **kwargs)

    real_run = pretrain.run

    def spy_run(*args, **kwargs):
        weights, record = real_run(*args, **kwargs)
        seen["pretrained"] = weights
        return weights, record

    monkeypatch.setattr(fitloop, "fit", spy_fit)
    monkeypatch.setattr(pretrain, "run", spy_run)
    result = invoke("train", tiny_csv, "-o", tmp_path / "m", "--unlabelled", unlabelled_csv,
                    *PRE)
    assert result.exit_code == 0, result.output[-2000:]
    assert set(seen["core"]) == {"embedding", "bigru_1"}
    for name, values in seen["core"].items():
        for got, want in zip(values, seen["pretrained"][name], strict=True):
            np.testing.assert_array_equal(got, want)


def test_chinese_characters_pretrain_with_their_token_pairs(tmp_path):
    """A character model pretrains its token pairs too, and predicts."""
    rows = sample_rows(300, ZH_SAMPLE)
    data = write_csv(tmp_path / "zh.csv", rows[:200], header=("label", "review"))
    unlabelled = write_csv(tmp_path / "zh_unl.csv", [[r[1]] for r in rows[200:]],
                           header=("review",))
    out = tmp_path / "m"
    result = invoke("train", data, "-o", out, "--unlabelled", unlabelled, *PRE)
    assert result.exit_code == 0, result.output[-2000:]
    manifest = json.loads((out / "rnncli.json").read_text())
    assert manifest["settings"]["bigram_dim"] > 0
    assert manifest["data"]["pretraining"]["epochs_run"] == 2
    from rnncli.core.config import TrainConfig
    from rnncli.training import pretrain

    assert "token_pairs" in pretrain.pretrained_layers(
        TrainConfig.from_dict(manifest["settings"]))
    assert invoke("predict", "-m", out, "这家酒店很好").exit_code == 0


def test_an_encoder_is_pretrained_once_and_reused(tmp_path, tiny_csv, unlabelled_csv):
    """rnncli pretrain writes an encoder; train --encoder takes its settings, vocabulary
    and weights (with a learning rate of almost 0, the fine-tuned embedding is still the
    encoder's); refusals: another pretraining beside it, a directory that is no encoder."""
    enc = tmp_path / "enc"
    result = invoke("pretrain", unlabelled_csv, "-o", enc, "--units", "4", "--embed-dim", "8",
                    "--seq-len", "32", "--max-tokens", "2000", "--pretrain-epochs", "1",
                    "--batch-size", "32")
    assert result.exit_code == 0, result.output[-2000:]
    assert "saved encoder to" in result.output
    header = json.loads((enc / "encoder.json").read_text())
    assert header["settings"]["units"] == 4 and len(header["vocabulary"]) == 1998
    out = tmp_path / "m"
    result = invoke("train", tiny_csv, "-o", out, "--encoder", enc, "--units", "6",
                    "--lr", "1e-12", "--epochs", "1", "--no-ngrams", "--seq-len", "32")
    assert result.exit_code == 0, result.output[-2000:]
    assert "the encoder sets units 4" in result.output
    from rnncli.network import loading

    _, model = loading.load_model(out)
    with np.load(enc / "encoder.npz") as kept:
        np.testing.assert_allclose(model.get_layer("core").get_layer("embedding")
                                   .get_weights()[0], kept["embedding/0"], atol=1e-6)
    manifest = json.loads((out / "rnncli.json").read_text())
    assert manifest["data"]["pretraining"]["encoder"] == "enc"
    assert manifest["settings"]["units"] == 4
    assert manifest["settings"]["adversarial"] == 0.3  # pretrained: "auto" is on
    small = write_csv(tmp_path / "small.csv", [["a good film", "positive"],
                                               ["a bad film", "negative"]] * 30)
    result = invoke("train", small, "-o", tmp_path / "small", "--encoder", enc, "--epochs",
                    "1", "--no-ngrams")  # far fewer tokens than the encoder's vocabulary
    assert result.exit_code == 0, result.output[-2000:]
    clash = invoke("train", tiny_csv, "-o", out, "--encoder", enc, "--unlabelled",
                   unlabelled_csv)
    assert clash.exit_code == 2 and "--encoder is pretrained already" in clash.output
    (tmp_path / "empty").mkdir()
    missing = invoke("train", tiny_csv, "-o", out, "--encoder", tmp_path / "empty")
    assert missing.exit_code == 2 and "not an rnncli encoder" in missing.output
    header["settings"]["units"] = 5  # the weights are of 4 units
    (enc / "encoder.json").write_text(json.dumps(header))
    other = invoke("train", tiny_csv, "-o", out, "--encoder", enc)
    assert other.exit_code == 2 and "not those its settings build" in other.output
    (enc / "encoder.npz").write_bytes(b"PK\x03\x04 not a zip")
    (enc / "encoder.json").write_text(json.dumps({**header, "settings": {
        **header["settings"], "units": 4}}))
    corrupt = invoke("train", tiny_csv, "-o", out, "--encoder", enc)
    assert corrupt.exit_code == 2 and "the encoder is unreadable" in corrupt.output
    (enc / "encoder.json").write_text("{")
    broken = invoke("train", tiny_csv, "-o", out, "--encoder", enc)
    assert broken.exit_code == 2 and "the encoder is unreadable" in broken.output
    unused = invoke("train", tiny_csv, "-o", out, "--unlabelled", unlabelled_csv,
                    "--pretrain-epochs", "0")
    assert unused.exit_code == 2 and "add --word-vectors" in unused.output


def test_ctrl_c_while_pretraining_keeps_its_progress(tmp_path, tiny_csv, unlabelled_csv,
                                                     monkeypatch, no_onnx):
    """Ctrl-C at batch 3 of the pretraining's epoch 2: the state is kept in the run's,
    --resume finishes the pretraining from there, then trains; its record holds both
    epochs."""
    _ctrl_c_at(monkeypatch, "language_model", epoch=2, step=3)
    out = tmp_path / "m"
    run = ["train", tiny_csv, "-o", out, "--unlabelled", unlabelled_csv,
           *[a for a in PRE if a != "--quiet"]]
    cut = invoke(*run)
    assert cut.exit_code == 130, cut.output[-2000:]
    assert "interrupted while pretraining, during epoch 2/2 (step 3/" in cut.output
    state = json.loads((tmp_path / ".m.resume" / "pretrain" / "rnncli-resume.json")
                       .read_text())
    assert state["cut"]["epoch"] == 2 and state["cut"]["step"] == 3
    monkeypatch.undo()
    resumed = invoke(*run, "--resume")
    assert resumed.exit_code == 0, resumed.output[-2000:]
    assert "resuming the pretraining at step 3 of epoch 2" in resumed.output
    assert not re.search(r"^epoch 1/2 .*val_perplexity", resumed.output, re.M)
    record = json.loads((out / "rnncli.json").read_text())["data"]["pretraining"]
    assert [h["epoch"] for h in record["history"]] == [1, 2]
    assert not (tmp_path / ".m.resume").exists()


def test_when_a_run_pretrains():
    """--pretrain-epochs: None ("auto") pretrains with unlabelled texts only; 0 never
    (then --unlabelled only feeds --word-vectors); N always (the training texts alone
    when there are no others)."""
    from rnncli.core.config import TrainConfig

    assert TrainConfig().pretrains(True) and not TrainConfig().pretrains(False)
    assert not TrainConfig(pretrain_epochs=0).pretrains(True)
    assert TrainConfig(pretrain_epochs=3).pretrains(False)


def test_a_streamed_file_pretrains_on_its_sample(tmp_path, tiny_csv, unlabelled_csv):
    """--stream with --unlabelled: pretrained on the unlabelled texts and the training
    texts' sample, then trained from the stream."""
    out = tmp_path / "m"
    result = invoke("train", tiny_csv, "-o", out, "--stream", "--unlabelled", unlabelled_csv,
                    *[a for a in PRE if a not in ("--quiet",)])
    assert result.exit_code == 0, result.output[-2000:]
    assert re.search(r"pretraining on 360 unlabelled texts and \d+ training texts", result.output)
    manifest = json.loads((out / "rnncli.json").read_text())
    assert manifest["data"]["pretraining"]["epochs_run"] == 2
    assert manifest["settings"]["adversarial"] == 0.3  # "auto" for a streamed file too


def test_several_machines_do_not_pretrain(tmp_path, tiny_csv, unlabelled_csv, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({
        "cluster": {"worker": ["localhost:1", "localhost:2"]},
        "task": {"type": "worker", "index": 0}}))
    result = invoke("train", tiny_csv, "-o", tmp_path / "m", "--unlabelled", unlabelled_csv)
    assert result.exit_code == 2 and "pretraining does not run on several machines" in \
        result.output, result.output


def test_a_run_cut_after_pretraining_resumes_without_pretraining_again(
        tmp_path, tiny_csv, unlabelled_csv, monkeypatch, no_onnx):
    """Ctrl-C in the classifier's first epoch: --resume does not pretrain again, and the
    manifest still records the pretraining."""
    _ctrl_c_at(monkeypatch, "core", epoch=1, step=2)
    out = tmp_path / "m"
    run = ["train", tiny_csv, "-o", out, "--unlabelled", unlabelled_csv,
           *[a for a in PRE if a != "--quiet"], "--epochs", "2"]
    cut = invoke(*run)
    assert cut.exit_code == 130, cut.output[-2000:]
    monkeypatch.undo()
    resumed = invoke(*run, "--resume")
    assert resumed.exit_code == 0, resumed.output[-2000:]
    assert "pretrained before the interruption" in resumed.output
    assert "val_perplexity" not in resumed.output
    manifest = json.loads((out / "rnncli.json").read_text())
    assert manifest["data"]["pretraining"]["epochs_run"] == 2
    assert manifest["settings"]["pretrain_epochs"] == 2
    assert manifest["settings"]["adversarial"] == 0.3  # "auto", resolved on --resume too


def test_pretrain_refuses_before_it_works(tmp_path, unlabelled_csv, monkeypatch):
    """rnncli pretrain: a target that is not an encoder is refused before the texts are
    read (not after an hour of pretraining); one text is too few."""
    from rnncli.data import dataset

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with monkeypatch.context() as patched:
        patched.setattr(dataset, "read_texts", lambda *a, **k: pytest.fail("texts read"))
        result = invoke("pretrain", unlabelled_csv, "-o", taken)
    assert result.exit_code == 2 and "is not an rnncli encoder" in result.output
    assert (taken / "notes.txt").read_text() == "mine"
    one = tmp_path / "one.txt"
    one.write_text("a single review\n")
    result = invoke("pretrain", one, "-o", tmp_path / "enc")
    assert result.exit_code == 2 and "pretraining needs at least two" in result.output
