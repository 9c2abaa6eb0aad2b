"""Fitting on split data: derive the settings, fit the n-gram model and the recurrent
network, blend and calibrate their scores, then save, verify and publish the model
directory. train.py reads and splits a file that fits in memory; streamed.py a large
one, from disk; both end here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnncli.core import fsio
from rnncli.core.config import TrainConfig
from rnncli.core.errors import UsageError
from rnncli.core.scripts import segmentation_warnings
from rnncli.data.dataset import Dataset
from rnncli.modeldir import artifacts
from rnncli.training import resume as resume_run
from rnncli.training import saving
from rnncli.training.train_notes import stopping_note


class Reporter:
    """What training tells a person. The CLI passes a Rich or plain implementation."""

    wants_batches = False

    def message(self, text: str) -> None: ...
    def warning(self, text: str) -> None: ...
    def train_begin(self, epochs: int, steps: int, rows: int = 0, batch_size: int = 0) -> None: ...
    def epoch_begin(self, epoch: int, first_step: int = 0) -> None: ...
    def step_end(self, step: int) -> None: ...  # a batch done, without wants_batches
    def batch_end(self, step: int, logs: dict[str, float]) -> None: ...
    def epoch_end(self, epoch: int, logs: dict[str, float], seconds: float) -> None: ...
    def train_end(self) -> None: ...


def _class_weights(config: TrainConfig, train_set: Dataset) -> np.ndarray | None:
    """One weight per class for the losses: with ``class_weight`` "balanced", rows /
    (classes x rows of the class) over the training rows (scikit-learn's rule), else
    None."""
    if config.class_weight != "balanced":
        return None
    counts = np.bincount(train_set.labels, minlength=len(train_set.label_names))
    return len(train_set.labels) / (len(counts) * np.maximum(counts, 1))


def fit_and_publish(train_set: Dataset, val_set: Dataset, test_set: Dataset,
                    config: TrainConfig, *, out: Path, source: dict[str, Any],
                    device: str = "auto", mixed_precision: bool | str = False,
                    role=None, reporter: Reporter | None = None,
                    embeddings: str | Path | None = None,
                    unlabelled_texts: list[str] | None = None, encoder=None,
                    progress: resume_run.Progress | None = None) -> dict[str, Any] | None:
    """Fit on tokenized data, then save, verify and atomically publish ``out``.

    ``role``: this process's place in a multi-machine run (multi_worker.WorkerRole); only the
    chief publishes, the others return None. ``progress``: from :func:`resume.prepare`,
    or None to keep no state. ``encoder``: a pretrained encoder to start from
    (encoder.load), or None.
    """
    reporter = reporter or Reporter()
    from rnncli.network import model as M

    config, source, vocab, weights, precision, (device_names, strategy, replicas) = _settings(
        config, train_set, source, device, mixed_precision, role, reporter, encoder=encoder)
    vectorizer = M.build_vectorizer(config, vocab)
    x_train, x_val, x_test = (M.vectorize(vectorizer, s.texts, config.seq_len)
                              for s in (train_set, val_set, test_set))
    started = time.perf_counter()
    start, config, source = _starting_vectors(vectorizer, vocab, config, source, embeddings,
                                              unlabelled_texts, train_set.texts, reporter,
                                              encoder, progress)
    ngram = _fit_ngrams(config, (train_set, val_set, test_set), device_names[0], role,
                        weights, reporter)
    core, history, best_epoch = _fit_rnn(
        config, start, (x_train, train_set.labels), (x_val, val_set.labels), device_names,
        strategy, reporter, replicas=replicas, progress=progress, precision=precision,
        class_weights=weights)
    if role is not None and not role.chief:
        reporter.message(f"{role}: training finished; the chief writes the model")
        return None
    run = Run(config, vectorizer, weights, precision, device_names[0], replicas,
              role.workers if role else 1, started, start.described(source))
    return finish(run, (core, history, best_epoch), ngram, (train_set, val_set, test_set),
                  (x_val, x_test), out=out, progress=progress, reporter=reporter)


@dataclass
class Run:
    """What the last steps of a fit need to know of it."""

    config: TrainConfig
    vectorizer: Any
    weights: np.ndarray | None  # class weights, or None
    precision: str
    device_name: str  # where the scores are computed
    replicas: int
    workers: int
    started: float  # perf_counter() when fitting began
    source: dict[str, Any]  # the manifest's "data"


def finish(run: Run, fitted: tuple, ngram, sets: tuple, ids: tuple, *, out: Path,
           progress: resume_run.Progress | None, reporter: Reporter) -> dict[str, Any]:
    """Score the trained network (``fitted``: network, history, best epoch) on the
    validation and test ``ids`` (arrays, or batches of them), blend with ``ngram``,
    calibrate, then save, verify and publish ``out``; the manifest. ``sets``: (training,
    validation, test): their labels and class names (and the test rows, written with the
    model)."""
    from rnncli.network import model as M
    from rnncli.network.runtime import chosen_labels

    config, (core, history, best_epoch), (train_set, val_set, test_set) = run.config, fitted, sets
    serving_core, (val_scores, test_scores) = _network_scores(config, core, run.device_name,
                                                              *ids)
    blend, ngram_parts, calibration, (val_scores, test_scores, served_val) = _final_scores(
        config, ngram, val_set, test_set, val_scores, test_scores, run.weights, reporter)
    manifest = saving.manifest(
        config, train_set, val_set, test_set, val_scores, test_scores, source=run.source,
        device=",".join(chosen_labels()), precision=run.precision, replicas=run.replicas,
        workers=run.workers, history=history, best_epoch=best_epoch,
        versions={"keras_version": M.keras.__version__,
                  "tensorflow_version": M.tf.__version__},
        seconds=time.perf_counter() - run.started, blend=blend.record if blend else None,
        calibration=calibration)
    text_model = M.build_text_model(config, run.vectorizer, serving_core, ngram_parts,
                                    calibration["temperature"])
    return _publish(out, text_model, manifest, val_set, test_set, served_val, progress,
                    reporter)


def _settings(config: TrainConfig, train_set: Dataset, source: dict[str, Any], device: str,
              mixed_precision: bool | str, role, reporter: Reporter, batches=None,
              devices: tuple | None = None, encoder=None):
    """(config with the data-derived settings, source with the tokens' character share,
    vocabulary, class weights, precision, (device names, strategy, replicas)); says which
    devices, vocabulary and sequence length training uses. ``batches``: the training
    texts to count, in batches, when ``train_set.texts`` holds only a sample of them;
    ``devices``: what :func:`_devices` gave, when it had to run first; ``encoder``: a
    pretrained encoder, whose tokenizer, vocabulary and layer sizes are used."""
    from rnncli.network.runtime import precision_policy, set_seed

    device_names, strategy, replicas, where = devices or _devices(
        device, role, config, len(train_set.labels), reporter)
    precision = precision_policy(mixed_precision, device_names)
    config = config.replace(classes=len(train_set.label_names))
    if encoder is not None:
        config = encoder.configure(config, reporter)
    weights = _class_weights(config, train_set)
    set_seed(config.seed)
    config, vocab, character_share = _derive(config, train_set.texts, reporter, batches)
    if encoder is not None:  # its vocabulary, however many tokens the training texts have
        vocab = encoder.vocab
        config = config.replace(max_tokens=len(vocab) + 2)
    source = {**source, "character_share": round(character_share, 4)}
    where = _precision_note(precision, where, reporter)
    reporter.message(f"vocabulary {config.max_tokens} tokens, sequence length {config.seq_len}, "
                     f"device {where}")
    return config, source, vocab, weights, precision, (device_names, strategy, replicas)


@dataclass
class Start:
    """Where the recurrent network starts: embedding rows (or None), the texts to pretrain
    it on as language models (pretrain.Corpus, or None), and, once pretrained, a record of
    the pretraining for the manifest."""

    rows: np.ndarray | None = None
    corpus: Any = None
    encoder: dict[str, list[np.ndarray]] | None = None  # weights pretrained before
    record: dict[str, Any] | None = None

    def described(self, source: dict[str, Any]) -> dict[str, Any]:
        """The manifest's "data" with the pretraining's record, if there was one."""
        return {**source, "pretraining": self.record} if self.record else source


def _starting_vectors(vectorizer, vocab: list[str], config: TrainConfig,
                      source: dict[str, Any], embeddings: str | Path | None,
                      unlabelled_texts: list[str] | None, train_texts: list[str],
                      reporter: Reporter, encoder=None,
                      progress: resume_run.Progress | None = None):
    """(Start, config with the embedding size of the ``embeddings`` file, the
    pretraining's epochs and ``adversarial`` resolved, source with how many words the file
    has a vector for).
    ``unlabelled_texts`` (or ``pretrain_epochs``) pretrain the network on them and the
    training texts (pretrain.py); with ``word_vectors``, word vectors are learned from them
    too; ``encoder``: a pretrained encoder to start from instead; ``progress``: the run's
    state, which holds the pretrained network once it was kept after pretraining."""
    from rnncli.training import adversarial, vectors

    if encoder is not None:
        return (Start(encoder=encoder.weights, record={**encoder.record,
                                                       "encoder": encoder.path.name}),
                adversarial.resolve(config, pretrained=True), source)
    initial, found = vectors.initial_vectors(
        vectorizer, vocab, config, embeddings,
        unlabelled_texts if config.word_vectors else None, train_texts, reporter)
    if embeddings is not None:
        source = {**source, "embeddings": {**source["embeddings"], "found": found}}
        if initial.shape[1] != config.embed_dim:
            reporter.message(f"embedding size {initial.shape[1]}, from {Path(embeddings).name}")
            config = config.replace(embed_dim=int(initial.shape[1]))
    if not config.pretrains(unlabelled_texts is not None):
        return (Start(initial), adversarial.resolve(config.replace(pretrain_epochs=0),
                                                    pretrained=False),
                source)
    kept = resume_run.stage_record(progress, resume_run.PRETRAIN_STAGE)
    if kept:  # resumed after pretraining: the run's state holds the network
        reporter.message(f"pretrained before the interruption (validation perplexity "
                         f"{kept['record'].get('validation_perplexity')})")
        return (Start(initial, record=kept["record"]),
                adversarial.resolve(config.replace(pretrain_epochs=kept["pretrain_epochs"]),
                                    pretrained=True), source)
    from rnncli.training import pretrain

    corpus, config = pretrain.prepare(vectorizer, unlabelled_texts or [], train_texts, config,
                                      reporter)
    return Start(initial, corpus), adversarial.resolve(config, pretrained=True), source


def _fit_ngrams(config: TrainConfig, sets: tuple[Dataset, Dataset, Dataset], device_name: str,
                role, class_weights: np.ndarray | None, reporter: Reporter):
    """The fitted n-gram model (ngrams.py), or None without --ngrams."""
    from rnncli.network import model as M
    from rnncli.training import ngrams

    with M.tf.device(device_name):  # small and sparse: one device is enough
        # a worker other than the chief publishes nothing: no refit there
        return (ngrams.fit_ngrams(config, *sets, reporter, refit=role is None or role.chief,
                                  class_weights=class_weights)
                if config.ngrams else None)


def _network_scores(config: TrainConfig, core, device_name: str, x_val, x_test):
    """(a clean, uncompiled copy of the trained network, its (validation, test) scores); an
    error if they are not finite. The saved model carries no optimizer state or compile
    config (smaller, and nothing outside the loader's allowlist); keras.models.clone_model
    would copy compile()."""
    from rnncli.network import model as M
    from rnncli.training import fitloop

    with M.tf.device(device_name):
        serving_core = M.build_core(config)
        serving_core.set_weights(core.get_weights())
        val_scores = fitloop.scores(serving_core, x_val)
        test_scores = fitloop.scores(serving_core, x_test)
    if not (np.all(np.isfinite(val_scores)) and np.all(np.isfinite(test_scores))):
        raise UsageError("training diverged (the model outputs NaN); lower --lr or set "
                         "--clipnorm")
    return serving_core, (val_scores, test_scores)


def _final_scores(config: TrainConfig, ngram, val_set: Dataset, test_set: Dataset,
                  val_scores: np.ndarray, test_scores: np.ndarray,
                  weights: np.ndarray | None, reporter: Reporter):
    """Blend the network's scores with the n-gram model's (if any), then calibrate them:
    (blend or None, the n-gram model's serving parts or None, calibration, (validation,
    test, served validation scores))."""
    from rnncli.core.scoring import with_temperature
    from rnncli.training.blend import calibrate, choose_blend

    blend, ngram_parts, served_val = None, None, val_scores
    if ngram is not None:
        blend = choose_blend(ngram, val_set.labels, test_set.labels, val_scores, test_scores,
                             None if weights is None else weights[val_set.labels])
        refit = ngram.refit_record(test_set.labels, test_scores, blend.rnn_weight)
        if refit:
            blend.record["ngram_refit"] = refit
        # what the served model gives on the validation rows (its n-gram part was refit
        # on them), which the check of the saved model compares with
        served_val = (blend.rnn_weight * val_scores
                      + (1 - blend.rnn_weight) * ngram.served_val_scores)
        val_scores, test_scores = blend.val_scores, blend.test_scores
        ngram_parts = ngram.serving_parts(blend.rnn_weight)
        reporter.message(blend.describe(config.cell))
    calibration = calibrate(val_set.labels, val_scores,
                            None if weights is None else weights[val_set.labels])
    temperature = calibration["temperature"]
    if temperature != 1.0:
        val_scores, test_scores, served_val = (with_temperature(s, temperature)
                                               for s in (val_scores, test_scores, served_val))
        reporter.message(f"calibration: temperature {temperature:.2f} (validation ECE "
                         f"{calibration['validation_ece']:.3f} -> "
                         f"{calibration['calibrated_validation_ece']:.3f})")
    return blend, ngram_parts, calibration, (val_scores, test_scores, served_val)


def _publish(out: Path, text_model, manifest: dict[str, Any], val_set: Dataset,
             test_set: Dataset, served_val: np.ndarray,
             progress: resume_run.Progress | None, reporter: Reporter) -> dict[str, Any]:
    """Save, verify and publish ``out``, drop the state kept for --resume; the manifest."""
    texts = val_set.texts[:saving.VERIFY_ROWS]  # a streamed file's: those it kept
    saving.publish_model(out, text_model, test_set, manifest, texts, served_val[:len(texts)],
                         reporter)
    if progress is not None:
        resume_run.finish(progress.backup)
    reporter.message(f"saved model to {out}")
    if fsio.replaces_cwd(out):
        reporter.message(fsio.CWD_NOTE)
    return artifacts.read_manifest(out)


def _fit_rnn(config: TrainConfig, start: Start, train: tuple, val: tuple,
             device_names: list[str], strategy, reporter: Reporter, *, replicas: int,
             progress: resume_run.Progress | None, precision: str,
             class_weights: np.ndarray | None = None, batches=None):
    """Build the recurrent network on its devices, pretrain it or start its embedding as
    ``start`` says, and fit it on (ids, labels) pairs (or ``batches``, fitloop.fit's);
    returns (network, history, best epoch)."""
    from rnncli.network.runtime import device_scope, dtype_policy, set_seed
    from rnncli.training import adversarial, fitloop, pretrain

    with device_scope(device_names, strategy):
        encoder = start.encoder
        if start.corpus is not None and not (progress and progress.state):
            # (a run resumed after pretraining: its state holds the weights)
            encoder, start.record = pretrain.run(config, start.corpus, reporter,
                                                 progress=progress, precision=precision,
                                                 replicas=replicas, rows=start.rows)
        set_seed(config.seed)
        with dtype_policy(precision):
            core, trained = adversarial.networks(config)
        if start.rows is not None:
            fitloop.start_embedding(core, start.rows)
        if encoder is not None:
            pretrain.start_from(core, encoder)
        if trained is not core:
            reporter.message(f"adversarial training: each batch is also learnt with its words "
                             f"pushed along the loss's gradient ({config.adversarial:g} "
                             "word-vector lengths a text; --adversarial 0: off)")
        history, best_epoch = fitloop.fit(trained, config, *train, *val, reporter,
                                          replicas=replicas, progress=progress,
                                          precision=precision, class_weights=class_weights,
                                          batches=batches)
    note = stopping_note(history, best_epoch, config.epochs)
    if note:
        reporter.message(note)
    return core, history, best_epoch


def _precision_note(precision: str, where: str, reporter: Reporter) -> str:
    """The device description with the precision; a note when it will not pay."""
    if precision == "mixed_bfloat16":
        reporter.message("note: mixed precision is meant for GPUs; on a CPU (bfloat16) it is "
                         "usually slower")
    return where if precision == "float32" else f"{where}, {precision.replace('_', ' ')} precision"


def _devices(device: str, role, config: TrainConfig, train_rows: int, reporter: Reporter):
    """(TensorFlow device names, strategy or None, replicas in all, description).

    On several machines (``role`` from TF_CONFIG) the strategy is created here, before
    TensorFlow runs any operation, as MultiWorkerMirroredStrategy requires.
    """
    from rnncli.network.multi_worker import multi_worker_strategy
    from rnncli.network.runtime import chosen_labels, select_devices

    device_names = select_devices(device)
    strategy = None
    if role is not None:
        reporter.message(f"{role}: joining the cluster in TF_CONFIG (waits for the others)")
        strategy = multi_worker_strategy()
    replicas = strategy.num_replicas_in_sync if strategy else len(device_names)
    if replicas > 1 and (config.batch_size % replicas or train_rows < config.batch_size):
        raise UsageError(f"--batch-size {config.batch_size} on {replicas} devices: the batch "
                         f"is split evenly, so give a multiple of {replicas} that is at most "
                         f"the {train_rows} training rows")
    where = ",".join(chosen_labels())
    if role is not None:
        where += f" ({role.workers} processes, {replicas} devices in all: each batch is split " \
                 "between them)"
    elif replicas > 1:
        where += " (mirrored: each batch is split between them)"
    return device_names, strategy, replicas, where


def _derive(config: TrainConfig, texts: list[str], reporter: Reporter, batches=None):
    """(config with the data-derived settings resolved, vocabulary, share of the tokens
    that are one Chinese or Japanese character); says what it found about the tokens.
    ``batches``: the training texts in batches, counted instead of ``texts`` (then a
    sample of them, for the warnings)."""
    from rnncli.network import counting

    derived = counting.derive_settings(config, texts if batches is None else None,
                                       batches=batches)
    for warning in segmentation_warnings(texts, derived.long_share):
        reporter.warning(warning)
    if derived.config.bigram_dim:
        reporter.message(f"token pairs embedded ({derived.config.bigram_dim} dimensions); "
                         f"{derived.char_share:.0%} of the tokens are Chinese or Japanese "
                         "characters")
    return derived.config, derived.vocab, derived.char_share
