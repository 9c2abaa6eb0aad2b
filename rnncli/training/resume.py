"""``rnncli train --resume``: continue an interrupted training run where it stopped, at an
epoch's end or inside an epoch.

While the recurrent network trains, its state is kept in ``.<out>.resume/`` beside the
model directory after every finished epoch, every ``KEEP_SECONDS`` inside a long epoch,
and at the batch where Ctrl-C or SIGTERM stopped it: the weights with the optimizer's
state (learning rate included; Keras's ``save_weights``) and the dropout's random state,
the best epoch's weights (what early stopping would restore), and ``rnncli-resume.json``
with the history and, inside an epoch, the batches done (``cut``). The JSON is written
last and names the weight files it goes with, so a crash at any moment leaves one kept
state, never a mix. An epoch's order is a function of ``--seed`` and the epoch
(epochs.py), so a run resumed inside an epoch trains on the batches that were left, in
the same order. A run that publishes its model removes the state; ``--resume`` checks
that the data and settings are the interrupted run's (``--epochs`` and ``--patience``
may change: training can be extended). The n-gram model is fitted again.

Light at import: the Keras callback that keeps the state is epochs.Keep.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnncli.core import fsio, jsontext
from rnncli.core.config import TrainConfig
from rnncli.core.errors import UsageError
from rnncli.training import saving

STATE = "rnncli-resume.json"
# The folder, inside a run's, of the pretraining's state (training/pretrain.py).
PRETRAIN_STAGE = "pretrain"
STAGE_RECORD = "record.json"  # what a finished stage recorded, for the manifest
# Settings that may change on --resume: they do not change what an epoch does.
FREE_SETTINGS = ("epochs", "patience")
# A file named by --embeddings or --unlabelled is known to --resume by its name, size,
# modification time and the sha256 of its first and last KEY_SAMPLE_BYTES (hashing a
# GloVe file of several GB on every run would take minutes).
KEY_SAMPLE_BYTES = 2**20
# Inside an epoch, the state is kept again once this many seconds have passed since it
# was last kept (a few MB written: a fraction of a percent of the time).
KEEP_SECONDS = 300.0
# The training figures an epoch cut and resumed adds up from its parts' running sums.
_MERGED = ("loss", "accuracy")


@dataclass(frozen=True)
class Progress:
    """Where a run keeps its state (``backup``), what must not change before it is
    resumed (``key``), and the interrupted run's state to continue from (or None)."""

    backup: Path
    key: dict[str, Any]
    state: dict[str, Any] | None = None
    resuming: bool = False  # --resume was given


def resume_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.resume"


def run_key(data, config: TrainConfig, embeddings, unlabelled,
            mixed_precision, content: str | None = None,
            encoder: Path | None = None) -> dict[str, Any]:
    """What must not change between an interrupted run and its --resume; ``content``:
    the data's key when ``data`` is None (a streamed file's, made from its fingerprint);
    ``encoder``: the weights file of a pretrained encoder it starts from, or None."""
    settings = {k: v for k, v in config.to_dict().items() if k not in FREE_SETTINGS}
    key = {"data": content or _content_key(data.texts, data.labels, data.label_names),
           "settings": settings,
           "word vectors": [file_key(embeddings), file_key(unlabelled)],
           "mixed precision": bool(mixed_precision)}
    if encoder is not None:
        key["encoder"] = file_key(encoder)
    return key


def _content_key(texts: list[str], labels, label_names) -> str:
    """What training reads from the data: texts, labels and their names (so a different
    encoding, column or positive label is a different key, as is a different file)."""
    digest = hashlib.sha256(json.dumps(list(label_names)).encode())
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass") + b"\x00")
    digest.update(np.asarray(labels, np.int8).tobytes())
    return digest.hexdigest()


def file_key(path: str | Path | None) -> str | None:
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
    Without ``resume``, progress left by an earlier run is discarded. A run cut while it
    pretrained (:func:`stage`) has no state of its own yet.
    """
    backup = resume_dir(out)
    if not resume:
        shutil.rmtree(backup, ignore_errors=True)
        return Progress(backup, key)
    if not (backup / STATE).exists() and (backup / PRETRAIN_STAGE / STATE).exists():
        _load(backup / PRETRAIN_STAGE, key, "")  # refused now if the data or settings changed
        return Progress(backup, key, None, resuming=True)
    return Progress(backup, key, _load(backup, key, f"{out}: no interrupted training to "
                                       f"resume (nothing at {backup}); train without --resume"),
                    resuming=True)


def stage(progress: Progress | None, name: str) -> Progress | None:
    """The state of a stage before the network learns the labels (pretraining), kept in
    its own folder inside the run's; with ``--resume``, the interrupted stage's, if any."""
    if progress is None:
        return None
    backup = progress.backup / name
    if progress.resuming and (backup / STATE).exists():
        return Progress(backup, progress.key, _load(backup, progress.key, ""), resuming=True)
    return Progress(backup, progress.key)


def stage_record(progress: Progress | None, name: str) -> dict[str, Any] | None:
    """What a finished stage recorded (keep_stage_record) for a run resumed after it, or None."""
    if progress is None or not progress.state:
        return None
    try:
        record = jsontext.loads((progress.backup / name / STAGE_RECORD).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def keep_stage_record(progress: Progress | None, record: dict[str, Any]) -> None:
    """Keep what a finished stage (``progress``: its own) recorded beside its state."""
    if progress is not None:
        progress.backup.mkdir(parents=True, exist_ok=True)
        (progress.backup / STAGE_RECORD).write_text(json.dumps(record), encoding="utf-8")


def _load(backup: Path, key: dict[str, Any], missing: str) -> dict[str, Any]:
    """The state kept in ``backup``, checked against ``key``; ``missing``: the error when
    there is none."""
    path = backup / STATE
    try:
        state = jsontext.loads(path.read_text(encoding="utf-8"))
        if isinstance(state, dict) and isinstance(state.get("history"), list):
            # kept before val_losses existed: the history's rounded losses stand in
            state.setdefault("val_losses", [h.get("val_loss") if isinstance(h, dict) else None
                                            for h in state["history"]])
        _check_state(backup, state)
    except FileNotFoundError as exc:
        raise UsageError(missing) from exc
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise UsageError(f"{path}: the kept state is unreadable ({exc}); train without "
                         "--resume to start over") from exc
    saved = state["key"]
    changed = sorted(name for name in {*saved, *key} if saved.get(name) != key.get(name))
    if changed:
        raise UsageError(f"--resume: the {', '.join(changed)} changed since the interrupted "
                         "run; give the same data and options, or train without --resume to "
                         "start over")
    return state


def _check_state(backup: Path, state: Any) -> None:
    if not isinstance(state, dict) or not isinstance(state.get("key"), dict):
        raise ValueError("not a resume state")
    history, cut, best = state["history"], state.get("cut"), state["best"]
    if not (isinstance(history, list) and (history or cut) and all(
            isinstance(h, dict) and h.get("epoch") == i + 1 for i, h in enumerate(history))):
        raise ValueError("history is not a list of finished epochs")
    if cut is not None and not _is_cut(cut, len(history) + 1):
        raise ValueError("the epoch it was cut in is not described")
    if (best is None) != (not history) or (best is not None and not (
            isinstance(best, dict) and isinstance(best.get("epoch"), int)
            and 1 <= best["epoch"] <= len(history)
            and (best.get("val_loss") is None or isinstance(best["val_loss"], float)))):
        raise ValueError("no best epoch, or a bad one")
    for name in (state["weights"], *([best["weights"]] if best else [])):
        if not isinstance(name, str) or "/" in name or not (backup / name).is_file():
            raise ValueError(f"a weights file it names is missing ({name!r})")
    if not isinstance(state["precision"], str):
        raise ValueError("bad precision")
    losses = state["val_losses"]
    if not (isinstance(losses, list) and len(losses) == len(history) and all(
            loss is None or isinstance(loss, float) for loss in losses)):
        raise ValueError("val_losses does not match the history")


def _is_cut(cut: Any, epoch: int) -> bool:
    """Whether ``cut`` describes a stop inside ``epoch`` (1-based)."""
    return (isinstance(cut, dict) and cut.get("epoch") == epoch
            and all(isinstance(cut.get(k), int) and cut[k] > 0 for k in ("step", "steps"))
            and cut["step"] < cut["steps"] and isinstance(cut.get("seconds"), (int, float))
            and isinstance(cut.get("totals"), dict)
            and all(isinstance(v, (int, float)) for v in cut["totals"].values()))


def cut_of(state: dict | None) -> dict | None:
    """Where the interrupted run stopped inside an epoch: {"epoch" (1-based), "step"
    (its batches done), "seconds", "logs" (its training figures so far)}; None when it
    stopped at an epoch's end (or there is no state)."""
    return state.get("cut") if state else None


def where(state: dict, steps: int | None = None) -> str:
    """Where a kept state stands, for people: "after epoch 2", "at step 40/120 of epoch
    3" (``steps``: an epoch's, if known)."""
    cut = cut_of(state)
    if cut:
        return f"at step {cut['step']}{f'/{steps}' if steps else ''} of epoch {cut['epoch']}"
    return f"after epoch {len(state['history'])}"


def announce(progress: Progress, tell: Callable[[str], None]) -> None:
    """Say where a resumed run continues from, if it is one."""
    if progress.state:
        tell(f"resuming {where(progress.state)} of the interrupted run")


def check_steps(state: dict | None, steps: int) -> None:
    """A run cut inside an epoch resumes only with as many batches an epoch (the same
    devices): else the batches it skips would not be those it trained on."""
    cut = cut_of(state)
    if cut and cut["steps"] != steps:
        raise UsageError(f"--resume: the interrupted run was cut inside epoch {cut['epoch']}, "
                         f"of {cut['steps']} batches; this one has {steps} (other devices?); "
                         "resume on the devices it ran on, or train without --resume")


def merge_totals(earlier: dict[str, float] | None, totals: dict[str, float]) -> dict[str, float]:
    """The running sums of an epoch's training figures ("loss/total", "loss/count", ...)
    from its batches before a cut (``earlier``) and after (``totals``)."""
    if not earlier:
        return dict(totals)
    return {k: earlier.get(k, 0.0) + v for k, v in totals.items()}


def figures(totals: dict[str, float]) -> dict[str, float]:
    """Loss and accuracy from their running sums, as Keras's means compute them."""
    return {name: totals[f"{name}/total"] / totals[f"{name}/count"] for name in _MERGED
            if totals.get(f"{name}/count")}


def plateau_best(val_losses: list[float | None], min_delta: float) -> float | None:
    """The best loss learning-rate decay (ReduceLROnPlateau) holds after these epochs: it
    moves only on an improvement by more than ``min_delta``."""
    best = None
    for loss in val_losses:
        if loss is not None and (best is None or loss + abs(min_delta) < best):
            best = loss
    return best


def restore(core, early_stopping, plateau: list, progress: Progress, precision: str) -> None:
    """Load the kept weights, optimizer state and dropout's random state into ``core``
    (compiled), and give early stopping the best epoch so far (its weights, loss and the
    epochs since) and learning-rate decay (``plateau``) the best loss."""
    backup, state = progress.backup, progress.state
    if state["precision"] != precision:
        raise UsageError(f"--resume: the interrupted run computed in {state['precision']}, "
                         f"this one would in {precision} (another device?); resume where "
                         "it ran, or train without --resume")
    best = state["best"]
    try:
        if not core.optimizer.built:
            core.optimizer.build(core.trainable_variables)
        with warnings.catch_warnings(record=True) as said:  # Keras only warns of it
            warnings.simplefilter("always")
            core.load_weights(backup / state["weights"])
        if any("Skipping variable loading for optimizer" in str(w.message) for w in said):
            raise ValueError("its optimizer state is another's (kept by another rnncli?)")
        _load_random_state(core, backup / state["weights"])
        best_weights = None
        if best:
            with np.load(backup / best["weights"], allow_pickle=False) as kept:
                best_weights = [kept[f"arr_{i}"] for i in range(len(kept.files))]
            if [w.shape for w in best_weights] != [w.shape for w in core.get_weights()]:
                raise ValueError("the best weights do not fit the network")
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"{backup}: the kept weights are unreadable ({str(exc)[:200]}); "
                         "train without --resume to start over") from exc
    if best:
        early_stopping.resumed = (best["val_loss"], best_weights, best["epoch"] - 1,
                                  len(state["history"]))
    for callback in plateau:
        callback.resumed_best = plateau_best(state["val_losses"], callback.min_delta)


def _random_state_path(weights: Path) -> Path:
    return weights.with_name(weights.name.replace(".weights.h5", ".random.npz"))


def _save_random_state(model, weights: Path) -> None:
    """The dropout layers' random state (Keras's seed generators, which ``save_weights``
    leaves out), beside the weights: a resumed run then draws the same dropout masks."""
    states = [v.numpy() for v in _seed_states(model)]
    path = _random_state_path(weights)
    with open(path.with_name("tmp-" + path.name), "wb") as fh:
        np.savez(fh, *states)
    os.replace(path.with_name("tmp-" + path.name), path)


def _load_random_state(model, weights: Path) -> None:
    """As kept by _save_random_state; a state kept without it (an older rnncli) resumes
    with fresh dropout masks."""
    variables, path = _seed_states(model), _random_state_path(weights)
    if not path.exists():
        return
    with np.load(path, allow_pickle=False) as kept:
        if len(kept.files) != len(variables):
            raise ValueError("the random state does not fit the network")
        for i, variable in enumerate(variables):
            variable.assign(kept[f"arr_{i}"])


def _seed_states(model) -> list:
    return [v for v in model.variables if "seed_generator" in v.path]


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


def short_of_space(model, backup: Path) -> str | None:
    """Why the state after an epoch will not fit on the disk of ``backup``, or None."""
    need = saving.weight_bytes(model, model.optimizer) * 2.5 + 2**20
    free = fsio.free_bytes(backup)
    if free is not None and free < need:
        return f"{free // 2**20} MB free, about {need // 2**20:.0f} MB needed"
    return None


def write_state(model, backup: Path, epoch: int, new_best: bool, *, key: dict[str, Any],
                 history: list[dict], losses: list[float | None], best: dict[str, Any] | None,
                 precision: str, cut: dict | None = None) -> dict[str, Any] | None:
    """Keep the state after ``epoch`` (1-based), or inside it (``cut``), in ``backup``,
    its weights saved as the best too if ``new_best``; the files of earlier states go
    once the JSON, written last, names the new ones. Returns the best epoch's record."""
    backup.mkdir(parents=True, exist_ok=True)
    weights = f"epoch-{epoch}" + (f"-step-{cut['step']}" if cut else "") + ".weights.h5"
    # under a temporary name first: the name may be the one the committed JSON names
    model.save_weights(backup / ("tmp-" + weights), overwrite=True)
    os.replace(backup / ("tmp-" + weights), backup / weights)
    _save_random_state(model, backup / weights)
    if new_best or (best is None and cut is None):
        best = {"epoch": epoch, "val_loss": losses[-1], "weights": f"best-{epoch}.npz"}
        with open(backup / best["weights"], "wb") as fh:
            np.savez(fh, *model.get_weights())
    text = json.dumps({"key": key, "history": history, "val_losses": losses,
                       "weights": weights, "best": best, "precision": precision, "cut": cut},
                      allow_nan=False)
    tmp = backup / (STATE + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, backup / STATE)  # the commit point
    keep = {STATE, weights, _random_state_path(backup / weights).name,
            *([best["weights"]] if best else [])}
    for old in backup.iterdir():  # files of earlier states (a stage's folder stays)
        if old.name not in keep and not old.is_dir():
            old.unlink()
    return best


def finish(backup: Path) -> None:
    """The model is published: the interrupted run's state is no longer needed."""
    shutil.rmtree(backup, ignore_errors=True)
