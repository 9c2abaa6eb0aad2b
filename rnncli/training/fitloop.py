"""HEAVY: the recurrent network's training loop: early stopping, learning-rate decay,
length-grouped tf.data batches, progress events, Ctrl-C and SIGTERM, and the state kept
for ``--resume`` (resume.py)."""

from __future__ import annotations

import contextlib
import signal
import threading
import time

import numpy as np

from rnncli.core import jsontext
from rnncli.core.config import TrainConfig, output_width
from rnncli.core.errors import Terminated, UsageError
from rnncli.core.scoring import as_scores
from rnncli.network.model import keras, tf
from rnncli.training import epochs
from rnncli.training import resume as resume_run
from rnncli.training.resume import Progress


def fit(core, config: TrainConfig, x_train, y_train, x_val, y_val, reporter, *,
        replicas: int = 1, progress: Progress | None = None, precision: str = "float32",
        class_weights: np.ndarray | None = None, batches: epochs.Batches | None = None,
        compiler=None) -> tuple[list[dict[str, float]], int]:
    """Train with early stopping (best weights restored) and learning-rate decay.

    On several devices (``replicas``): Keras clips each device's share of the gradient
    before they are summed, so the clipping norm is divided between the devices; training
    batches are all full (the rows left over change each epoch), and every batch splits
    evenly, as MirroredStrategy needs. Returns (history, best epoch): the 1-based epoch
    whose weights early stopping restored, chosen on the unrounded validation losses.
    ``class_weights``: one weight per class, applied to the rows' losses (training and
    validation, so early stopping reads the same loss), or None. ``batches``: batches
    made elsewhere (a streamed file's, see training/stream_data.py), in place of the
    arrays. A run resumed inside an epoch (``progress``) skips the batches done before.
    ``compiler``: (model, config, replicas) -> None, in place of the classifier's
    :func:`compile_classifier`.
    """
    (compiler or compile_classifier)(core, config, replicas)
    state = progress.state if progress else None
    cut = resume_run.cut_of(state)
    steps, rows = ((batches.steps, batches.rows) if batches is not None
                   else _steps(config, len(x_train), replicas > 1))
    resume_run.check_steps(state, steps)
    caught: list[BaseException] = []  # filled by stop_on_signals
    callbacks, (done, early, plateau) = _callbacks(config, reporter, steps, rows, caught, cut,
                                                   progress, precision)
    before = state["history"] if state else []
    if state:
        resume_run.restore(core, early, plateau, progress, precision)
        if resume_run.finished(state, config.epochs, config.patience):
            core.set_weights(early.resumed[1])  # what early stopping would have restored
            return before, resume_run.best_epoch(state["val_losses"])
    one_epoch, val_data = ((batches.one_epoch, batches.validation) if batches is not None
                           else _batches(config, x_train, y_train, x_val, y_val,
                                         replicas=replicas, class_weights=class_weights))
    parts = epochs.segments(one_epoch, len(before), cut["step"] if cut else 0, config.epochs,
                            steps)
    with stop_on_signals(core, caught):
        epochs.run(core, parts, val_data, callbacks, stopped=lambda: bool(caught),
                   per_worker=batches is not None and batches.per_worker)
    if caught:
        keep_progress(progress, reporter, steps)
        # what the user is told (cli/main.py): where training was cut
        caught[0].where = done.cut_note(len(before))  # shown by cli/main.py's _interrupted
        raise caught[0]
    if note := skipped_note(core):
        reporter.message(note)
    return _outcome(before + done.history,
                    (state["val_losses"] if state else []) + done.val_losses)


def _callbacks(config: TrainConfig, reporter, steps: int, rows: int, caught: list,
               cut: dict | None, progress: Progress | None, precision: str):
    """(the callbacks of a fit, (its progress, early stopping, learning-rate decay)):
    progress first, which tells the others whether an epoch was cut short; the state for
    --resume last, after the progress whose history it saves."""
    early = epochs.resumable_early_stopping(monitor="val_loss", patience=config.patience,
                                            restore_best_weights=True)
    plateau = _lr_decay(config)
    done = progress_callback(reporter, config.epochs, steps, interrupted=caught,
                             rows=min(rows, steps * config.batch_size),
                             batch_size=config.batch_size, cut=cut)
    for callback in (early, *plateau):
        callback.cut_short = lambda: done.cut
    callbacks = [done, early, *plateau, keras.callbacks.TerminateOnNaN()]
    if progress is not None:
        callbacks.append(epochs.Keep(progress, precision, lambda: done.history, steps,
                                     reporter.message, interrupted=caught, cut=cut))
    return callbacks, (done, early, plateau)


def _steps(config: TrainConfig, rows: int, full_only: bool) -> tuple[int, int]:
    """(batches an epoch, rows): all full on several devices."""
    steps = rows // config.batch_size if full_only else -(-rows // config.batch_size)
    return steps, rows


def compile_classifier(core, config: TrainConfig, replicas: int) -> None:
    """Adam with the clipping norm divided between the ``replicas``, the loss for the
    output's width, and accuracy."""
    binary = output_width(config.classes) == 1
    core.compile(optimizer=adam(core, config, replicas),
                 loss="binary_crossentropy" if binary else "sparse_categorical_crossentropy",
                 metrics=["accuracy"])


def adam(model, config: TrainConfig, replicas: int):
    """Adam, the clipping norm divided between the ``replicas``; on one device it skips a
    batch whose gradients are not finite (SkipNonFinite), which clipping cannot tame: a
    128-unit network pretrained on IMDB met one (seed 1). Not on several devices (Keras
    checks only the first replica's gradients, before the sum: one replica could skip and
    another not), nor for float16, which Keras wraps with its own loss scaling."""
    clipnorm = (config.clipnorm / replicas) if config.clipnorm else None
    inner = keras.optimizers.Adam(config.lr, clipnorm=clipnorm)
    if replicas > 1 or model.dtype_policy.name == "mixed_float16":
        return inner
    return SkipNonFinite(inner, initial_scale=1.0, dynamic_growth_steps=2**31 - 1)


class SkipNonFinite(keras.optimizers.LossScaleOptimizer):
    """Keras's loss scaling held at its initial scale: a step whose gradients are not
    finite is skipped and counted (``skipped``, kept with the state for --resume), and the
    scale is never halved (halved at each skip, it would reach 0 after some 150 of them,
    and then every step would be skipped)."""

    def build(self, var_list):
        self.skipped = self.add_variable(shape=(), dtype="int", initializer="zeros",
                                         aggregation="none", name="skipped")
        super().build(var_list)

    def _stateful_handle_non_finite_grads(self):
        self.skipped.assign_add(1)


def skipped_note(model) -> str | None:
    """What the user is told of the batches ``model``'s optimizer skipped, if any."""
    count = int(getattr(model.optimizer, "skipped", 0))
    return f"note: {count} batch(es) skipped: their gradients were not finite" if count else None


def _lr_decay(config: TrainConfig) -> list:
    """The learning-rate decay callback, if ``lr_decay`` asks for one."""
    if config.lr_decay >= 1:
        return []
    # A worse validation loss first cuts the learning rate; only a second one in a
    # row (with the default patience) stops training.
    return [epochs.resumable_plateau(
        monitor="val_loss", factor=config.lr_decay, patience=0, min_lr=config.lr / 100)]


def _batches(config: TrainConfig, x_train, y_train, x_val, y_val, *, replicas: int,
             class_weights: np.ndarray | None):
    """(a function of the epoch giving its training batches, validation batches); on
    several ``replicas`` every batch splits evenly between them."""
    full_only = replicas > 1
    train_data = length_epochs(x_train, y_train, config.batch_size, seed=config.seed,
                               drop_remainder=full_only, class_weights=class_weights)
    val_batch = config.batch_size
    if full_only and len(x_val) < val_batch:  # the first batch must split evenly
        val_batch = max(replicas, len(x_val) - len(x_val) % replicas)
    val_data = length_batches(x_val, y_val, val_batch, class_weights=class_weights)
    return train_data, val_data


def _outcome(history: list[dict[str, float]],
             losses: list[float | None]) -> tuple[list[dict[str, float]], int]:
    """(history, best epoch) of a finished fit; an error if no epoch had a finite loss."""
    if not any(h.get("val_loss") is not None for h in history):
        raise UsageError("training diverged in its first epoch (the loss is not finite); "
                         "lower --lr or set --clipnorm")
    # A later divergence is survivable: EarlyStopping has restored the best finite weights,
    # and the scores are checked once more before anything is saved.
    return history, resume_run.best_epoch(losses)


def keep_progress(progress: Progress | None, reporter, steps: int) -> None:
    """After an interruption: say how to continue, or leave no empty state behind."""
    if progress is None:
        return
    backup = progress.backup
    try:
        state = jsontext.loads((backup / resume_run.STATE).read_text())
        where = resume_run.where(state, steps)
    except (OSError, ValueError, KeyError, TypeError):
        resume_run.finish(backup)
        return
    reporter.message(f"kept the state {where}: the same command with --resume continues "
                     "from there")


@contextlib.contextmanager
def stop_on_signals(model, caught: list[BaseException] | None = None):
    """Ctrl-C / SIGTERM during fit: stop after the current batch, then raise.

    An exception raised at an arbitrary point inside Keras's loop, while tf.data threads
    run, has crashed the process (SIGSEGV) here; so the first signal only asks Keras to
    stop, and the interrupt is raised once fit has returned. A second signal acts at once.
    The interrupt is appended to ``caught`` (a new list if None), which it yields.
    """
    caught = [] if caught is None else caught
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return
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


def start_embedding(core, initial: np.ndarray) -> None:
    """Copy the given rows into the embedding; rows that are all zero keep their random
    initialisation (padding, [UNK], words without a vector)."""
    layer = core.get_layer("embedding")
    start = layer.get_weights()[0]
    found = np.any(initial != 0, axis=1)
    start[found] = initial[found]
    layer.set_weights([start])


def scores(core, ids: np.ndarray) -> np.ndarray:
    """Positive-class probabilities (n,), or class probabilities (n, k); ``ids``: an array,
    or a dataset of batches of them."""
    batch_size = 256 if isinstance(ids, np.ndarray) else None
    return as_scores(core.predict(ids, batch_size=batch_size, verbose=0))


def _rows(ids: np.ndarray, labels: np.ndarray, class_weights: np.ndarray | None):
    """(ids, label, length, weight) rows of arrays, as a dataset."""
    lengths = np.count_nonzero(ids, axis=1).astype(np.int32)
    weights = (np.ones(len(labels), np.float32) if class_weights is None
               else np.asarray(class_weights, np.float32)[np.asarray(labels, np.int64)])
    return ids, labels.astype(np.float32), lengths, weights


def length_batches(ids: np.ndarray, labels: np.ndarray, batch_size: int, *,
                   class_weights: np.ndarray | None = None):
    """A tf.data pipeline of batches in length order, each cut to its longest text (one
    pass, the tightest batches: for validation and scores).

    Texts are right-padded to seq_len; a batch of short texts would otherwise run every
    recurrent step over padding. The masks make the result identical to full-length
    padding. Only TensorFlow ops: no Python generator, in which Ctrl-C could be
    swallowed. ``class_weights``: each row's loss is weighted by its class's weight
    (Keras's sample weights), or None.
    """
    columns = _rows(ids, labels, class_weights)
    order = np.argsort(columns[2], kind="stable")
    data = tf.data.Dataset.from_tensor_slices(tuple(c[order] for c in columns))
    return grouped_batches(data, batch_size, len(ids), sort=False, seed=None,
                           outputs="xy" if class_weights is None else "xyw")


def length_epochs(ids: np.ndarray, labels: np.ndarray, batch_size: int, *, seed: int,
                  drop_remainder: bool = False, class_weights: np.ndarray | None = None):
    """Training batches of similar length: a function of the epoch (0-based) giving that
    epoch's batches, the same for the same ``seed`` and epoch
    (epochs.py). Rows are shuffled, sorted by length within windows of 50 batches,
    batched, and the batches shuffled again, so each epoch sees different neighbours."""
    rows = tf.data.Dataset.from_tensor_slices(_rows(ids, labels, class_weights))
    count = len(ids)

    def one_epoch(epoch):
        shuffled = rows.shuffle(count, seed=epochs.epoch_seed(seed, epoch, 1),
                                reshuffle_each_iteration=False)
        return grouped_batches(shuffled, batch_size, count, sort=True,
                               seed=epochs.epoch_seed(seed, epoch, 2),
                               drop_remainder=drop_remainder,
                               outputs="xy" if class_weights is None else "xyw")

    return one_epoch


def grouped_batches(rows, batch_size: int, count: int, *, sort: bool, seed: int | None,
                    drop_remainder: bool = False, outputs: str = "xy"):
    """(ids, label, length, weight) ``rows`` -> batches cut to their longest text, of
    ``outputs``: "xy", "xyw", or "x" (ids only). ``sort``: rows sorted by length within
    windows of 50 batches; ``seed`` (or None): the batches shuffled again. ``count``: the rows."""
    if sort:
        def by_length(x, y, n, w):
            order = tf.argsort(n, stable=True)
            return tuple(tf.gather(t, order) for t in (x, y, n, w))

        rows = rows.batch(batch_size * 50).map(by_length).unbatch()
    data = rows.batch(batch_size, drop_remainder=drop_remainder)
    if seed is not None:
        data = data.shuffle(50, seed=seed, reshuffle_each_iteration=False)

    def trim(x, y, n, w):
        x = x[:, : tf.maximum(1, tf.reduce_max(n))]
        return {"x": x, "xy": (x, y), "xyw": (x, y, w)}[outputs]

    n_batches = count // batch_size if drop_remainder else -(-count // batch_size)
    return (data.map(trim, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .apply(tf.data.experimental.assert_cardinality(n_batches))
            .prefetch(tf.data.AUTOTUNE))


def progress_callback(reporter, epochs: int, steps: int,
                      interrupted: list[BaseException] | tuple = (), *, rows: int = 0,
                      batch_size: int = 0, cut: dict | None = None):
    """The callback that reports epochs. ``interrupted``: non-empty once Ctrl-C or
    SIGTERM has asked fit to stop (stop_on_signals); the epoch it cuts short is neither
    reported nor kept in the history. ``rows``: training rows in an epoch, in ``steps``
    batches of ``batch_size`` (for rows per second and the time left). ``cut``: where
    an interrupted run stopped inside an epoch (resume.cut_of), which this run finishes."""
    return EpochProgress(reporter, epochs, steps, interrupted, rows=rows, batch_size=batch_size,
                         cut=cut)


class EpochProgress(keras.callbacks.Callback, epochs.Segment):
    """Forwards Keras events to the reporter and keeps a clean per-epoch history (see
    :func:`progress_callback`)."""

    def __init__(self, reporter, epochs: int, steps: int,
                 interrupted: list[BaseException] | tuple, *, rows: int = 0,
                 batch_size: int = 0, cut: dict | None = None):
        super().__init__()
        self._reporter, self._epochs, self._steps = reporter, epochs, steps
        self._rows, self._batch_size = rows, batch_size
        self._interrupted, self._cut = interrupted, cut
        self.history: list[dict[str, float]] = []
        self.val_losses: list[float | None] = []  # unrounded, as early stopping saw them
        self._started = 0.0
        self.epoch, self.step = 0, 0  # the epoch running (1-based), its batches done
        self.cut = False  # the last epoch was cut short by an interrupt
        self._rest: dict[str, float] = {}  # a resumed epoch's running sums after the cut

    def on_train_begin(self, logs=None):
        if not self.continues:
            self._reporter.train_begin(self._epochs, self._steps, self._rows, self._batch_size)

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()
        first = self._first_step(epoch + 1)
        self.epoch, self.step = epoch + 1, first
        self._reporter.epoch_begin(self.epoch, first)

    def _first_step(self, epoch: int) -> int:
        """Batches of ``epoch`` (1-based) trained before an interrupt, by the run resumed."""
        return self._cut["step"] if self._cut and self._cut["epoch"] == epoch else 0

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step == self._steps and self._first_step(self.epoch):
            self._rest = epochs.metric_totals(self.model)  # before validation resets them
        if self._reporter.wants_batches:
            self._reporter.batch_end(self.step, {k: float(v) for k, v in (logs or {}).items()})
        else:  # the count only: the plain reporter reads no figures
            self._reporter.step_end(self.step)

    def on_test_begin(self, logs=None):
        # cut: its validation would only delay. Keras checks stop_evaluating after
        # each batch, so one runs; not a batch hook, which would turn off Keras's
        # asynchronous dispatch of every validation batch's logs.
        if self._interrupted and self.step < self._steps:
            self.model.stop_evaluating = True

    def cut_note(self, epochs_before: int) -> str:
        """Where the interrupt stopped training, for the one-line error."""
        if self.epoch == 0:
            return f"before epoch {epochs_before + 1}/{self._epochs} began"
        if self.cut:
            return f"during epoch {self.epoch}/{self._epochs} (step {self.step}/{self._steps})"
        return f"after epoch {self.epoch}/{self._epochs}"

    def on_epoch_end(self, epoch, logs=None):
        if self._interrupted and self.step < self._steps:
            self.cut = True  # not a finished epoch: Keras ends it early on stop_training
            return
        seconds = time.perf_counter() - self._started
        logs = dict(logs or {})
        if self._first_step(epoch + 1) and self._rest:  # resumed: of all the epoch's batches
            logs.update(resume_run.figures(resume_run.merge_totals(self._cut["totals"],
                                                                   self._rest)))
            seconds += self._cut["seconds"]
        clean = {k: round(float(v), 5) if np.isfinite(float(v)) else None
                 for k, v in logs.items()
                 if k in ("loss", "accuracy", "val_loss", "val_accuracy")}
        self.history.append({"epoch": epoch + 1, **clean, "seconds": round(seconds, 2)})
        loss = float(logs.get("val_loss", np.nan))
        self.val_losses.append(loss if np.isfinite(loss) else None)
        self._reporter.epoch_end(epoch + 1, clean, seconds)

    def on_train_end(self, logs=None):
        if not self.continued:
            self._reporter.train_end()
