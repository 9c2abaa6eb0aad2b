"""HEAVY: training epochs whose order can be made again, so ``--resume`` continues inside
an epoch.

Each epoch's order of rows and batches is a function of ``--seed`` and the epoch's number
(:func:`epoch_seed`), not of how many times the data was read before; so a resumed run
can make the interrupted epoch's order again and skip the batches already trained on.
One ``fit`` runs over all the epochs left, as one stream of batches (``steps_per_epoch``
of them an epoch: each epoch's pipeline made in Python and the pipelines concatenated,
so that every seed is a Python number; a seed tensor inside tf.data fails with
``--seed 0``, where TensorFlow compares the seeds with 0); a run resumed inside an epoch
first finishes that epoch in a ``fit``
of its own (:func:`segments`), and the callbacks carry their state from the one ``fit``
to the next (:class:`Segment`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rnncli.core.errors import first_line
from rnncli.network.model import keras, tf
from rnncli.training import resume as resume_run
from rnncli.training import saving

# Large primes: distinct --seed values and epochs give distinct seeds.
_SEED_STRIDE, _EPOCH_STRIDE = 1_000_003, 7919


def epoch_seed(seed: int, epoch: int, salt: int) -> int:
    """The seed of one of an epoch's shuffles: from ``--seed``, the epoch (0-based) and
    ``salt``, which shuffle it is; below 2**31 - 1, as TensorFlow keeps seeds."""
    return (seed * _SEED_STRIDE + epoch * _EPOCH_STRIDE + salt) % (2**31 - 1)


@dataclass(frozen=True)
class Batches:
    """Training batches made elsewhere than from arrays (a streamed file's): a function of
    the epoch (0-based) giving its training batches, the validation batches,
    steps an epoch and training rows an epoch. ``per_worker``: on several machines the
    batches are this worker's own (its shard, a device's batch each), handed to the
    strategy as they are, not split."""

    one_epoch: Callable
    validation: Any
    steps: int
    rows: int
    per_worker: bool = False


@dataclass(frozen=True)
class Part:
    """One ``fit`` of a run: its batches, its epochs (0-based, ``first`` to ``end``
    exclusive) and its batches an epoch."""

    data: Any
    first: int
    end: int
    steps: int


def segments(one_epoch: Callable, first: int, skip: int, epochs: int, steps: int) -> list[Part]:
    """The ``fit`` calls that train epochs ``first`` (0-based) to ``epochs``, the first
    ``skip`` batches of epoch ``first`` being done already. ``one_epoch``: an epoch ->
    that epoch's ``steps`` batches, the same for the same epoch."""
    parts = []
    if skip:
        parts.append(Part(same_on_every_worker(one_epoch(first).skip(skip)), first, first + 1,
                          steps - skip))
        first += 1
    if first < epochs:
        data = functools.reduce(lambda a, b: a.concatenate(b),
                                (one_epoch(epoch) for epoch in range(first, epochs)))
        parts.append(Part(same_on_every_worker(data.prefetch(tf.data.AUTOTUNE)), first,
                          epochs, steps))
    return parts


def same_on_every_worker(data):
    """On several machines: the same batches on every worker, each taking its share of
    each batch (as for arrays). TensorFlow's automatic choice could shard the epochs
    themselves, or the files, between the workers, and files would give them different
    numbers of batches, on which synchronous training waits forever."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    return data.with_options(options)


class Segment:
    """Mixed into a callback whose state must last across the ``fit`` calls of one run:
    ``continues``: this ``fit`` continues an earlier one of the run (do not start
    afresh); ``continued``: a later ``fit`` continues this one (do not end)."""

    continues = False
    continued = False

    @staticmethod
    def cut_short() -> bool:
        """Was the epoch ending now cut short by Ctrl-C or SIGTERM? (Set by fitloop.)
        Such an epoch is no epoch: its one validation batch decides nothing."""
        return False


def run(core, parts: list[Part], val_data, callbacks: list, *, per_worker: bool = False,
        stopped: Callable[[], bool] = lambda: False) -> None:
    """Fit ``core`` over ``parts`` in turn, stopping where one was stopped (early
    stopping, an interrupt; ``stopped``: whether a signal came, perhaps between two
    ``fit`` calls, whose start would forget it). ``per_worker``: each part's batches are
    this worker's own (Batches.per_worker)."""
    carried = [c for c in callbacks if isinstance(c, Segment)]
    for i, part in enumerate(parts):
        if i and (core.stop_training or stopped()):
            for callback in carried:  # the run ends here: what ending it skipped
                callback.continued = False
                callback.on_train_end()
            return
        for callback in carried:
            callback.continues, callback.continued = i > 0, i < len(parts) - 1
        data = part.data
        if per_worker:
            data = tf.distribute.get_strategy().distribute_datasets_from_function(
                lambda context, data=data: data)
        core.fit(data, validation_data=val_data, epochs=part.end,
                 initial_epoch=part.first, steps_per_epoch=part.steps, callbacks=callbacks,
                 verbose=0)


def resumable_early_stopping(**kwargs):
    """EarlyStopping that, when resumed, starts from the interrupted run's best epoch,
    and keeps its state across the ``fit`` calls of one run (epochs.Segment)."""
    class ResumableEarlyStopping(keras.callbacks.EarlyStopping, Segment):
        resumed = None  # (best val_loss, best weights, best epoch (0-based), epochs done)

        def on_train_begin(self, logs=None):
            if self.continues:
                return
            super().on_train_begin(logs)
            if self.resumed is not None:
                loss, weights, epoch, done = self.resumed
                self.best, self.best_weights, self.best_epoch = loss, weights, epoch
                self.wait = done - 1 - epoch

        def on_epoch_end(self, epoch, logs=None):
            if not self.cut_short():
                super().on_epoch_end(epoch, logs)

        def on_train_end(self, logs=None):
            if not self.continued:
                super().on_train_end(logs)

    return ResumableEarlyStopping(**kwargs)


def resumable_plateau(**kwargs):
    """ReduceLROnPlateau that, when resumed, starts from the best validation loss so far
    (``resumed_best``; the learning rate is the optimizer's, kept with the weights), and
    keeps its state across the ``fit`` calls of one run."""
    class ResumablePlateau(keras.callbacks.ReduceLROnPlateau, Segment):
        resumed_best = None

        def on_train_begin(self, logs=None):
            if self.continues:
                return
            super().on_train_begin(logs)
            if self.resumed_best is not None:
                self.best = self.resumed_best

        def on_epoch_end(self, epoch, logs=None):
            if not self.cut_short():  # a worse loss of one batch must not cut the rate
                super().on_epoch_end(epoch, logs)

    return ResumablePlateau(**kwargs)


def metric_totals(model) -> dict[str, float]:
    """The running sums behind an epoch's training figures so far ("loss/total",
    "loss/count", "accuracy/total", ...), read at a batch's end: validation resets them."""
    return {v.path: float(v.numpy()) for m in model.metrics for v in m.variables}


class Keep(keras.callbacks.Callback):
    """Keeps the state for --resume (resume.py) after each finished epoch (all ``steps``
    batches run), every KEEP_SECONDS inside an epoch, and at the batch where
    ``interrupted`` (stop_on_signals's list, non-empty once a signal came) cut an epoch.
    ``cut``: where the resumed run had stopped. If the state cannot be written (a full
    disk), training goes on without it, and says so through ``note``."""

    def __init__(self, progress, precision: str, history: Callable[[], list[dict]],
                 steps: int, note: Callable[[str], None], *,
                 interrupted: list[BaseException] | tuple = (), cut: dict | None = None):
        super().__init__()
        state = progress.state
        self._progress, self._precision, self._history = progress, precision, history
        self._steps, self._note, self._interrupted, self._cut = steps, note, interrupted, cut
        self._before = state["history"] if state else []
        self._losses = list(state["val_losses"]) if state else []
        self._best = dict(state["best"]) if state and state["best"] else None
        self.failed = False

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.started = epoch, time.monotonic()
        self.kept = self.started
        resumed = self._cut is not None and self._cut["epoch"] == epoch + 1
        self.batches, self.earlier = (self._cut["step"], self._cut) if resumed else (0, None)

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1
        if self.batches >= self._steps:
            return
        if self._interrupted or time.monotonic() - self.kept >= resume_run.KEEP_SECONDS:
            self._keep(self.epoch + 1, False, self._where())  # the cut, or every few minutes
            self.kept = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        if self.batches < self._steps:  # cut short: kept at its last batch, if it could be
            return
        loss = float((logs or {}).get("val_loss", float("nan")))
        self._losses.append(loss if loss == loss and abs(loss) != float("inf") else None)
        self._keep(epoch + 1, resume_run.best_epoch(self._losses) == epoch + 1)

    def _where(self) -> dict:
        """The cut after self.batches batches of this epoch, with its running sums."""
        earlier = self.earlier or {}
        return {"epoch": self.epoch + 1, "step": self.batches, "steps": self._steps,
                "seconds": round(time.monotonic() - self.started + earlier.get("seconds", 0), 2),
                "totals": resume_run.merge_totals(earlier.get("totals"),
                                                  metric_totals(self.model))}

    def _keep(self, epoch: int, improved: bool, where: dict | None = None) -> None:
        if self.failed:
            return
        backup = self._progress.backup
        short = resume_run.short_of_space(self.model, backup)
        if short is not None:
            return self._give_up(short)
        reason = None
        try:
            self._best = resume_run.write_state(
                self.model, backup, epoch, improved, key=self._progress.key,
                history=self._before + self._history(), losses=self._losses,
                best=self._best, precision=self._precision, cut=where)
        except (OSError, RuntimeError, ValueError) as exc:  # h5py: either, full disk
            reason = first_line(exc, 120)
        if reason is not None:
            saving.collect_failed_writes()
            self._give_up(reason)

    def _give_up(self, reason: str) -> None:
        self.failed = True
        resume_run.finish(self._progress.backup)  # free what it took
        self._note(f"note: cannot keep the state for --resume ({reason}); training goes on "
                   "without it")
