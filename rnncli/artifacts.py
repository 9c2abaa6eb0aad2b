"""The model directory contract: manifest, atomic publish, safe loading.

A model directory holds:
    rnncli.json     the manifest (format version, versions, settings, labels, threshold,
                    history, figures, data fingerprint, sha256 of every other file)
    model.keras     Keras model: raw strings in, positive-class probability out
    test.jsonl.gz   the held-out test split (``text``, ``label``), for ``rnncli evaluate``
    core.onnx       the recurrent network for the ONNX engine (``engine.py``), and
    serving.npz     what that engine needs around it; both absent in older models

Light core: reading the manifest and checking the archive need no TensorFlow; only
:func:`load_model` imports it. Loading never runs code from the model: hashes are checked
first, the archive's members and config are checked against what rnncli itself builds,
then Keras loads with ``safe_mode=True``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import json
import math
import os
import shutil
import tempfile
import zipfile
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

from rnncli.config import TrainConfig
from rnncli.errors import ModelError, RnnCliError, UsageError

# 3: settings.tokenizer ("cjk-chars": Chinese and Japanese characters are tokens);
# 2: the n-gram model and blend (settings.ngrams, manifest.blend); 1 and 2 still load.
FORMAT_VERSION = 3
MANIFEST = "rnncli.json"
MODEL_FILE = "model.keras"
TEST_FILE = "test.jsonl.gz"
ONNX_FILE = "core.onnx"  # the ONNX engine's network (engine.py)
SERVING_FILE = "serving.npz"  # and what it needs around it (serving.py)
MAX_MANIFEST_BYTES = 16 * 2**20
MAX_ARCHIVE_BYTES = 4 * 2**30
MAX_RATIO = 200  # uncompressed / compressed, per member; zip bombs go far beyond

# (module, class_name) pairs that may appear in model.keras's config.json: exactly what
# model.build_* creates. Anything else (a Lambda, a foreign module) is refused.
_KERAS_LAYERS = {"InputLayer", "TextVectorization", "Embedding", "SpatialDropout1D",
                 "Bidirectional", "GRU", "LSTM", "Dropout", "Dense", "GlobalAveragePooling1D"}
_RNNCLI_LAYERS = {"Truncate", "MaskedMaxPooling", "AttentionPooling", "NgramLogistic",
                  "Blend", "TokenPairs"}
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
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
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
        manifest["config"] = TrainConfig.from_dict(manifest["settings"])
        labels = manifest["labels"]
        names = (str(labels["negative"]), str(labels["positive"]))
        manifest["label_names"] = names
        manifest["threshold"] = float(manifest["threshold"])
        if not 0 <= manifest["threshold"] <= 1:  # NaN too
            raise ValueError("threshold")
        files = manifest["files"]
        if not isinstance(files, dict) or MODEL_FILE not in files:
            raise KeyError("files")
        for section in ("data", "training", "blend", "validation", "test"):
            if not isinstance(manifest.get(section) or {}, dict):
                raise TypeError(section)
    except (KeyError, TypeError, ValueError, RnnCliError) as exc:
        detail = exc.message if isinstance(exc, RnnCliError) else f"missing or bad {exc}"
        raise ModelError(f"{path}: manifest is incomplete ({detail}); retrain the model") \
            from exc
    return manifest


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
            if total > MAX_ARCHIVE_BYTES or (
                    info.file_size > 2**20 and info.file_size > MAX_RATIO * max(1, info.compress_size)):
                raise ModelError(f"{path}: archive member {name!r} is implausibly large; "
                                 "refusing to load")
        try:
            config = json.loads(archive.read("config.json"))
        except (KeyError, json.JSONDecodeError, UnicodeDecodeError, zipfile.BadZipFile,
                RecursionError) as exc:
            raise ModelError(f"{path}: archive has no readable config.json; retrain the model") \
                from exc
    try:
        _check_config(path, config)
    except (TypeError, RecursionError) as exc:  # values of the wrong type, absurd nesting
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
            vocab = node.get("config", {}).get("vocabulary")
            if vocab is not None:
                raise ModelError(f"{path}: vectorizer names an outside vocabulary; "
                                 "refusing to load")
    for value in node.values():
        _check_config(path, value)


def check_model_dir(model_dir: str | Path) -> dict[str, Any]:
    """Everything that can be checked without TensorFlow; returns the manifest."""
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    verify_files(model_dir, manifest)
    check_archive(model_dir / MODEL_FILE)
    return manifest


def load_keras_model(model_dir: str | Path):
    """Load ``model.keras`` with ``safe_mode=True``; call :func:`check_model_dir` first."""
    from rnncli import model as _model  # noqa: F401  (registers rnncli>standardize*)
    import keras

    path = Path(model_dir) / MODEL_FILE
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a bad archive
        raise ModelError(f"{path}: Keras cannot load it ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); "
                         "retrain the model") from exc


def load_model(model_dir: str | Path):
    """(manifest, Keras text model): checks hashes and archive first, then loads safely."""
    manifest = check_model_dir(model_dir)
    return manifest, load_keras_model(model_dir)


# --------------------------------------------------------------------------- writing


def resolve_output(path: str | Path) -> Path:
    """An output path; a symlink is followed, so the link stays and its target is replaced."""
    path = Path(path)
    if not path.is_symlink():
        return path
    try:
        return path.resolve(strict=False)
    except (RuntimeError, OSError) as exc:  # a symlink loop
        raise UsageError(f"{path}: cannot follow this symlink ({exc}); choose another "
                         "output location") from exc


def check_parent(target: Path) -> None:
    """The nearest existing parent of ``target`` must be a directory we may write in."""
    for parent in target.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{target}: {parent} is a file, not a directory; choose "
                                 "another --out")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise UsageError(f"{target}: cannot write in {parent} (permission denied); "
                                 "choose another --out")
            return


def check_target(target: Path) -> None:
    """Refuse to replace anything that is not an rnncli model directory (before training)."""
    with _writable(target):  # Path.exists fails on a name too long, for one
        check_parent(target)
        if target.exists() and not target.is_dir():
            raise UsageError(f"{target}: exists and is a file; choose another --out directory")
        if target.is_dir() and any(target.iterdir()) and not (target / MANIFEST).is_file():
            raise UsageError(f"{target}: exists, is not empty and is not an rnncli model "
                             "directory; choose another --out directory")


@contextlib.contextmanager
def _writable(target: Path):
    """OS errors while preparing an output location are the user's to fix: exit 2."""
    try:
        yield
    except OSError as exc:
        raise UsageError(f"{target}: cannot write there ({exc.strerror or exc}); choose "
                         "another output location") from exc


@contextlib.contextmanager
def lock(target: Path):
    """Hold an exclusive lock on ``target`` for a whole training run."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; publishing is still atomic
        yield
        return
    with _writable(target):
        target.parent.mkdir(parents=True, exist_ok=True)
    path = target.parent / f".{target.name}.lock"
    while True:
        with _writable(target):
            fh = open(path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            fh.close()
            raise UsageError(f"{target}: another rnncli train is writing this model "
                             "directory; wait for it or choose another --out") from exc
        # The holder before us unlinks the file on release; make sure we locked the file
        # that is at the path now, not one that was just removed.
        try:
            if os.fstat(fh.fileno()).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        fh.close()
    try:
        _remove_leftovers(target)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # leave no litter beside the model directory
        fh.close()  # releases the lock


def free_bytes(directory: Path) -> int | None:
    """Free space where ``directory`` is (or would be created); None if unknown."""
    for path in (directory, *directory.absolute().parents):
        if path.exists():
            try:
                return shutil.disk_usage(path).free
            except OSError:
                return None
    return None


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


_ITEMSIZE = {"float16": 2, "bfloat16": 2, "float64": 8, "int64": 8, "int8": 1, "uint8": 1}


def weight_bytes(*objects) -> int:
    """Bytes of the variables of Keras models / optimizers (what a save writes, roughly)."""
    return sum(math.prod(v.shape) * _ITEMSIZE.get(str(v.dtype), 4)
               for o in objects if o is not None for v in o.variables)


def _remove_leftovers(target: Path) -> None:
    """Staging directories of a run that was killed (SIGKILL, power loss) before it could
    clean up; safe under the lock, since no other run writes beside ``target``."""
    for stale in target.parent.glob(f".{glob_escape(target.name)}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in target.parent.glob(f".{glob_escape(target.name)}.old-*"):
        if target.is_dir():  # the swap finished; the old model is no longer needed
            shutil.rmtree(stale, ignore_errors=True)
        elif not target.exists():  # killed between the two renames: put the old one back
            os.rename(stale, target)


@contextlib.contextmanager
def staging(target: Path):
    """A fresh directory beside ``target``; removed again unless it was published."""
    with _writable(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would make the published model private
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_manifest(model_dir: Path, manifest: dict[str, Any]) -> None:
    manifest = dict(manifest)
    manifest["files"] = {name: sha256_file(model_dir / name)
                         for name in sorted(os.listdir(model_dir)) if name != MANIFEST}
    path = model_dir / MANIFEST
    text = json.dumps(manifest, indent=2, ensure_ascii=False, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")


def publish(staged: Path, target: Path) -> None:
    """Swap a verified staged directory into place: the old model or the new, never a mix."""
    for path in staged.iterdir():
        _fsync(path)
    _fsync(staged)
    if not target.exists():
        os.rename(staged, target)
    elif _exchange(staged, target):
        shutil.rmtree(staged, ignore_errors=True)  # now holds the old model
    else:  # no renameat2: two renames, the old model kept aside until the new one is in
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.rename(target, old)
        try:
            os.rename(staged, target)
        except OSError:
            os.rename(old, target)  # put the old model back before reporting the failure
            raise
        shutil.rmtree(old, ignore_errors=True)
    _fsync(target.parent)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with Linux renameat2(RENAME_EXCHANGE); False if unsupported."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    if not hasattr(libc, "renameat2"):
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # directories cannot be fsynced on every filesystem
    finally:
        os.close(fd)
