"""HEAVY: language-model pretraining of the recurrent network (``--unlabelled``, and
``rnncli pretrain``), before it learns the labels.

The first bidirectional layer reads every pretraining text as two language models, as
ELMo and ULMFiT do: its forward half predicts each next token, its backward half each
token before. Both halves share one output layer over the vocabulary, trained with a
sampled softmax (``tf.nn.sampled_softmax_loss``, its candidates drawn from a log-uniform
distribution, which suits a vocabulary sorted by frequency): 512 words a batch instead
of 20,000, so the output layer costs about what the recurrent layer does. The
validation loss is the full softmax's (per token within a batch, batches averaged alike).

The embedding (and the token pairs of a character model) and that first layer then start
the classifier (:func:`encoder_weights`), which learns the labels as it would from a
random start. Texts are read in SEGMENT-token pieces, and Adam runs at a higher rate
than the classifier's (LEARNING_RATE): both gave a better language model for the same
tokens. ULMFiT's discriminative learning rates (each layer down 2.6 times slower) and a
warm-up of the pretrained layers were tried and slowed fine-tuning down (docs/pretraining.md).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnncli.core.config import TrainConfig
from rnncli.core.errors import Terminated, UsageError
from rnncli.network import model as M
from rnncli.network.model import keras, tf
from rnncli.training import epochs as epoch_plan
from rnncli.training import fitloop
from rnncli.training import resume as resume_run
from rnncli.training.resume import Progress

# Tokens a pretraining row holds: texts are cut into pieces this long (as language models
# train on windows of a stream), so that an epoch makes many more updates than it has
# texts. Measured on 20,000 unlabelled IMDB reviews, one epoch: see docs/pretraining.md.
SEGMENT = 64
# Adam's learning rate while pretraining: higher than the classifier's (more was learnt in
# one epoch: see docs/pretraining.md).
LEARNING_RATE = 0.012
# Candidates of the sampled softmax a batch (Jean et al. 2015 use 500 to 2,000).
SAMPLED = 512
# The pretraining's dropout: lighter than the classifier's, since a language model over
# millions of tokens, seen once or a few times, underfits rather than overfits.
DROPOUT = 0.1
# "auto" epochs: enough passes to see about TOKEN_BUDGET tokens, 1 to MAX_AUTO_EPOCHS.
TOKEN_BUDGET = 15_000_000
MAX_AUTO_EPOCHS = 10
# Texts kept apart to measure perplexity: this share, at most VALIDATION_TEXTS.
VALIDATION_SHARE, VALIDATION_TEXTS = 0.02, 1000


class LanguageModelLoss(keras.layers.Layer):
    """[recurrent states (batch, time, 2 x units), token ids (batch, time)] -> each row's
    share of the batch's mean loss per token (batch,), so that Keras's mean over the rows is
    the mean over the tokens. Forward states at t predict the token at t + 1, backward
    states at t the token at t - 1; padding is never a target. ``gap`` 2 (a model with
    token pairs, whose input at t holds the pair of tokens t - 1 and t): the backward
    states at t predict the token at t - 2, which they have not read. Computed in float32,
    whatever the precision of the layers before."""

    def __init__(self, vocab_size: int, units: int, sampled: int = SAMPLED, gap: int = 1,
                 **kwargs):
        super().__init__(**{"dtype": "float32", **kwargs})
        self.vocab_size, self.units, self.sampled, self.gap = vocab_size, units, sampled, gap
        self.supports_masking = True  # the ids say which steps count

    def compute_mask(self, inputs, mask=None):
        return None

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(self.vocab_size, self.units),
                                      initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(self.vocab_size,), initializer="zeros")

    def call(self, inputs, training=None):
        states, ids = inputs
        states = tf.cast(states, "float32")
        ids = tf.cast(ids, "int64")
        units, gap = self.units, self.gap

        def flat(t):
            return tf.reshape(t, (-1, units) if len(t.shape) == 3 else (-1,))

        hidden = tf.concat([flat(states[:, :-1, :units]), flat(states[:, gap:, units:])], 0)
        targets = tf.concat([flat(ids[:, 1:]), flat(ids[:, :-gap])], 0)
        sources = tf.concat([flat(ids[:, :-1]), flat(ids[:, gap:])], 0)
        row = tf.range(tf.shape(ids)[0])[:, None]
        length = tf.shape(ids)[1]
        rows = tf.concat([flat(tf.tile(row, [1, length - 1])),
                          flat(tf.tile(row, [1, tf.maximum(length - gap, 0)]))], 0)
        keep = (targets > 0) & (sources > 0)  # a padded step neither predicts nor is predicted
        hidden, targets, rows = (tf.boolean_mask(t, keep) for t in (hidden, targets, rows))
        if training and self.sampled < self.vocab_size:
            losses = tf.nn.sampled_softmax_loss(
                tf.convert_to_tensor(self.kernel), tf.convert_to_tensor(self.bias),
                targets[:, None], hidden, self.sampled, self.vocab_size,
                remove_accidental_hits=True)
        else:
            logits = tf.matmul(hidden, self.kernel, transpose_b=True) + self.bias
            losses = tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits)
        batch = tf.shape(ids)[0]
        per_row = tf.math.unsorted_segment_sum(losses, rows, batch)
        tokens = tf.maximum(tf.cast(tf.size(targets), "float32"), 1.0)
        return per_row * tf.cast(batch, "float32") / tokens

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0],)


def build_language_model(config: TrainConfig):
    """Token ids (batch, time) -> each row's share of the mean loss per token; its
    ``embedding``, ``token_pairs`` and first bidirectional layer are the classifier's
    (the same names and shapes, model.build_core)."""
    ids = keras.Input(shape=(None,), dtype="int64", name="ids")
    x, _ = M.Encoder(config, layers=1, dropout=DROPOUT, sequences=True)(ids)
    x = keras.layers.Dropout(DROPOUT, name="states_dropout")(x)
    loss = LanguageModelLoss(config.max_tokens, config.units, gap=2 if config.bigram_dim else 1,
                             name="lm_loss")([x, ids])
    return keras.Model(ids, loss, name="language_model")


def pretrained_layers(config: TrainConfig) -> list[str]:
    """The layers pretraining gives the classifier, by name."""
    return ["embedding", *(["token_pairs"] if config.bigram_dim else []), f"bi{config.cell}_1"]


def encoder_weights(language_model, config: TrainConfig) -> dict[str, list[np.ndarray]]:
    """The pretrained layers' weights, by layer name."""
    return {name: language_model.get_layer(name).get_weights()
            for name in pretrained_layers(config)}


def start_from(core, weights: dict[str, list[np.ndarray]]) -> None:
    """Copy pretrained layers' weights into the classifier ``core``."""
    for name, values in weights.items():
        core.get_layer(name).set_weights(values)


def auto_epochs(tokens: int) -> int:
    """Passes over a corpus of ``tokens`` tokens that see about TOKEN_BUDGET of them."""
    return max(1, min(MAX_AUTO_EPOCHS, round(TOKEN_BUDGET / max(tokens, 1))))


@dataclass
class Corpus:
    """The pretraining texts as token ids: training rows and validation rows."""

    train: np.ndarray
    validation: np.ndarray
    texts: int  # before they were cut into pieces

    @property
    def tokens(self) -> int:
        return int(np.count_nonzero(self.train))


def corpus(vectorizer, texts: list[str], config: TrainConfig) -> Corpus:
    """Token ids of the pretraining ``texts`` in SEGMENT-token pieces, VALIDATION_SHARE
    of the texts (at most VALIDATION_TEXTS, at least one) kept apart at random
    (``config.seed``)."""
    ids = M.vectorize(vectorizer, texts, config.seq_len)
    order = np.random.default_rng(config.seed).permutation(len(ids))
    held = min(VALIDATION_TEXTS, max(1, round(len(ids) * VALIDATION_SHARE)))
    return Corpus(segments(ids[order[held:]]), segments(ids[order[:held]]), len(ids))


def segments(ids: np.ndarray) -> np.ndarray:
    """Right-padded rows of token ids -> rows of SEGMENT tokens, each text's pieces in
    turn, the empty ones dropped."""
    length = SEGMENT
    width = -(-ids.shape[1] // length) * length
    pieces = np.pad(ids, ((0, 0), (0, width - ids.shape[1]))).reshape(-1, length)
    return pieces[pieces[:, 0] > 0]


def prepare(vectorizer, unlabelled_texts: list[str], train_texts: list[str],
            config: TrainConfig, reporter) -> tuple[Corpus, TrainConfig]:
    """(the pretraining corpus: the unlabelled and the training texts as token ids,
    config with ``pretrain_epochs`` resolved)."""
    started = time.perf_counter()
    data = corpus(vectorizer, list(unlabelled_texts) + list(train_texts), config)
    epochs = config.pretrain_epochs or auto_epochs(data.tokens)
    which = " and ".join(f"{n:,} {kind} texts" for n, kind in (
        (len(unlabelled_texts), "unlabelled"), (len(train_texts), "training")) if n)
    reporter.message(f"pretraining on {which} ({data.tokens:,} tokens, "
                     f"{time.perf_counter() - started:.0f}s to read): {epochs} epoch(s)")
    return data, config.replace(pretrain_epochs=epochs)


def run(config: TrainConfig, data: Corpus, reporter, *, progress: Progress | None = None,
        precision: str = "float32", replicas: int = 1, rows: np.ndarray | None = None):
    """Pretrain in the current device scope (resumed from ``progress``, the run's own
    state: the pretraining keeps its own inside it), its embedding started from ``rows``
    (or None); (the pretrained layers' weights, a
    record of the pretraining for the manifest)."""
    from rnncli.network.runtime import dtype_policy, set_seed

    stage = resume_run.stage(progress, resume_run.PRETRAIN_STAGE)
    if stage is not None and stage.state:
        reporter.message(f"resuming the pretraining {resume_run.where(stage.state)}")
    set_seed(config.seed)
    with dtype_policy(precision):
        language_model = build_language_model(config)
    if rows is not None:
        fitloop.start_embedding(language_model, rows)
    try:
        weights, record = pretrain(config, data, reporter, language_model, progress=stage,
                                   precision=precision, replicas=replicas)
    except (KeyboardInterrupt, Terminated) as exc:
        exc.where = f"while pretraining, {getattr(exc, 'where', '')}".rstrip(", ")
        raise
    reporter.message(f"pretrained: validation perplexity {record['validation_perplexity']} "
                     f"({record['seconds']:.0f}s)")
    resume_run.keep_stage_record(stage, {"pretrain_epochs": config.pretrain_epochs,
                                         "record": record})
    return weights, record


def pretrain(config: TrainConfig, data: Corpus, reporter, language_model, *,
             progress: Progress | None = None, precision: str = "float32",
             replicas: int = 1) -> tuple[dict[str, list[np.ndarray]], dict[str, Any]]:
    """Fit ``language_model`` on ``data`` for ``config.pretrain_epochs`` epochs (early
    stopping on the validation perplexity); (the pretrained layers' weights, a record of
    the pretraining)."""
    started = time.perf_counter()
    lm_config = config.replace(epochs=config.pretrain_epochs, patience=1, lr_decay=1.0,
                               lr=LEARNING_RATE)
    zeros = np.zeros(len(data.train), np.float32)
    full_only = replicas > 1
    batches = epoch_plan.Batches(
        fitloop.length_epochs(data.train, zeros, config.batch_size, seed=config.seed + 1,
                              drop_remainder=full_only),
        fitloop.length_batches(data.validation, np.zeros(len(data.validation), np.float32),
                               config.batch_size),
        steps=(len(data.train) // config.batch_size if full_only
               else -(-len(data.train) // config.batch_size)), rows=len(data.train))
    try:
        history, best = fitloop.fit(language_model, lm_config, None, None, None, None,
                                    PerplexityReporter(reporter), replicas=replicas,
                                    progress=progress, precision=precision, batches=batches,
                                    compiler=_compile_language_model)
    except UsageError as exc:
        if "diverged" not in str(exc):
            raise
        raise UsageError("pretraining diverged (the language models' loss is not finite); "
                         "train without --unlabelled / --pretrain-epochs, and report it") from exc
    loss = history[best - 1].get("val_loss") if best else None
    record = {"texts": data.texts, "tokens": data.tokens,
              "epochs_run": len(history), "best_epoch": best,
              "validation_perplexity": _exp(loss),
              "seconds": round(time.perf_counter() - started, 1),
              "history": [{**h, **_perplexity(h)} for h in history]}
    return encoder_weights(language_model, config), record


def _compile_language_model(model, config: TrainConfig, replicas: int) -> None:
    model.compile(optimizer=fitloop.adam(model, config, replicas), loss=_mean_of_output)


def _mean_of_output(y_true, y_pred):
    """The model's output is already each row's loss."""
    return y_pred


def _perplexity(logs: dict[str, Any]) -> dict[str, float]:
    loss = logs.get("val_loss")
    return {"val_perplexity": _exp(loss)} if loss is not None else {}


def _exp(loss: float | None) -> float | None:
    """A perplexity from a mean loss (capped: a huge loss would overflow)."""
    return None if loss is None else round(math.exp(min(loss, 700.0)), 2)


class PerplexityReporter:
    """Passes training events on, saying "pretraining" and adding the validation
    perplexity to each epoch's figures."""

    def __init__(self, reporter):
        self._reporter = reporter
        self.wants_batches = reporter.wants_batches

    def __getattr__(self, name):
        return getattr(self._reporter, name)

    def train_begin(self, epochs: int, steps: int, rows: int = 0, batch_size: int = 0) -> None:
        self._reporter.message(f"pretraining: {epochs} epoch(s) of forward and backward "
                               "language models")
        self._reporter.train_begin(epochs, steps, rows, batch_size)

    def epoch_end(self, epoch: int, logs: dict[str, float], seconds: float) -> None:
        self._reporter.epoch_end(epoch, {**logs, **_perplexity(logs)}, seconds)
