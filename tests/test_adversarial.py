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


def _one_step(model, optimizer=None) -> None:
    """One plain gradient step on the batch (no clipping: a step twice as large is)."""
    from rnncli.network.model import keras

    model.compile(optimizer=optimizer or keras.optimizers.SGD(0.1), loss="binary_crossentropy")
    model.fit(IDS, LABELS, batch_size=2, epochs=1, verbose=0, shuffle=False)


def _steps(model_step):
    """(the weights' start, what one step moved them by)."""
    _, core, perturbed = _networks()
    start = core.get_weights()
    model_step(core, perturbed)
    return start, [w - w0 for w, w0 in zip(core.get_weights(), start)]


def test_a_step_learns_from_the_clean_and_the_perturbed_batch():
    """The step is the gradient of the clean loss plus the loss at the perturbation the
    clean pass's gradient gives (computed here by hand); epsilon 0 makes it twice the
    plain step, under a loss scale too (mixed precision's)."""
    from rnncli.network.model import keras, tf
    from rnncli.training.adversarial import Adversarial, perturbation

    _, plain = _steps(lambda core, _: _one_step(core))
    for scale in (None, 1024.0):
        optimizer = (None if scale is None else keras.optimizers.LossScaleOptimizer(
            keras.optimizers.SGD(0.1), initial_scale=scale, dynamic_growth_steps=10**9))
        _, step = _steps(lambda core, perturbed, optimizer=optimizer: _one_step(
            Adversarial(core, perturbed, 0.0), optimizer))
        assert all(np.allclose(s, 2 * p, atol=1e-6) for s, p in zip(step, plain))

    def by_hand(core, perturbed):
        ids, zeros = tf.constant(IDS), tf.zeros((2, 6, 4))
        loss = keras.losses.BinaryCrossentropy()
        with tf.GradientTape() as tape:
            tape.watch(zeros)
            probs, embedded = perturbed([ids, zeros], training=True)
            clean = loss(LABELS, probs)
        noise = perturbation(tape.gradient(clean, zeros), embedded, ids, 2.0)
        with tf.GradientTape() as tape:
            total = loss(LABELS, perturbed([ids, zeros], training=True)[0]) + loss(
                LABELS, perturbed([ids, noise], training=True)[0])
        weights = core.trainable_weights
        for w, g in zip(weights, tape.gradient(total, weights)):
            w.assign_sub(0.1 * tf.convert_to_tensor(g))

    _, want = _steps(by_hand)
    _, got = _steps(lambda core, perturbed: _one_step(Adversarial(core, perturbed, 2.0)))
    assert all(np.allclose(g, w, atol=1e-6) for g, w in zip(got, want))
    assert not all(np.allclose(g, 2 * p, atol=1e-6) for g, p in zip(got, plain))


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
