"""Training on several machines: this process's role from ``TF_CONFIG``, the
MultiWorkerMirroredStrategy, and the guarded fix the Keras trainer needs for it
(docs/gpus.md, "Several machines"). ``multi_worker_role`` is light (reads JSON); the rest
imports TensorFlow through ``runtime.import_tensorflow``."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from rnncli.core import jsontext
from rnncli.core.errors import DeviceError, UsageError, first_line
from rnncli.network.runtime import import_tensorflow


@dataclass(frozen=True)
class WorkerRole:
    """This process's place in a multi-machine run (from TF_CONFIG)."""

    task: str  # "chief" or "worker"
    index: int
    workers: int  # processes in the cluster, chief included
    chief: bool  # the one that writes the model directory
    rank: int = 0  # 0 to workers - 1: the chief first, then the workers in order

    def __str__(self) -> str:
        return f"{self.task} {self.index} of {self.workers} processes"


def multi_worker_role() -> WorkerRole | None:
    """The standard ``TF_CONFIG`` environment variable, when it describes a cluster of two or
    more processes; None otherwise. Light: reads JSON, imports nothing.

    The chief is the ``chief`` task, or worker 0 when the cluster has none.
    """
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return None
    try:
        config = jsontext.loads(raw)
        members = {kind: list(hosts) for kind, hosts in config["cluster"].items()}
        task, index = str(config["task"]["type"]), int(config["task"]["index"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"TF_CONFIG is not a cluster description ({type(exc).__name__}: "
                         f"{exc}); fix it (see docs/gpus.md, 'Several machines') or unset it") \
            from exc
    other = sorted(set(members) - {"chief", "worker"})
    if other:
        raise UsageError(f"TF_CONFIG names {', '.join(other)} tasks; rnncli trains on several "
                         "machines with MultiWorkerMirroredStrategy: only 'chief' and "
                         "'worker' tasks")
    if task not in members or not 0 <= index < len(members[task]):
        raise UsageError(f"TF_CONFIG: this task ({task} {index}) is not in its cluster")
    workers = sum(len(hosts) for hosts in members.values())
    if workers < 2:
        return None
    chief = task == "chief" or ("chief" not in members and index == 0)
    rank = index + (1 if task == "worker" and "chief" in members else 0)
    return WorkerRole(task=task, index=index, workers=workers, chief=chief, rank=rank)


def multi_worker_strategy():
    """A MultiWorkerMirroredStrategy from TF_CONFIG over this process's chosen devices.

    Must be created before TensorFlow runs its first operation in the process. Each batch
    is split between every device of every process, and gradients are all-reduced.
    """
    tf = import_tensorflow()
    _patch_keras_for_multi_worker()
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except (ValueError, RuntimeError) as exc:
        raise DeviceError(f"cannot start training on several machines from TF_CONFIG "
                          f"({first_line(exc)})") from exc


# The Keras releases whose private trainer internals _patch_keras_for_multi_worker knows.
PATCHED_KERAS = ((3, 15), (3, 15))


def _patch_keras_for_multi_worker() -> None:
    """Keras 3.15's ``fit`` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585):
    (1) its symbolic build all-reduces the first input batch, and the collective cannot
    take the integer token ids; (2) it reduces each step's metrics (scalars) along axis 0.
    Only the shapes of a batch matter to the build, so one device's share is used; scalars
    are reduced without an axis. Applied only in a process that trains on several machines.
    """
    import keras

    version = tuple(int(part) for part in re.findall(r"\d+", keras.__version__)[:2])
    if not PATCHED_KERAS[0] <= version <= PATCHED_KERAS[1]:
        raise DeviceError(f"training on several machines (TF_CONFIG) needs a Keras "
                          f"{PATCHED_KERAS[0][0]}.{PATCHED_KERAS[0][1]} to "
                          f"{PATCHED_KERAS[1][0]}.{PATCHED_KERAS[1][1]} (rnncli mends a bug "
                          f"inside those; this is {keras.__version__}); pip install "
                          f"'keras<{PATCHED_KERAS[1][0]}.{PATCHED_KERAS[1][1] + 1}'")
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer

    if getattr(trainer, "_rnncli_multi_worker", False):
        return
    for name in ("reduce_per_replica", "_collective_all_reduce_multi_worker",
                 "_is_per_replica_instance"):
        if not hasattr(trainer, name):
            raise DeviceError(f"training on several machines (TF_CONFIG): Keras "
                              f"{keras.__version__} lacks the internal {name} that rnncli "
                              "mends; install another Keras 3 release")
    tf = import_tensorflow()

    def local(strategy, value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    trainer.reduce_per_replica = _reduce_multi_worker(trainer, tree, local)
    trainer.TensorFlowTrainer._maybe_symbolic_build = _build_on_local_batch(tree, local)
    trainer._rnncli_multi_worker = True


def _reduce_multi_worker(trainer, tree, local):
    """Mends (2): ``reduce_per_replica``, with a scalar's mean taken without an axis."""
    reduce_per_replica = trainer.reduce_per_replica

    def reduce_multi_worker(values, strategy, reduction):
        if reduction not in ("auto", "mean") or not trainer._collective_all_reduce_multi_worker(
                strategy):
            return reduce_per_replica(values, strategy, reduction)

        def mean(value):
            if not trainer._is_per_replica_instance(value):
                return value
            rank = local(strategy, value).shape.rank
            return strategy.reduce("MEAN", value, axis=0 if rank else None)

        return tree.map_structure(mean, values)

    return reduce_multi_worker


def _build_on_local_batch(tree, local):
    """Mends (1): ``_maybe_symbolic_build``, from one device's share of the first batch."""
    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None:
            return
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tree.map_structure(lambda v: local(self.distribute_strategy, v),
                                                next(batches))
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    return maybe_symbolic_build
