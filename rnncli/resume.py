"""``rnncli train --resume``: continue an interrupted training run from its last finished
epoch.

While the recurrent network trains, the state after every finished epoch (weights,
optimizer state including the learning rate, the epoch, the history so far) is kept in
``.<out>.resume/`` beside the model directory, with Keras's BackupAndRestore. A run that
publishes its model removes it; an interrupted one leaves it, and ``--resume`` continues
from there, after checking that the data and the settings are those of the interrupted
run. The n-gram model (a few seconds to a minute) is fitted again.

Light at import; Keras is reached through the callback factory only.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from rnncli import artifacts
from rnncli.errors import UsageError

STATE = "rnncli-resume.json"


def resume_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.resume"


def prepare(out: Path, key: dict[str, Any], resume: bool) -> tuple[Path, list[dict]]:
    """(backup directory, history of the finished epochs to continue from).

    ``key``: what must not change between the interrupted run and its resumption (data
    fingerprint, settings). Without ``resume``, progress left by an earlier run is
    discarded: this run starts over.
    """
    backup = resume_dir(out)
    if not resume:
        shutil.rmtree(backup, ignore_errors=True)
        return backup, []
    try:
        state = json.loads((backup / STATE).read_text(encoding="utf-8"))
        saved, history = state["key"], state["history"]
        if not isinstance(saved, dict) or not isinstance(history, list):
            raise ValueError("not a resume state")
    except FileNotFoundError as exc:
        raise UsageError(f"{out}: no interrupted training to resume (nothing at {backup}); "
                         "train without --resume") from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{backup / STATE}: unreadable ({exc}); train without --resume to "
                         "start over") from exc
    changed = sorted(name for name in {*saved, *key} if saved.get(name) != key.get(name))
    if changed:
        raise UsageError(f"--resume: the {', '.join(changed)} changed since the interrupted "
                         "run; give the same data and options, or train without --resume to "
                         "start over")
    return backup, history


def callback(keras, backup: Path, key: dict[str, Any], before: list[dict],
             history: Callable[[], list[dict]], interrupted: Callable[[], bool],
             note: Callable[[str], None]):
    """A BackupAndRestore that saves only finished epochs (not one cut short by Ctrl-C),
    keeps its files when training ends (they are removed once the model is published),
    and records ``key`` and the history beside them. If the state cannot be written (a
    full disk), training goes on without it, and says so through ``note``."""

    class Backup(keras.callbacks.BackupAndRestore):
        failed = False

        def on_epoch_end(self, epoch, logs=None):
            if interrupted() or self.failed:
                return  # a partial epoch is not a finished one
            need = artifacts.weight_bytes(self.model, self.model.optimizer) * 1.2 + 2**20
            free = artifacts.free_bytes(backup)
            if free is not None and free < need:
                return self._give_up(f"{free // 2**20} MB free, about {need // 2**20:.0f} "
                                     "MB needed")
            reason = None
            try:
                super().on_epoch_end(epoch, logs)
                state = {"key": key, "history": before + history()}
                path = backup / STATE
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(state, allow_nan=False), encoding="utf-8")
                os.replace(tmp, path)  # the state and the weights of one epoch, never a mix
            except (OSError, RuntimeError) as exc:  # h5py reports a full disk as either
                reason = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
            if reason is not None:
                artifacts.collect_failed_writes()
                self._give_up(reason)

        def _give_up(self, reason: str) -> None:
            self.failed = True
            shutil.rmtree(backup, ignore_errors=True)  # free what it took
            note(f"note: cannot keep the state for --resume ({reason}); training goes on "
                 "without it")

    backup.mkdir(parents=True, exist_ok=True)
    return Backup(str(backup), delete_checkpoint=False)


def finish(backup: Path) -> None:
    """The model is published: the interrupted run's state is no longer needed."""
    shutil.rmtree(backup, ignore_errors=True)
