"""Training: read and split the data, fit with callbacks, publish the model directory.

The data is read, checked and split *before* TensorFlow is imported, so a bad file fails
in a fraction of a second. The model directory is built beside the target, verified by
reloading it, and only then swapped in; an interrupted run leaves the old model intact.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from rnncli import __version__, artifacts
from rnncli import resume as resume_run
from rnncli.config import TrainConfig
from rnncli.data import Dataset, load_dataset, read_texts, split_dataset, write_split
from rnncli.errors import ModelError, RnnCliError, Terminated, UsageError
from rnncli.metrics import evaluate_scores, round_figures
from rnncli.predict import score_texts, serving_function
from rnncli.scripts import segmentation_warnings


# The n-gram model: logistic regression trained by Adam on unit-length TF-IDF rows, whose
# weights must grow large; a higher learning rate than the RNN's, and early stopping.
# The n-gram model's Adam: enough steps an epoch (see _fit_ngrams) at a rate that reaches
# the logistic regression's optimum before early stopping reads noise as a plateau. On the
# hotel reviews' validation split, 0.01 with ~40 batches an epoch stopped at 0.893
# accuracy (log loss 0.256), 0.03 with ~160 at 0.901 (0.244; scikit-learn's best, C=16,
# 0.903 and 0.240).
NGRAM_LR = 0.03
NGRAM_BATCH = 256
NGRAM_EPOCHS = 50
BLEND_TOLERANCE = 1e-4  # validation log loss
BLEND_MIN_ROWS = 50
# Checked after saving: the reloaded model (and the ONNX engine) must give the trained
# model's scores on the first validation texts, and agree with each other on these too.
VERIFY_ROWS = 256
VERIFY_PROBES = ["", "!!!", "a wonderful, moving film", "NOT bad at all?!", "1/10",
                 "Ça n'était pas terrible<br /><br />vraiment", "ΟΔΥΣΣΕΥΣ ΚΑΙ ΣΥ", "İSTANBUL",
                 "‘quoted’ `word` 'twas rock'n'roll'", "naïve café — 東京 😀 \x00 after nul",
                 "tab\tand\u0085nel\u2028line", "x" * 3000 + " end", "ＡＢＣ１２３！？",
                 "这款iPhone很好用", "ｻｰﾋﾞｽ最悪", "＜ｂ＞好", "サポートがbad"]


class Reporter:
    """What training tells a person. The CLI passes a Rich or plain implementation."""

    wants_batches = False

    def message(self, text: str) -> None: ...
    def warning(self, text: str) -> None: ...
    def train_begin(self, epochs: int, steps: int) -> None: ...
    def batch_end(self, step: int, logs: dict[str, float]) -> None: ...
    def epoch_end(self, epoch: int, logs: dict[str, float], seconds: float) -> None: ...
    def train_end(self) -> None: ...


def run(data_path: str | Path, config: TrainConfig, *, out: str | Path,
        text_col: str | None = None, label_col: str | None = None,
        positive_label: str | None = None, encoding: str | None = None,
        embeddings: str | Path | None = None, unlabelled: str | Path | None = None,
        device: str = "auto", mixed_precision: bool | str = False, resume: bool = False,
        show_skipped: bool = False, reporter: Reporter | None = None) -> dict[str, Any] | None:
    """Train on a labelled file and publish the model directory ``out``; return its manifest
    (None in a worker of a multi-machine run, which publishes nothing: see TF_CONFIG).

    ``embeddings``: a GloVe/word2vec text file to start the embedding from.
    ``unlabelled``: a file of texts (.csv/.tsv/.jsonl) to learn word vectors from first.
    ``mixed_precision``: see :func:`runtime.precision_policy`.
    ``resume``: continue an interrupted run of the same data and settings (resume.py).
    """
    from rnncli.runtime import multi_worker_role

    reporter = reporter or Reporter()
    out = artifacts.resolve_output(out)
    role = multi_worker_role()  # TF_CONFIG: one of several machines
    writes = role is None or role.chief  # the other workers write nothing
    if resume and role is not None:
        raise UsageError("--resume is not available when training on several machines "
                         "(TF_CONFIG); start the run again without it")
    if writes:
        artifacts.check_target(out)
    data = load_dataset(data_path, text_col=text_col, label_col=label_col,
                        positive_label=positive_label, encoding=encoding)
    for note in data.notes + (data.skipped_report() if show_skipped else []):
        reporter.message(note)
    train_set, val_set, test_set = split_dataset(
        data, val_split=config.val_split, test_split=config.test_split, seed=config.seed)
    reporter.message(
        f"{data.summary()}; positive label {data.positive_label!r}; "
        f"train/validation/test = {len(train_set.texts)}/{len(val_set.texts)}/"
        f"{len(test_set.texts)}")
    source = {
        "file": Path(data_path).name,
        "fingerprint": f"sha256:{data.fingerprint}",
        "text_col": data.text_col,
        "label_col": data.label_col,
        "rows_read": data.rows_read,
        "rows_used": len(data.texts),
        "skipped": data.skipped,
        "positive_rate": round(float(np.mean(data.labels)), 4),
        "split": {"train": len(train_set.texts), "validation": len(val_set.texts),
                  "test": len(test_set.texts)},
    }
    extra_texts = None
    if unlabelled is not None:
        extra_texts, notes = read_texts(unlabelled)
        for note in notes:
            reporter.message(note)
        source["unlabelled"] = {"file": Path(unlabelled).name, "texts": len(extra_texts)}
    if embeddings is not None:
        source["embeddings"] = {"file": Path(embeddings).name}
    with artifacts.lock(out) if writes else contextlib.nullcontext():
        progress = None
        if role is None:
            settings = {k: v for k, v in config.to_dict().items()
                        if k not in resume_run.FREE_SETTINGS}
            key = {"data": _content_key(data.texts, data.labels, data.label_names),
                   "settings": settings,
                   "word vectors": [_file_key(embeddings), _file_key(unlabelled)],
                   "mixed precision": bool(mixed_precision)}
            backup, state = resume_run.prepare(out, key, resume)
            progress = (backup, key, state)
            if state:
                reporter.message(f"resuming after epoch {len(state['history'])} of the "
                                 "interrupted run")
        elif role.chief:  # a run on several machines keeps no state: discard an old one
            resume_run.prepare(out, {}, resume=False)
        return fit_and_publish(train_set, val_set, test_set, config, out=out, source=source,
                               device=device, mixed_precision=mixed_precision, role=role,
                               reporter=reporter, embeddings=embeddings,
                               unlabelled_texts=extra_texts, progress=progress)


def _content_key(texts: list[str], labels, label_names) -> str:
    """What training reads from the data: texts, labels and their names (so a different
    encoding, column or positive label is a different key, as is a different file)."""
    digest = hashlib.sha256(json.dumps(list(label_names)).encode())
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass") + b"\x00")
    digest.update(np.asarray(labels, np.int8).tobytes())
    return digest.hexdigest()


def _file_key(path: str | Path | None) -> str | None:
    return None if path is None else f"{Path(path).name} sha256:{artifacts.sha256_file(Path(path))}"


def fit_and_publish(train_set: Dataset, val_set: Dataset, test_set: Dataset,
                    config: TrainConfig, *, out: Path, source: dict[str, Any],
                    device: str = "auto", mixed_precision: bool | str = False,
                    role=None, reporter: Reporter | None = None,
                    embeddings: str | Path | None = None,
                    unlabelled_texts: list[str] | None = None,
                    progress: tuple | None = None) -> dict[str, Any] | None:
    """Fit on tokenized data, then save, verify and atomically publish ``out``.

    ``role``: this process's place in a multi-machine run (runtime.WorkerRole); only the
    chief publishes, the others return None. ``progress``: (state directory, key, the
    interrupted run's state or None) from :func:`resume.prepare`, or None to keep no
    state.
    """
    reporter = reporter or Reporter()
    from rnncli import model as M
    from rnncli.runtime import (chosen_labels, device_scope, dtype_policy, precision_policy,
                                set_seed)

    device_names, strategy, replicas, where = _devices(device, role, config,
                                                       len(train_set.texts), reporter)
    precision = precision_policy(mixed_precision, device_names)
    set_seed(config.seed)
    config, vocab = _derive(M, config, train_set.texts, reporter)
    if precision != "float32":
        where = f"{where}, {precision.replace('_', ' ')} precision"
    if precision == "mixed_bfloat16":
        reporter.message("note: mixed precision is meant for GPUs; on a CPU (bfloat16) it is "
                         "usually slower")
    reporter.message(f"vocabulary {config.max_tokens} tokens, sequence length {config.seq_len}, "
                     f"device {where}")
    vectorizer = M.build_vectorizer(config, vocab)
    x_train, x_val, x_test = (M.vectorize(vectorizer, s.texts, config.seq_len)
                              for s in (train_set, val_set, test_set))
    started = time.perf_counter()
    initial = _initial_vectors(M, vectorizer, vocab, config, embeddings, unlabelled_texts,
                               train_set.texts, source, reporter)
    if initial is not None and initial.shape[1] != config.embed_dim:
        reporter.message(f"embedding size {initial.shape[1]}, from {Path(embeddings).name}")
        config = config.replace(embed_dim=int(initial.shape[1]))
    with M.tf.device(device_names[0]):  # small and sparse: one device is enough
        ngram = (_fit_ngrams(M, config, train_set, val_set, test_set, reporter)
                 if config.ngrams else None)
    with device_scope(device_names, strategy):
        set_seed(config.seed)
        with dtype_policy(precision):
            core = M.build_core(config)
        if initial is not None:
            _start_embedding(core, initial)
        history = _fit(M, core, config, x_train, train_set.labels, x_val, val_set.labels,
                       reporter, replicas=replicas, progress=progress, precision=precision)
    if role is not None and not role.chief:
        reporter.message(f"{role}: training finished; the chief writes the model")
        return None
    # Clean, uncompiled copies: the saved model carries no optimizer state or compile
    # config (smaller, and nothing outside the loader's allowlist). Scores come from the
    # copy, on one device.
    serving_core = M.build_core(config)  # keras.models.clone_model would copy compile()
    serving_core.set_weights(core.get_weights())
    with M.tf.device(device_names[0]):
        val_scores, test_scores = _scores(serving_core, x_val), _scores(serving_core, x_test)
    if not (np.all(np.isfinite(val_scores)) and np.all(np.isfinite(test_scores))):
        raise UsageError("training diverged (the model outputs NaN); lower --lr or set "
                         "--clipnorm")
    blend = None
    if ngram is not None:
        blend = _blend(ngram, val_set.labels, test_set.labels, val_scores, test_scores)
        val_scores, test_scores = blend.pop("scores")
        reporter.message(f"blend: {blend['rnn_weight']:.2f} x {config.cell.upper()} + "
                         f"{1 - blend['rnn_weight']:.2f} x n-gram model (chosen on the "
                         "validation split)")
    manifest = _manifest(M, config, train_set, val_set, test_set, val_scores, test_scores,
                         source=source, device=",".join(chosen_labels()),
                         precision=precision, replicas=replicas,
                         workers=role.workers if role else 1,
                         history=history,
                         seconds=time.perf_counter() - started, blend=blend)
    ngram_parts = None
    if ngram is not None:
        serving_ngram = M.build_ngram_model(ngram["size"])
        serving_ngram.set_weights(ngram["model"].get_weights())
        ngram_parts = (ngram["vectorizer"], serving_ngram, blend["rnn_weight"])
    text_model = M.build_text_model(config, vectorizer, serving_core, ngram_parts)
    _publish(out, text_model, test_set, manifest, val_set.texts[:VERIFY_ROWS],
             val_scores[:VERIFY_ROWS], reporter)
    if progress is not None:
        resume_run.finish(progress[0])
    reporter.message(f"saved model to {out}")
    return artifacts.read_manifest(out)


def _publish(out: Path, text_model, test_set: Dataset, manifest: dict[str, Any],
             texts: list[str], expected: np.ndarray, reporter: Reporter) -> None:
    """Write the model directory beside ``out``, check it by reloading it, swap it in.

    A failed write (a full disk, say) leaves an existing model at ``out`` as it was, and
    nothing beside it.
    """
    # model.keras and core.onnx each hold the weights; a margin for the rest
    need = 2.5 * artifacts.weight_bytes(text_model) + 8 * 2**20
    free = artifacts.free_bytes(out.parent)
    if free is not None and free < need:
        raise _unwritable(out, f"not enough free space: {free // 2**20} MB free, about "
                               f"{need // 2**20:.0f} MB needed")
    failure = None
    try:
        with artifacts.staging(out) as staged:
            text_model.save(staged / artifacts.MODEL_FILE)
            write_split(staged / artifacts.TEST_FILE, test_set)
            onnx_error = _write_onnx(staged, text_model, manifest["settings"]["tokenizer"])
            artifacts.write_manifest(staged, manifest)
            reloaded = _verify(staged, texts, expected)
            onnx_error = onnx_error or _verify_onnx(staged, texts + VERIFY_PROBES, reloaded)
            if onnx_error:
                # The Keras model is fine: publish it without the TensorFlow-free engine.
                for name in (artifacts.ONNX_FILE, artifacts.SERVING_FILE):
                    (staged / name).unlink(missing_ok=True)
                artifacts.write_manifest(staged, manifest)
                reporter.message(f"note: no ONNX engine for this model ({onnx_error}); "
                                 "predict will use TensorFlow")
            artifacts.publish(staged, out)
    except OSError as exc:
        failure = exc.strerror or str(exc)
    if failure is not None:
        artifacts.collect_failed_writes()
        raise _unwritable(out, failure)


def _unwritable(out: Path, reason: str) -> UsageError:
    return UsageError(f"{out}: cannot write the model ({reason}); free some space or choose "
                      "another --out (an existing model there was left as it was)")


def _devices(device: str, role, config: TrainConfig, train_rows: int, reporter: Reporter):
    """(TensorFlow device names, strategy or None, replicas in all, description).

    On several machines (``role`` from TF_CONFIG) the strategy is created here, before
    TensorFlow runs any operation, as MultiWorkerMirroredStrategy requires.
    """
    from rnncli.runtime import chosen_labels, multi_worker_strategy, select_devices

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


def _derive(M, config: TrainConfig, texts: list[str], reporter: Reporter):
    """(config with the data-derived settings resolved, vocabulary); says what it found
    about the tokens."""
    derived = M.derive_settings(config, texts)
    for warning in segmentation_warnings(texts, derived.long_share):
        reporter.warning(warning)
    if derived.config.bigram_dim:
        reporter.message(f"token pairs embedded ({derived.config.bigram_dim} dimensions); "
                         f"{derived.char_share:.0%} of the tokens are Chinese or Japanese "
                         "characters")
    return derived.config, derived.vocab


def _fit_ngrams(M, config: TrainConfig, train_set: Dataset, val_set: Dataset,
                test_set: Dataset, reporter: Reporter) -> dict[str, Any] | None:
    """Fit the n-gram model: logistic regression over token 1-2-gram TF-IDF.

    Adam on sparse features, early stopping on the validation loss (best weights restored).
    Returns None when the training texts share no n-gram (nothing to learn from).
    """
    keras, tf = M.keras, M.tf
    started = time.perf_counter()
    vocab, idf = M.derive_ngrams(train_set.texts, config.tokenizer)
    if not vocab:
        reporter.message("n-gram model skipped: no token or token pair occurs in two texts")
        return None
    vectorizer = M.build_ngram_vectorizer(vocab, config.tokenizer)
    x_train, x_val, x_test = (M.ngram_counts(vectorizer, s.texts)
                              for s in (train_set, val_set, test_set))
    reporter.message(f"n-gram model: {len(vocab)} token 1-2-grams seen in 2+ texts")
    model = M.build_ngram_model(len(vocab) + 1, idf)
    model.compile(optimizer=keras.optimizers.Adam(NGRAM_LR), loss="binary_crossentropy",
                  metrics=["accuracy"], jit_compile=False)  # no XLA kernel for sparse ops

    # At least ~160 steps an epoch, so a small dataset does not need hundreds of epochs.
    batch_size = int(np.clip(len(train_set.texts) // 160, 16, NGRAM_BATCH))

    def batches(x, y, shuffle=False):
        data = tf.data.Dataset.from_tensor_slices((x, np.asarray(y, np.float32)))
        if shuffle:
            data = data.shuffle(len(y), seed=config.seed, reshuffle_each_iteration=True)
        return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=2,
                                         restore_best_weights=True)
    with _stop_on_signals(model) as caught:
        fitted = model.fit(batches(x_train, train_set.labels, shuffle=True),
                           validation_data=batches(x_val, val_set.labels),
                           epochs=NGRAM_EPOCHS, verbose=0,
                           callbacks=[stop, keras.callbacks.TerminateOnNaN()])
    if caught:
        raise caught[0]
    val_scores = model.predict(batches(x_val, val_set.labels), verbose=0).reshape(-1)
    test_scores = model.predict(batches(x_test, test_set.labels), verbose=0).reshape(-1)
    if not (np.all(np.isfinite(val_scores)) and np.all(np.isfinite(test_scores))):
        raise UsageError("the n-gram model diverged (its outputs are NaN); try --no-ngrams")
    epochs = len(fitted.history["loss"])
    val_acc = float(np.mean((val_scores >= 0.5) == np.asarray(val_set.labels)))
    reporter.message(f"n-gram model: validation accuracy {val_acc:.4f} after {epochs} epochs "
                     f"({time.perf_counter() - started:.0f}s)")
    return {"vectorizer": vectorizer, "model": model, "size": len(vocab) + 1,
            "ngrams": len(vocab), "epochs": epochs,
            "val_scores": val_scores, "test_scores": test_scores}


def _blend(ngram: dict[str, Any], val_labels, test_labels, rnn_val, rnn_test) -> dict[str, Any]:
    """Choose the RNN's weight in the blend of the two probabilities (the n-gram model
    gets the rest): the weight in 0, 0.05, ..., 1 with the lowest validation log loss.

    Losses within BLEND_TOLERANCE of the lowest count as ties, won by the weight nearest an
    even blend; with fewer than BLEND_MIN_ROWS validation rows the blend is even, since
    so few rows cannot tell the parts apart.
    """
    y_val = np.asarray(val_labels, np.float64)
    weights = np.linspace(0.0, 1.0, 21)

    def log_loss(p):
        p = np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)
        return float(-np.mean(y_val * np.log(p) + (1 - y_val) * np.log(1 - p)))

    losses = np.array([log_loss(w * rnn_val + (1 - w) * ngram["val_scores"]) for w in weights])
    near_best = np.flatnonzero(losses <= losses.min() + BLEND_TOLERANCE)
    weight = round(float(weights[min(near_best, key=lambda i: abs(weights[i] - 0.5))]), 2)
    if len(y_val) < BLEND_MIN_ROWS:
        weight = 0.5

    def accuracy(labels, scores):
        return round(float(np.mean((scores >= 0.5) == np.asarray(labels))), 4)

    return {
        "rnn_weight": weight,
        "ngrams": ngram["ngrams"],
        "ngram_epochs": ngram["epochs"],
        "parts": {
            "rnn": {"validation_accuracy": accuracy(val_labels, rnn_val),
                    "test_accuracy": accuracy(test_labels, rnn_test)},
            "ngram": {"validation_accuracy": accuracy(val_labels, ngram["val_scores"]),
                      "test_accuracy": accuracy(test_labels, ngram["test_scores"])},
        },
        "scores": (weight * rnn_val + (1 - weight) * ngram["val_scores"],
                   weight * rnn_test + (1 - weight) * ngram["test_scores"]),
    }


def _manifest(M, config: TrainConfig, train_set: Dataset, val_set: Dataset, test_set: Dataset,
              val_scores, test_scores, *, source: dict, device: str, history: list[dict],
              precision: str = "float32", replicas: int = 1, workers: int = 1,
              seconds: float, threshold: float = 0.5,
              blend: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything rnncli.json records about a trained model (files are added on save)."""
    val_losses = [h["val_loss"] if h.get("val_loss") is not None else np.inf for h in history]
    return {
        "format_version": artifacts.FORMAT_VERSION,
        "rnncli_version": __version__,
        "keras_version": M.keras.__version__,
        "tensorflow_version": M.tf.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": config.to_dict(),
        "labels": {"negative": train_set.label_names[0], "positive": train_set.label_names[1]},
        "threshold": threshold,
        "data": source,
        "training": {"device": device, "precision": precision, "replicas": replicas,
                     "workers": workers, "epochs_run": len(history),
                     "best_epoch": int(np.argmin(val_losses)) + 1,
                     "stopped_early": len(history) < config.epochs,
                     "seconds": round(seconds, 1), "history": history},
        "blend": blend,
        "validation": round_figures(evaluate_scores(val_set.labels, val_scores,
                                                    threshold=threshold)),
        "test": round_figures(evaluate_scores(test_set.labels, test_scores,
                                              threshold=threshold)),
    }


def _fit(M, core, config: TrainConfig, x_train, y_train, x_val, y_val,
         reporter: Reporter, replicas: int = 1,
         progress: tuple | None = None,
         precision: str = "float32") -> list[dict[str, float]]:
    """Train with early stopping (best weights restored) and learning-rate decay.

    On several devices (``replicas``): Keras clips each device's share of the gradient
    before they are summed, so the clipping norm is divided between the devices; training
    batches are all full (the rows left over change each epoch), and every batch splits
    evenly, as MirroredStrategy needs.
    """
    keras = M.keras
    clipnorm = (config.clipnorm / replicas) if config.clipnorm else None
    core.compile(optimizer=keras.optimizers.Adam(config.lr, clipnorm=clipnorm),
                 loss="binary_crossentropy", metrics=["accuracy"])
    early = resume_run.resumable_early_stopping(keras, monitor="val_loss",
                                                patience=config.patience,
                                                restore_best_weights=True)
    callbacks = [early]
    if config.lr_decay < 1:
        # A worse validation loss first cuts the learning rate; only a second one in a
        # row (with the default patience) stops training.
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=config.lr_decay, patience=0, min_lr=config.lr / 100))
    full_only = replicas > 1
    steps = len(x_train) // config.batch_size if full_only else -(-len(x_train)
                                                                   // config.batch_size)
    done = _progress_callback(keras, reporter, config.epochs, steps)
    callbacks += [done, keras.callbacks.TerminateOnNaN()]
    backup, key, state = progress or (None, None, None)
    before = state["history"] if state else []
    if progress is not None:  # after `done`, whose history it saves
        callbacks.append(resume_run.callback(keras, backup, key, state, precision,
                                             lambda: done.history, steps, reporter.message))
    if state:
        resume_run.restore(core, early, backup, state, precision)
        if resume_run.finished(before, config.epochs, config.patience):
            core.set_weights(early.resumed[1])  # what early stopping would have restored
            return before
    train_data = _length_batches(M.tf, x_train, y_train, config.batch_size, seed=config.seed,
                                 shuffle=True, drop_remainder=full_only)
    val_batch = config.batch_size
    if full_only and len(x_val) < val_batch:  # the first batch must split evenly
        val_batch = max(replicas, len(x_val) - len(x_val) % replicas)
    val_data = _length_batches(M.tf, x_val, y_val, val_batch)
    with _stop_on_signals(core) as caught:
        core.fit(train_data, validation_data=val_data, epochs=config.epochs,
                 initial_epoch=len(before), callbacks=callbacks, verbose=0)
    if caught:
        _keep_progress(progress, reporter)
        raise caught[0]
    history = before + done.history
    if not any(h.get("val_loss") is not None for h in history):
        raise UsageError("training diverged in its first epoch (the loss is not finite); "
                         "lower --lr or set --clipnorm")
    # A later divergence is survivable: EarlyStopping has restored the best finite weights,
    # and the scores are checked once more before anything is saved.
    return history


def _keep_progress(progress: tuple | None, reporter: Reporter) -> None:
    """After an interruption: say how to continue, or leave no empty state behind."""
    if progress is None:
        return
    backup = progress[0]
    try:
        finished = len(json.loads((backup / resume_run.STATE).read_text())["history"])
    except (OSError, ValueError, KeyError):
        resume_run.finish(backup)
        return
    reporter.message(f"kept the state after epoch {finished}: the same command with --resume "
                     "continues from there")


@contextlib.contextmanager
def _stop_on_signals(model):
    """Ctrl-C / SIGTERM during fit: stop after the current batch, then raise.

    An exception raised at an arbitrary point inside Keras's loop, while tf.data threads
    run, has crashed the process (SIGSEGV) here; so the first signal only asks Keras to
    stop, and the interrupt is raised once fit has returned. A second signal acts at once.
    """
    if threading.current_thread() is not threading.main_thread():
        yield []
        return
    caught: list[BaseException] = []
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, frame):
        caught.append(KeyboardInterrupt() if signum == signal.SIGINT else Terminated())
        model.stop_training = True
        signal.signal(signum, previous[signum])

    for signum in previous:
        signal.signal(signum, handler)
    try:
        yield caught
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _start_embedding(core, initial: np.ndarray) -> None:
    """Copy the given rows into the embedding; rows that are all zero keep their random
    initialisation (padding, [UNK], words without a vector)."""
    layer = core.get_layer("embedding")
    start = layer.get_weights()[0]
    found = np.any(initial != 0, axis=1)
    start[found] = initial[found]
    layer.set_weights([start])


def _initial_vectors(M, vectorizer, vocab, config, embeddings, unlabelled_texts, train_texts,
                     source, reporter) -> np.ndarray | None:
    """Rows for the embedding matrix (index 0 padding, 1 [UNK], then ``vocab``), or None."""
    from rnncli import vectors

    if embeddings is not None:
        matrix, found = vectors.read_vectors(embeddings, vocab)
        source["embeddings"]["found"] = int(found.sum())
        reporter.message(f"{Path(embeddings).name}: vectors for {found.sum()} of {len(vocab)} "
                         "words")
        return np.concatenate([np.zeros((2, matrix.shape[1]), np.float32), matrix])
    if not config.word_vectors and unlabelled_texts is None:
        return None
    started = time.perf_counter()
    texts = (unlabelled_texts or []) + train_texts
    batches = (M.vectorize(vectorizer, texts[i:i + 2048], config.seq_len)
               for i in range(0, len(texts), 2048))
    matrix = vectors.learn_vectors(batches, config.max_tokens, config.embed_dim,
                                   seed=config.seed)
    reporter.message(f"learned word vectors from {len(texts)} texts in "
                     f"{time.perf_counter() - started:.0f}s")
    return matrix


def _scores(core, ids: np.ndarray) -> np.ndarray:
    return core.predict(ids, batch_size=256, verbose=0).reshape(-1)


def _length_batches(tf, ids: np.ndarray, labels: np.ndarray, batch_size: int, *,
                    seed: int = 0, shuffle: bool = False, drop_remainder: bool = False):
    """A tf.data pipeline of batches of similar length, each cut to its longest text.

    Texts are right-padded to seq_len; a batch of short texts would otherwise run every
    recurrent step over padding. Training rows are shuffled, sorted by length within
    windows of 50 batches, batched, and the batches shuffled again, so each epoch sees
    different neighbours. The masks make the result identical to full-length padding.
    Only TensorFlow ops: no Python generator, in which Ctrl-C could be swallowed.
    """
    lengths = np.count_nonzero(ids, axis=1).astype(np.int32)
    labels = labels.astype(np.float32)
    if not shuffle:  # one pass in length order: the tightest batches
        order = np.argsort(lengths, kind="stable")
        ids, labels, lengths = ids[order], labels[order], lengths[order]
    data = tf.data.Dataset.from_tensor_slices((ids, labels, lengths))
    if shuffle:
        def by_length(x, y, n):
            order = tf.argsort(n, stable=True)
            return tf.gather(x, order), tf.gather(y, order), tf.gather(n, order)

        data = (data.shuffle(len(ids), seed=seed, reshuffle_each_iteration=True)
                .batch(batch_size * 50).map(by_length).unbatch())
    data = data.batch(batch_size, drop_remainder=drop_remainder)
    if shuffle:
        data = data.shuffle(50, seed=seed, reshuffle_each_iteration=True)

    def trim(x, y, n):
        return x[:, : tf.maximum(1, tf.reduce_max(n))], y

    n_batches = len(ids) // batch_size if drop_remainder else -(-len(ids) // batch_size)
    return (data.map(trim).apply(tf.data.experimental.assert_cardinality(n_batches))
            .prefetch(tf.data.AUTOTUNE))


def _write_onnx(staged: Path, text_model, tokenizer: str) -> str | None:
    """Write the ONNX engine's files; a failure is returned, not raised (the Keras model
    is still good)."""
    from rnncli.export import write_onnx

    try:
        write_onnx(staged, text_model, tokenizer=tokenizer)
    except (KeyboardInterrupt, Terminated):
        raise
    except Exception as exc:  # noqa: BLE001  (tf2onnx raises many types)
        return f"the ONNX export failed: {type(exc).__name__}: {str(exc)[:200]}"
    return None


def _verify(staged: Path, texts: list[str], expected: np.ndarray) -> np.ndarray:
    """Reload what was written, as predict will, and check it gives the same scores;
    returns its scores for ``texts`` and then VERIFY_PROBES."""
    _, reloaded = artifacts.load_model(staged)
    got = score_texts(serving_function(reloaded), texts + VERIFY_PROBES)
    if not np.allclose(got[: len(texts)], expected, atol=1e-4):
        worst = np.max(np.abs(got[: len(texts)] - expected))
        raise ModelError("the saved model does not reproduce the trained one's scores "
                         f"(max difference {worst:.2e}); not published")
    return got


def _verify_onnx(staged: Path, texts: list[str], expected: np.ndarray) -> str | None:
    """The ONNX engine must reproduce the reloaded Keras model's scores within 1e-4."""
    from rnncli.engine import OnnxEngine

    try:
        got = OnnxEngine.load(staged).scores(texts)
    except (KeyboardInterrupt, Terminated):
        raise
    except Exception as exc:  # noqa: BLE001  (the Keras model is still good)
        return exc.message if isinstance(exc, RnnCliError) else f"{type(exc).__name__}: {exc}"
    worst = float(np.max(np.abs(got - expected)))
    return (f"its scores differ from the Keras model's by up to {worst:.2e}"
            if not worst <= 1e-4 else None)  # NaN included


def _progress_callback(keras, reporter: Reporter, epochs: int, steps: int):
    class Progress(keras.callbacks.Callback):
        """Forwards Keras events to the reporter and keeps a clean per-epoch history."""

        def __init__(self):
            super().__init__()
            self.history: list[dict[str, float]] = []
            self._started = 0.0

        def on_train_begin(self, logs=None):
            reporter.train_begin(epochs, steps)

        def on_epoch_begin(self, epoch, logs=None):
            self._started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self._started
            clean = {k: round(float(v), 5) if np.isfinite(float(v)) else None
                     for k, v in (logs or {}).items()
                     if k in ("loss", "accuracy", "val_loss", "val_accuracy")}
            self.history.append({"epoch": epoch + 1, **clean, "seconds": round(seconds, 2)})
            reporter.epoch_end(epoch + 1, clean, seconds)

        def on_train_end(self, logs=None):
            reporter.train_end()

    if reporter.wants_batches:
        def on_train_batch_end(self, batch, logs=None):
            reporter.batch_end(batch + 1, {k: float(v) for k, v in (logs or {}).items()})

        Progress.on_train_batch_end = on_train_batch_end
    return Progress()
