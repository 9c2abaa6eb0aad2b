"""HEAVY: training epochs whose order can be made again, so ``--resume`` continues inside
an epoch.

Each epoch's order of rows and batches is a function of ``--seed`` and the epoch's number
(:func:`epoch_seed`), not of how many times the data was read before; so a resumed run
can make the interrupted epoch's order again and skip the batches already trained on.
One ``fit`` runs over all the epochs left, as one stream of batches (``steps_per_epoch``
of them an epoch); a run resumed inside an epoch first finishes that epoch in a ``fit``
of its own (:func:`segments`), and the callbacks carry their state from the one ``fit``
to the next (:class:`Segment`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rnncli.network.model import keras, tf

# A large prime: distinct --seed values give distinct epoch seeds.
_SEED_STRIDE = 1_000_003


def epoch_seed(seed: int, epoch, salt: int):
    """The seed (a tf.int64 scalar) of one of an epoch's shuffles: from ``--seed``, the
    epoch (0-based; a tensor inside tf.data) and ``salt``, which shuffle it is."""
    return (tf.constant(seed * _SEED_STRIDE + salt, tf.int64)
            + tf.cast(epoch, tf.int64) * 7919)


@dataclass(frozen=True)
class Batches:
    """Training batches made elsewhere than from arrays (a streamed file's): a function of
    the epoch (a tf.int64 scalar) giving its training batches, the validation batches,
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
    ``skip`` batches of epoch ``first`` being done already. ``one_epoch``: a tf.int64
    epoch -> that epoch's ``steps`` batches, the same for the same epoch."""
    parts = []
    if skip:
        parts.append(Part(_shared(one_epoch(tf.constant(first, tf.int64)).skip(skip)), first,
                          first + 1, steps - skip))
        first += 1
    if first < epochs:
        data = tf.data.Dataset.range(first, epochs).flat_map(one_epoch)
        parts.append(Part(_shared(data.prefetch(tf.data.AUTOTUNE)), first, epochs, steps))
    return parts


def _shared(data):
    """On several machines: the same batches on every worker, each taking its share of
    each batch (as for arrays). TensorFlow's automatic choice could shard the epochs
    themselves between the workers."""
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


def run(core, parts: list[Part], val_data, callbacks: list, *, per_worker: bool = False) -> None:
    """Fit ``core`` over ``parts`` in turn, stopping where one was stopped (early
    stopping, an interrupt). ``per_worker``: each part's batches are this worker's own
    (Batches.per_worker)."""
    carried = [c for c in callbacks if isinstance(c, Segment)]
    for i, part in enumerate(parts):
        for callback in carried:
            callback.continues, callback.continued = i > 0, i < len(parts) - 1
        data = part.data
        if per_worker:
            data = tf.distribute.get_strategy().distribute_datasets_from_function(
                lambda context, data=data: data)
        core.fit(data, validation_data=val_data, epochs=part.end,
                 initial_epoch=part.first, steps_per_epoch=part.steps, callbacks=callbacks,
                 verbose=0)
        if core.stop_training and i < len(parts) - 1:
            for callback in carried:  # the run ends here: what ending it skipped
                callback.continued = False
                callback.on_train_end()
            break


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
