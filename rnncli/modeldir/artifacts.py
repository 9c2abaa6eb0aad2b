"""The model directory contract: manifest, hashes, the archive check, safe loading (the
atomic publish is core/fsio.py's, the writing training/saving.py's).

A model directory holds:
    rnncli.json     the manifest (format version, versions, settings, labels, threshold,
                    history, figures, data fingerprint, sha256 of every other file)
    model.keras     Keras model: raw strings in, the positive-class probability out (or
                    every class's, for more than two classes)
    test.jsonl.gz   the held-out test split (``text``, ``label``), for ``rnncli evaluate``
    core.onnx       the recurrent network for the ONNX engine (``inference/onnx_engine.py``), and
    serving.npz     what that engine needs around it; both absent in older models

Light: reading the manifest and checking the archive need no TensorFlow (the loading
itself is ``rnncli.network.loading.load_keras_model``). Loading never runs code from the
model: hashes are checked first, the archive's members and config are checked against what
rnncli itself builds, then Keras loads with ``safe_mode=True``.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

from rnncli.core import fsio, jsontext
from rnncli.core.config import AUTO_BIGRAM_SHARE, TrainConfig
from rnncli.core.errors import ModelError, RnnCliError, UsageError
from rnncli.data.columns import normalize_label

# 8: settings.adversarial (adversarial training; the files are as before);
# 7: settings.pretrain_epochs and data.pretraining (language-model pretraining; the
#    files are as before);
# 6: calibration (a temperature fitted on validation, in the manifest and the Keras
#    model's Temperature layer);
# 5: more than two classes (settings.classes, labels.classes, threshold null, the heads
#    give every class's probability), settings.class_weight, data.class_counts;
# 4: settings.ngram_order and ngram_solver (the n-gram model's longest n-grams, and Adam
#    or the exact fit with C chosen on validation), its refit on training + validation
#    rows (manifest.blend: ngram_solver, ngram_c or ngram_epochs, ngram_refit);
# 3: settings.tokenizer ("cjk-chars": Chinese and Japanese characters are tokens);
# 2: the n-gram model and blend (settings.ngrams, manifest.blend); 1 to 7 still load.
FORMAT_VERSION = 8
MANIFEST = "rnncli.json"
MODEL_FILE = "model.keras"
TEST_FILE = "test.jsonl.gz"
ONNX_FILE = "core.onnx"  # the ONNX engine's network (inference/onnx_engine.py)
SERVING_FILE = "serving.npz"  # and what it needs around it (serving.py)
MAX_MANIFEST_BYTES = 16 * 2**20
# The exported SavedModel's signatures (training/export.py writes them, serve/tf_api.py
# shows them as TF Serving would): one input of strings; the probabilities; the class names
# beside them (serving_default of a model of more than two classes)
SAVED_MODEL_INPUT, SAVED_MODEL_OUTPUT, SAVED_MODEL_CLASSES = "text", "output_0", "classes"
MAX_ARCHIVE_BYTES = 4 * 2**30
MAX_RATIO = 200  # uncompressed / compressed, per member; zip bombs go far beyond

# (module, class_name) pairs that may appear in model.keras's config.json: exactly what
# model.build_* creates. Anything else (a Lambda, a foreign module) is refused.
_KERAS_LAYERS = {"InputLayer", "TextVectorization", "Embedding", "SpatialDropout1D",
                 "Bidirectional", "GRU", "LSTM", "Dropout", "Dense", "GlobalAveragePooling1D"}
_RNNCLI_LAYERS = {"Truncate", "MaskedMaxPooling", "AttentionPooling", "NgramLogistic",
                  "Blend", "TokenPairs", "Temperature"}
_ALLOWED_CLASSES = (
    {("keras.layers", name) for name in _KERAS_LAYERS}
    | {("keras.initializers", name) for name in ("GlorotUniform", "Orthogonal", "Zeros",
                                                  "Ones", "RandomUniform")}
    | {("rnncli.layers", name) for name in _RNNCLI_LAYERS}
    | {("keras.src.models.functional", "Functional"), ("keras", "DTypePolicy"),
       ("keras.src.ops.numpy", "NotEqual"), (None, "__keras_tensor__")}
)
_ALLOWED_FUNCTIONS = {"rnncli>standardize", "rnncli>standardize_cjk"}
_ARCHIVE_MEMBERS = ("config.json", "metadata.json", "model.weights.h5")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- reading


def read_manifest(model_dir: str | Path) -> dict[str, Any]:
    """Read and check ``rnncli.json``. Raises ModelError (exit 4) with what to do."""
    try:
        return _read_manifest(Path(model_dir))
    except OSError as exc:  # a name too long, a folder we may not enter, ...
        raise ModelError(f"{model_dir}: cannot be read ({exc.strerror or exc}); pass another "
                         "-m DIR") from exc


def _read_manifest(model_dir: Path) -> dict[str, Any]:
    if not model_dir.exists():
        raise ModelError(f"{model_dir}: no model directory here; train one with "
                         f"'rnncli train DATA -o {model_dir}' or pass -m DIR")
    if not model_dir.is_dir():
        raise ModelError(f"{model_dir}: is a file, not a model directory; pass -m DIR")
    path = model_dir / MANIFEST
    if not path.is_file():
        raise ModelError(f"{model_dir}: not an rnncli model directory (no {MANIFEST}); "
                         "pass the directory 'rnncli train' wrote")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise ModelError(f"{path}: manifest is {path.stat().st_size} bytes, over the "
                         f"{MAX_MANIFEST_BYTES // 2**20} MB limit; it is not rnncli's")
    try:
        manifest = jsontext.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, jsontext.BadJSON) as exc:
        raise ModelError(f"{path}: manifest is not valid JSON ({exc}); retrain the model") \
            from exc
    if not isinstance(manifest, dict):
        raise ModelError(f"{path}: manifest is not a JSON object; retrain the model")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelError(f"{path}: manifest has no valid format_version; retrain the model")
    if version > FORMAT_VERSION:
        raise ModelError(f"{path}: model format {version} is newer than this rnncli "
                         f"understands ({FORMAT_VERSION}); upgrade rnncli")
    try:
        _check_labels(path, model_config(manifest), label_names(manifest),
                      manifest["threshold"])
        files = manifest["files"]
        if not isinstance(files, dict) or MODEL_FILE not in files:
            raise KeyError("files")
        for section in ("data", "training", "blend", "calibration", "validation", "test"):
            if not isinstance(manifest.get(section) or {}, dict):
                raise TypeError(section)
        temperature(manifest)
    except ModelError:
        raise
    except (KeyError, TypeError, ValueError, RnnCliError) as exc:
        detail = exc.message if isinstance(exc, RnnCliError) else f"missing or bad {exc}"
        raise ModelError(f"{path}: manifest is incomplete ({detail}); retrain the model") \
            from exc
    return manifest


def _check_labels(path: Path, config: TrainConfig, names: tuple[str, ...], threshold) -> None:
    """The classes, their number in the settings and the threshold must agree (a
    hand-edited manifest may not)."""
    if len(names) != (config.classes or 2):
        raise ModelError(f"{path}: manifest is inconsistent: it names {len(names)} classes but "
                         f"settings.classes is {config.classes}; restore the manifest or "
                         "retrain the model")
    if len(names) > 2 and threshold is not None:
        raise ModelError(f"{path}: manifest is inconsistent: a model of {len(names)} classes "
                         f"has no threshold, but it says {threshold!r}; set \"threshold\" to "
                         "null or retrain the model")
    if len(names) == 2 and (not isinstance(threshold, (int, float))
                            or isinstance(threshold, bool)
                            or not 0 <= threshold <= 1):  # NaN too
        raise ValueError("threshold")


def model_config(manifest: dict[str, Any]) -> TrainConfig:
    """The settings the model was trained with (checked by :func:`read_manifest`)."""
    return TrainConfig.from_dict(manifest["settings"])


def label_names(manifest: dict[str, Any]) -> tuple[str, ...]:
    """The class names in class order, as the training data spelled them: (negative,
    positive) for a binary model."""
    labels = manifest["labels"]
    if not isinstance(labels, dict):
        raise TypeError("labels")
    if "classes" not in labels:
        return str(labels["negative"]), str(labels["positive"])
    names = labels["classes"]
    if (not isinstance(names, list) or len(names) < 3
            or not all(isinstance(n, str) for n in names)
            or len({normalize_label(n) for n in names}) != len(names)):
        raise ValueError("labels.classes (three or more distinct names)")
    return tuple(names)


def describe_tokens(manifest: dict[str, Any]) -> str:
    """What the model's tokens are, in plain words (info and report say it the same way):
    from its tokenizer and the share of its training tokens that were Chinese or Japanese
    characters (``data.character_share``; models older than it: from the tokenizer)."""
    tokenizer = (manifest.get("settings") or {}).get("tokenizer", "words")
    share = (manifest.get("data") or {}).get("character_share")
    if tokenizer != "cjk-chars":
        return "words"
    if not isinstance(share, (int, float)) or isinstance(share, bool):
        return "words; a Chinese or Japanese character is a token of its own"
    if share > AUTO_BIGRAM_SHARE:
        return (f"Chinese and Japanese characters, one token each ({share:.0%} of the "
                "training tokens); words in other scripts")
    if share >= 0.005:
        return (f"words, and Chinese and Japanese characters, one token each ({share:.0%} "
                "of the training tokens)")
    return "words"


def temperature(manifest: dict[str, Any]) -> float:
    """The calibration's temperature (1.0 for none, and for models older than format 6)."""
    from rnncli.core.scoring import TEMPERATURES

    value = (manifest.get("calibration") or {}).get("temperature", 1.0)
    if (not isinstance(value, (int, float)) or isinstance(value, bool)
            or not TEMPERATURES[0] <= value <= TEMPERATURES[1]):
        raise ValueError("calibration.temperature")
    return float(value)


def is_binary(manifest: dict[str, Any]) -> bool:
    return len(label_names(manifest)) == 2


def verify_files(model_dir: Path, manifest: dict[str, Any], names=(MODEL_FILE,)) -> None:
    """Check the listed files against the manifest's sha256 before anything opens them."""
    for name in names:
        path = model_dir / name
        expected = manifest["files"].get(name)
        if not path.is_file():
            raise ModelError(f"{path}: missing from the model directory; retrain the model")
        if expected is None or sha256_file(path) != expected:
            raise ModelError(f"{path}: contents do not match the manifest's sha256 (corrupt or "
                             "modified); retrain the model or restore the directory")


def check_archive(path: Path) -> None:
    """Refuse a model.keras that is not a zip rnncli could have written."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelError(f"{path}: not a valid .keras archive ({exc}); retrain the model") \
            from exc
    with archive:
        total = 0
        for info in archive.infolist():
            name = info.filename
            if not (name in _ARCHIVE_MEMBERS or _is_asset(name)):
                raise ModelError(f"{path}: unexpected archive member {name!r}; refusing to load")
            total += info.file_size
            ratio_limit = MAX_RATIO * max(1, info.compress_size)
            if total > MAX_ARCHIVE_BYTES or (info.file_size > 2**20
                                             and info.file_size > ratio_limit):
                raise ModelError(f"{path}: archive member {name!r} is implausibly large; "
                                 "refusing to load")
        try:
            config = jsontext.loads(archive.read("config.json"))
        except (KeyError, jsontext.BadJSON, zipfile.BadZipFile) as exc:
            raise ModelError(f"{path}: archive has no readable config.json; retrain the model") \
                from exc
    try:
        _check_config(path, config)
    except (TypeError, AttributeError, RecursionError) as exc:  # wrong types, absurd nesting
        raise ModelError(f"{path}: config.json is malformed ({type(exc).__name__}); "
                         "refusing to load") from exc


def _is_asset(name: str) -> bool:
    parts = name.split("/")
    return (name.startswith("assets/") and ".." not in parts and "" not in parts[1:-1]
            and not name.startswith("/") and "\\" not in name)


def _check_config(path: Path, node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _check_config(path, item)
        return
    if not isinstance(node, dict):
        return
    if "class_name" in node:
        key = (node.get("module"), node["class_name"])
        registered = node.get("registered_name")
        if key[0] == "rnncli.layers" and registered not in (None, f"rnncli>{key[1]}"):
            raise ModelError(f"{path}: layer {key[1]} is registered as {registered!r}, not as "
                             "rnncli's; refusing to load")
        if key == ("builtins", "function"):
            if node.get("config") not in _ALLOWED_FUNCTIONS:
                raise ModelError(f"{path}: model refers to function {node.get('config')!r}, "
                                 "which rnncli does not use; refusing to load")
        elif key not in _ALLOWED_CLASSES:
            raise ModelError(f"{path}: model contains {key[0]}.{key[1]}, which rnncli does not "
                             "build; refusing to load")
        if node["class_name"] == "TextVectorization":
            layer_config = node.get("config", {})
            if not isinstance(layer_config, dict):
                raise TypeError("a layer's config is not an object")
            if layer_config.get("vocabulary") is not None:
                raise ModelError(f"{path}: vectorizer names an outside vocabulary; "
                                 "refusing to load")
    for value in node.values():
        _check_config(path, value)


def check_model_dir(model_dir: str | Path, manifest: dict[str, Any] | None = None,
                    extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Everything that can be checked without TensorFlow: the manifest (read unless
    given), model.keras's and the ``extra`` files' hashes, the archive; returns the
    manifest."""
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir) if manifest is None else manifest
    verify_files(model_dir, manifest, names=(MODEL_FILE, *extra))
    check_archive(model_dir / MODEL_FILE)
    return manifest


def write_manifest(model_dir: Path, manifest: dict[str, Any]) -> None:
    manifest = dict(manifest)
    manifest["files"] = {name: sha256_file(model_dir / name)
                         for name in sorted(os.listdir(model_dir)) if name != MANIFEST}
    path = model_dir / MANIFEST
    text = json.dumps(manifest, indent=2, ensure_ascii=False, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")


def check_target(target: Path) -> None:
    """Refuse to replace anything that is not an rnncli model directory (before training)."""
    with fsio.writable(target):  # Path.exists fails on a name too long, for one
        fsio.check_parent(target)
        if target.exists() and not target.is_dir():
            raise UsageError(f"{target}: exists and is a file; choose another --out directory")
        if target.is_dir() and any(target.iterdir()) and not (target / MANIFEST).is_file():
            raise UsageError(f"{target}: exists, is not empty and is not an rnncli model "
                             "directory; choose another --out directory")
