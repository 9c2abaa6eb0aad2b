"""``rnncli train --resume``: continue an interrupted training run from its last finished
epoch.

While the recurrent network trains, the state after every finished epoch is kept in
``.<out>.resume/`` beside the model directory: the weights with the optimizer's state
(learning rate included; Keras's ``save_weights``), the best epoch's weights (what early
stopping would restore), and ``rnncli-resume.json`` with the history. The JSON is written
last and names the weight files it goes with, so a crash at any moment leaves the state
of one finished epoch, never a mix. An epoch cut short by Ctrl-C is not saved. A run that
publishes its model removes the state; ``--resume`` continues from it after checking that
the data and the settings are those of the interrupted run (``--epochs`` and
``--patience`` may change: training can be extended). The n-gram model (seconds to a
minute) is fitted again.

Light at import; Keras is reached through the callback factory only.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnncli.core import fsio, jsontext
from rnncli.core.config import TrainConfig
from rnncli.core.errors import UsageError, first_line
from rnncli.training import saving

STATE = "rnncli-resume.json"
# Settings that may change on --resume: they do not change what an epoch does.
FREE_SETTINGS = ("epochs", "patience")
# A file named by --embeddings or --unlabelled is known to --resume by its name, size,
# modification time and the sha256 of its first and last KEY_SAMPLE_BYTES (hashing a
# GloVe file of several GB on every run would take minutes).
KEY_SAMPLE_BYTES = 2**20


@dataclass(frozen=True)
class Progress:
    """Where a run keeps its state (``backup``), what must not change before it is
    resumed (``key``), and the interrupted run's state to continue from (or None)."""

    backup: Path
    key: dict[str, Any]
    state: dict[str, Any] | None = None


def resume_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.resume"


def run_key(data, config: TrainConfig, embeddings, unlabelled,
            mixed_precision, content: str | None = None) -> dict[str, Any]:
    """What must not change between an interrupted run and its --resume; ``content``:
    the data's key when ``data`` is None (a streamed file's, made from its fingerprint)."""
    settings = {k: v for k, v in config.to_dict().items() if k not in FREE_SETTINGS}
    return {"data": content or _content_key(data.texts, data.labels, data.label_names),
            "settings": settings,
            "word vectors": [_file_key(embeddings), _file_key(unlabelled)],
            "mixed precision": bool(mixed_precision)}


def _content_key(texts: list[str], labels, label_names) -> str:
    """What training reads from the data: texts, labels and their names (so a different
    encoding, column or positive label is a different key, as is a different file)."""
    digest = hashlib.sha256(json.dumps(list(label_names)).encode())
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass") + b"\x00")
    digest.update(np.asarray(labels, np.int8).tobytes())
    return digest.hexdigest()


def _file_key(path: str | Path | None) -> str | None:
    """A word-vector file's identity for --resume, without reading all of it."""
    if path is None:
        return None
    path = Path(path)
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        digest = hashlib.sha256(fh.read(KEY_SAMPLE_BYTES))
        if size > KEY_SAMPLE_BYTES:
            fh.seek(max(KEY_SAMPLE_BYTES, size - KEY_SAMPLE_BYTES))
            digest.update(fh.read(KEY_SAMPLE_BYTES))
        modified = os.fstat(fh.fileno()).st_mtime_ns
    return f"{path.name} {size} bytes, modified {modified}, sampled sha256:{digest.hexdigest()}"


def prepare(out: Path, key: dict[str, Any], resume: bool) -> Progress:
    """Where to keep this run's state, and with ``resume`` the interrupted run's state.

    ``key``: what must not change between the interrupted run and its resumption.
    Without ``resume``, progress left by an earlier run is discarded.
    """
    backup = resume_dir(out)
    if not resume:
        shutil.rmtree(backup, ignore_errors=True)
        return Progress(backup, key)
    path = backup / STATE
    try:
        state = jsontext.loads(path.read_text(encoding="utf-8"))
        if isinstance(state, dict) and isinstance(state.get("history"), list):
            # kept before val_losses existed: the history's rounded losses stand in
            state.setdefault("val_losses", [h.get("val_loss") if isinstance(h, dict) else None
                                            for h in state["history"]])
        _check_state(backup, state)
    except FileNotFoundError as exc:
        raise UsageError(f"{out}: no interrupted training to resume (nothing at {backup}); "
                         "train without --resume") from exc
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise UsageError(f"{path}: the kept state is unreadable ({exc}); train without "
                         "--resume to start over") from exc
    saved = state["key"]
    changed = sorted(name for name in {*saved, *key} if saved.get(name) != key.get(name))
    if changed:
        raise UsageError(f"--resume: the {', '.join(changed)} changed since the interrupted "
                         "run; give the same data and options, or train without --resume to "
                         "start over")
    return Progress(backup, key, state)


def _check_state(backup: Path, state: Any) -> None:
    if not isinstance(state, dict) or not isinstance(state.get("key"), dict):
        raise ValueError("not a resume state")
    history = state["history"]
    if not (isinstance(history, list) and history and all(
            isinstance(h, dict) and h.get("epoch") == i + 1 for i, h in enumerate(history))):
        raise ValueError("history is not a list of finished epochs")
    for name in (state["weights"], state["best"]["weights"]):
        if not isinstance(name, str) or "/" in name or not (backup / name).is_file():
            raise ValueError(f"a weights file it names is missing ({name!r})")
    if not isinstance(state["best"]["epoch"], int) or not isinstance(state["precision"], str):
        raise ValueError("bad best epoch or precision")
    losses = state["val_losses"]
    if not (isinstance(losses, list) and len(losses) == len(history) and all(
            loss is None or isinstance(loss, float) for loss in losses)):
        raise ValueError("val_losses does not match the history")


def restore(core, early_stopping, progress: Progress, precision: str) -> None:
    """Load the kept weights and optimizer state into ``core`` (compiled), and give early
    stopping the best epoch so far (its weights, loss and the epochs since)."""
    backup, state = progress.backup, progress.state
    if state["precision"] != precision:
        raise UsageError(f"--resume: the interrupted run computed in {state['precision']}, "
                         f"this one would in {precision} (another device?); resume where "
                         "it ran, or train without --resume")
    try:
        if not core.optimizer.built:
            core.optimizer.build(core.trainable_variables)
        core.load_weights(backup / state["weights"])
        with np.load(backup / state["best"]["weights"], allow_pickle=False) as best:
            best_weights = [best[f"arr_{i}"] for i in range(len(best.files))]
        if [w.shape for w in best_weights] != [w.shape for w in core.get_weights()]:
            raise ValueError("the best weights do not fit the network")
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"{backup}: the kept weights are unreadable ({str(exc)[:200]}); "
                         "train without --resume to start over") from exc
    early_stopping.resumed = (state["best"]["val_loss"], best_weights,
                              state["best"]["epoch"] - 1, len(state["history"]))


def finished(state: dict, epochs: int, patience: int) -> bool:
    """Had the interrupted run already finished training (all epochs, or early stopping)?"""
    done = len(state["history"])
    best = best_epoch(state["val_losses"])
    waited = done - best if best else 0
    return done >= epochs or (done > 1 and waited >= max(1, patience))


def best_epoch(val_losses: list[float | None]) -> int:
    """1-based epoch with the lowest finite validation loss (0 if none), the first of
    equals. The losses are the unrounded ones EarlyStopping compares (the history's are
    rounded for reading), so a resumed run restores the epoch an unbroken run would."""
    losses = [(loss, i + 1) for i, loss in enumerate(val_losses)
              if loss is not None and math.isfinite(loss)]
    return min(losses)[1] if losses else 0


def callback(keras, progress: Progress, precision: str, history: Callable[[], list[dict]],
             steps: int, note: Callable[[str], None]):
    """Keeps the state after each finished epoch (all ``steps`` batches run). If it cannot
    be written (a full disk), training goes on without it, and says so through ``note``."""
    backup, key, state = progress.backup, progress.key, progress.state
    before = state["history"] if state else []
    losses = list(state["val_losses"]) if state else []
    best = dict(state["best"]) if state else None

    class Keep(keras.callbacks.Callback):
        failed = False

        def on_epoch_begin(self, epoch, logs=None):
            self.batches = 0

        def on_train_batch_end(self, batch, logs=None):
            self.batches += 1

        def on_epoch_end(self, epoch, logs=None):
            nonlocal best
            if self.failed or self.batches < steps:
                return  # an epoch cut short is not a finished one
            loss = float((logs or {}).get("val_loss", math.nan))
            losses.append(loss if math.isfinite(loss) else None)
            short = _short_of_space(self.model, backup)
            if short is not None:
                return self._give_up(short)
            so_far = before + history()
            improved = best_epoch(losses) == epoch + 1
            reason = None
            try:
                best = _write_state(self.model, backup, epoch + 1, improved or best is None,
                                    key=key, history=so_far, losses=losses, best=best,
                                    precision=precision)
            except (OSError, RuntimeError, ValueError) as exc:  # h5py: either, full disk
                reason = first_line(exc, 120)
            if reason is not None:
                saving.collect_failed_writes()
                self._give_up(reason)

        def _give_up(self, reason: str) -> None:
            self.failed = True
            shutil.rmtree(backup, ignore_errors=True)  # free what it took
            note(f"note: cannot keep the state for --resume ({reason}); training goes on "
                 "without it")

    return Keep()


def _short_of_space(model, backup: Path) -> str | None:
    """Why the state after an epoch will not fit on the disk of ``backup``, or None."""
    need = saving.weight_bytes(model, model.optimizer) * 2.5 + 2**20
    free = fsio.free_bytes(backup)
    if free is not None and free < need:
        return f"{free // 2**20} MB free, about {need // 2**20:.0f} MB needed"
    return None


def _write_state(model, backup: Path, epoch: int, new_best: bool, *, key: dict[str, Any],
                 history: list[dict], losses: list[float | None], best: dict[str, Any] | None,
                 precision: str) -> dict[str, Any]:
    """Keep the state after ``epoch`` (1-based) in ``backup``, its weights saved as the
    best too if ``new_best``; the files of earlier epochs go once the JSON, written last,
    names the new ones. Returns the best epoch's record."""
    backup.mkdir(parents=True, exist_ok=True)
    weights = f"epoch-{epoch}.weights.h5"
    model.save_weights(backup / weights, overwrite=True)
    if new_best:
        best = {"epoch": epoch, "val_loss": losses[-1], "weights": f"best-{epoch}.npz"}
        with open(backup / best["weights"], "wb") as fh:
            np.savez(fh, *model.get_weights())
    text = json.dumps({"key": key, "history": history, "val_losses": losses,
                       "weights": weights, "best": best, "precision": precision},
                      allow_nan=False)
    tmp = backup / (STATE + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, backup / STATE)  # the commit point
    for old in backup.iterdir():  # files of earlier epochs
        if old.name not in (STATE, weights, best["weights"]):
            old.unlink()
    return best


def resumable_early_stopping(keras, **kwargs):
    """EarlyStopping that, when resumed, starts from the interrupted run's best epoch."""

    class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
        resumed = None  # (best val_loss, best weights, best epoch (0-based), epochs done)

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            if self.resumed is not None:
                loss, weights, epoch, done = self.resumed
                self.best, self.best_weights, self.best_epoch = loss, weights, epoch
                self.wait = done - 1 - epoch

    return ResumableEarlyStopping(**kwargs)


def finish(backup: Path) -> None:
    """The model is published: the interrupted run's state is no longer needed."""
    shutil.rmtree(backup, ignore_errors=True)
