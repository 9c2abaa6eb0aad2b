"""Adversarial training (--adversarial): the perturbation has the size asked for and raises
the loss, a step learns from the clean and the perturbed batch, and the trained model is
an ordinary one."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY

from rnncli.cli.main import cli
from rnncli.core.config import TrainConfig

IDS = np.array([[3, 4, 5, 0, 0, 0], [6, 7, 8, 9, 2, 0]], np.int64)
LABELS = np.array([[1.0], [0.0]], np.float32)


def _networks(dropout: float = 0.0, **settings):
    from rnncli.network import model as M

    config = TrainConfig(units=3, embed_dim=4, max_tokens=12, seq_len=6, classes=2,
                         dropout=dropout, **settings)
    M.keras.utils.set_random_seed(3)
    return config, *M.build_core(config, perturbable=True)


def test_the_perturbation_is_epsilon_word_vectors_long_and_raises_the_loss():
    from rnncli.network.model import keras, tf
    from rnncli.training.adversarial import perturbation

    config, core, perturbed = _networks()
    ids, zeros = tf.constant(IDS), tf.zeros((2, 6, 4))
    with tf.GradientTape() as tape:
        tape.watch(zeros)
        probs, embedded = perturbed([ids, zeros])
        loss = keras.losses.binary_crossentropy(LABELS, probs)
    noise = perturbation(tape.gradient(loss, zeros), embedded, IDS, 0.5).numpy()
    vectors = embedded.numpy()
    for row, tokens in enumerate(IDS):
        words = vectors[row][tokens > 0]  # the padding is not counted
        typical = np.sqrt((words**2).sum(1).mean())
        assert np.linalg.norm(noise[row]) == pytest.approx(0.5 * typical, rel=1e-4)
        assert not noise[row][tokens == 0].any()  # padding has no gradient, so no noise
    clean = keras.losses.binary_crossentropy(LABELS, core(IDS)).numpy()
    pushed = perturbed([ids, tf.constant(noise)])[0]
    pushed = keras.losses.binary_crossentropy(LABELS, pushed).numpy()
    assert (pushed > clean).all()
    assert not perturbation(tf.zeros((2, 6, 4)), embedded, IDS, 0.5).numpy().any()


def _one_step(model) -> None:
    """One plain gradient step on the batch (no clipping: a step twice as large is)."""
    from rnncli.network.model import keras

    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="binary_crossentropy")
    model.fit(IDS, LABELS, batch_size=2, epochs=1, verbose=0, shuffle=False)


def test_a_step_learns_from_the_clean_and_the_perturbed_batch():
    """epsilon 0: the perturbed batch is the clean one, so the step is twice the plain
    step; epsilon > 0 moves the weights elsewhere."""
    from rnncli.training.adversarial import Adversarial

    _, core, _ = _networks()
    start = core.get_weights()
    _one_step(core)
    plain = [w - w0 for w, w0 in zip(core.get_weights(), start)]
    for epsilon, same in ((0.0, True), (2.0, False)):
        _, core, perturbed = _networks()
        _one_step(Adversarial(core, perturbed, epsilon))
        step = [w - w0 for w, w0 in zip(core.get_weights(), start)]
        assert all(np.allclose(s, 2 * p, atol=1e-6) for s, p in zip(step, plain)) is same


@pytest.mark.slow
def test_an_adversarially_trained_model_is_an_ordinary_one(tmp_path, tiny_csv, gru_model):
    """Asked for, it is recorded and the model serves; "auto" is off for a network that is
    not pretrained (tests/test_pretrain.py: on for a pretrained one)."""
    assert json.loads((gru_model / "rnncli.json").read_text())["settings"]["adversarial"] == 0
    out = tmp_path / "adv"
    result = CliRunner().invoke(cli, ["train", str(tiny_csv), "-o", str(out), *TINY,
                                      "--adversarial", "0.3", "--quiet"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "rnncli.json").read_text())
    assert manifest["settings"]["adversarial"] == 0.3
    result = CliRunner().invoke(cli, ["predict", "-m", str(out), "a fine film", "-f", "json"])
    assert result.exit_code == 0, result.output
    assert 0.0 <= json.loads(result.output)[0]["score"] <= 1.0
