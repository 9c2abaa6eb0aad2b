"""Saving a trained model: the model directory built beside the target, checked by
reloading it (and by the ONNX engine), then swapped in (fsio.publish); the manifest's
contents; and the Keras/h5py helpers that writing weights needs.

Light at import: TensorFlow is reached through the functions that save or reload.
"""

from __future__ import annotations

import datetime as _dt
import math
from pathlib import Path
from typing import Any

import numpy as np

from rnncli.core import fsio
from rnncli.core.config import TrainConfig
from rnncli.core.errors import ModelError, RnnCliError, Terminated, UsageError, first_line
from rnncli.core.version import __version__
from rnncli.data.dataset import Dataset
from rnncli.inference.metrics import evaluate_scores, round_figures
from rnncli.modeldir import artifacts

# Checked after saving: the reloaded model (and the ONNX engine) must give the trained
# model's scores on the first validation texts, and agree with each other on these too.
VERIFY_ROWS = 256
VERIFY_PROBES = ["", "!!!", "a wonderful, moving film", "NOT bad at all?!", "1/10",
                 "Ça n'était pas terrible<br /><br />vraiment", "ΟΔΥΣΣΕΥΣ ΚΑΙ ΣΥ", "İSTANBUL",
                 "‘quoted’ `word` 'twas rock'n'roll'", "naïve café — 東京 😀 \x00 after nul",
                 "tab\tand\u0085nel\u2028line", "x" * 3000 + " end", "ＡＢＣ１２３！？",
                 "这款iPhone很好用", "ｻｰﾋﾞｽ最悪", "＜ｂ＞好", "サポートがbad"]
_ITEMSIZE = {"float16": 2, "bfloat16": 2, "float64": 8, "int64": 8, "int8": 1, "uint8": 1}


def manifest(config: TrainConfig, train_set: Dataset, val_set: Dataset, test_set: Dataset,
             val_scores, test_scores, *, source: dict, device: str, history: list[dict],
             best_epoch: int, versions: dict[str, str], precision: str = "float32",
             replicas: int = 1,
             workers: int = 1, seconds: float, threshold: float = 0.5,
             blend: dict[str, Any] | None = None,
             calibration: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything rnncli.json records about a trained model (files are added on save).
    ``versions``: keras_version and tensorflow_version; ``best_epoch``: the epoch whose
    weights were kept (fitloop.fit)."""
    return {
        "format_version": artifacts.FORMAT_VERSION,
        "rnncli_version": __version__,
        **versions,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": config.to_dict(),
        "labels": labels_section(train_set.label_names),
        "threshold": threshold if train_set.binary else None,
        "data": source,
        "training": {"device": device, "precision": precision, "replicas": replicas,
                     "workers": workers, "epochs_run": len(history),
                     "best_epoch": best_epoch,
                     "stopped_early": len(history) < config.epochs,
                     "seconds": round(seconds, 1), "history": history},
        "blend": blend,
        "calibration": calibration,
        "validation": round_figures(evaluate_scores(val_set.labels, val_scores,
                                                    threshold=threshold,
                                                    class_names=train_set.label_names)),
        "test": round_figures(evaluate_scores(test_set.labels, test_scores,
                                              threshold=threshold,
                                              class_names=train_set.label_names)),
    }


def labels_section(names: tuple[str, ...]) -> dict[str, Any]:
    """The manifest's "labels": {negative, positive} for two classes (as every older
    rnncli wrote it), else {classes: [names in class order]}."""
    if len(names) == 2:
        return {"negative": names[0], "positive": names[1]}
    return {"classes": list(names)}


def publish_model(out: Path, text_model, test_set: Dataset, manifest: dict[str, Any],
                  texts: list[str], expected: np.ndarray, reporter) -> None:
    """Write the model directory beside ``out``, check it by reloading it, swap it in.

    A failed write (a full disk, say) leaves an existing model at ``out`` as it was, and
    nothing beside it. Just before the swap, ``out`` is checked again (under the training
    lock): a directory put there while the model trained is refused, not replaced.
    """
    # model.keras and core.onnx each hold the weights; a margin for the rest
    need = 2.5 * weight_bytes(text_model) + 8 * 2**20
    free = fsio.free_bytes(out.parent)
    if free is not None and free < need:
        raise unwritable(out, f"not enough free space: {free // 2**20} MB free, about "
                              f"{need // 2**20:.0f} MB needed")
    failure = None
    try:
        with fsio.staging(out) as staged:
            _save_keras(text_model, staged / artifacts.MODEL_FILE)
            test_set.write_split(staged / artifacts.TEST_FILE)
            onnx_error = _write_onnx(staged, text_model, manifest["settings"]["tokenizer"])
            artifacts.write_manifest(staged, manifest)
            reloaded = _verify(staged, texts, expected)
            onnx_error = onnx_error or _verify_onnx(staged, texts + VERIFY_PROBES, reloaded,
                                                    artifacts.temperature(manifest))
            if onnx_error:
                # The Keras model is fine: publish it without the TensorFlow-free engine.
                for name in (artifacts.ONNX_FILE, artifacts.SERVING_FILE):
                    (staged / name).unlink(missing_ok=True)
                artifacts.write_manifest(staged, manifest)
                reporter.message(f"note: no ONNX engine for this model ({onnx_error}); "
                                 "predict will use TensorFlow")
            fsio.publish(staged, out, artifacts.check_target)
    except OSError as exc:
        failure = exc.strerror or first_line(exc)
    if failure is not None:
        collect_failed_writes()
        raise unwritable(out, failure)


def _save_keras(text_model, path: Path) -> None:
    """``Model.save``; a failed write is an OSError whatever raised it (h5py raises
    RuntimeError when the disk fills while it writes the weights)."""
    try:
        text_model.save(path)
    except RuntimeError as exc:
        if "write" not in str(exc).lower() and "errno" not in str(exc).lower():
            raise  # not a failed write: a bug to report
        raise OSError(first_line(exc)) from exc


def unwritable(out: Path, reason: str) -> UsageError:
    left = ("an existing model there was left as it was"
            if (out / artifacts.MANIFEST).is_file() else "no model was written")
    return UsageError(f"{out}: cannot write the model ({reason}); free some space or choose "
                      f"another --out ({left})")


def _write_onnx(staged: Path, text_model, tokenizer: str) -> str | None:
    """Write the ONNX engine's files; a failure is returned, not raised (the Keras model
    is still good)."""
    from rnncli.training.export import write_onnx

    try:
        write_onnx(staged, text_model, tokenizer=tokenizer)
    except (KeyboardInterrupt, Terminated):
        raise
    except Exception as exc:  # noqa: BLE001  (tf2onnx raises many types)
        return f"the ONNX export failed: {type(exc).__name__}: {first_line(exc)}"
    return None


def _verify(staged: Path, texts: list[str], expected: np.ndarray) -> np.ndarray:
    """Reload what was written, as predict will, and check it gives the same scores;
    returns its scores for ``texts`` and then VERIFY_PROBES."""
    from rnncli.inference.keras_engine import score_texts, serving_function
    from rnncli.network.loading import load_model

    _, reloaded = load_model(staged)
    got = score_texts(serving_function(reloaded), texts + VERIFY_PROBES)
    if not np.allclose(got[: len(texts)], expected, atol=1e-4):
        worst = np.max(np.abs(got[: len(texts)] - expected))
        raise ModelError("the saved model does not reproduce the trained one's scores "
                         f"(max difference {worst:.2e}); not published")
    return got


def _verify_onnx(staged: Path, texts: list[str], expected: np.ndarray,
                 temperature: float = 1.0) -> str | None:
    """The ONNX engine must reproduce the reloaded Keras model's scores within 1e-4."""
    from rnncli.inference.onnx_engine import OnnxEngine

    try:
        with OnnxEngine.load(staged, temperature=temperature) as engine:
            got = engine.scores(texts)
    except (KeyboardInterrupt, Terminated):
        raise
    except Exception as exc:  # noqa: BLE001  (the Keras model is still good)
        return exc.message if isinstance(exc, RnnCliError) else f"{type(exc).__name__}: {exc}"
    worst = float(np.max(np.abs(got - expected)))
    return (f"its scores differ from the Keras model's by up to {worst:.2e}"
            if not worst <= 1e-4 else None)  # NaN included


def weight_bytes(*objects) -> int:
    """Bytes of the variables of Keras models / optimizers (what a save writes, roughly:
    a wrapped optimizer's, fitloop.SkipNonFinite's, are written twice)."""
    objects = [*objects, *(getattr(o, "inner_optimizer", None) for o in objects)]
    return sum(math.prod(v.shape) * _ITEMSIZE.get(str(v.dtype), 4)
               for o in objects if o is not None for v in o.variables)


def collect_failed_writes() -> None:
    """After a failed HDF5 write (a full disk), collect the half-written file's objects now
    (call it outside the ``except`` block, whose traceback holds them): left to the end of
    the process, h5py's clean-up can crash it. Their complaints while being collected are
    noise (the failure itself is reported), so they are not shown."""
    import gc
    import sys

    hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    try:
        gc.collect()
    finally:
        sys.unraisablehook = hook


