"""HEAVY: TensorFlow import, device choice, seeds.

Everything here imports TensorFlow, lazily, through :func:`import_tensorflow`; the light
core and ``rnncli --help`` never reach this module.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import warnings

from rnncli.errors import DeviceError, RnnCliError

_DEVICE_RE = re.compile(r"^(auto|cpu|gpu)(?::(\d+))?$")
_chosen_device: str | None = None


def parse_device(spec: str) -> tuple[str, int | None]:
    """'auto' | 'cpu' | 'gpu' | 'gpu:N' -> (kind, index). Syntax only; probes nothing."""
    match = _DEVICE_RE.match(spec.strip().lower())
    if not match or (match.group(2) is not None and match.group(1) != "gpu"):
        raise DeviceError(f"unknown device {spec!r}; use auto, cpu, gpu or gpu:N")
    index = match.group(2)
    return match.group(1), None if index is None else int(index)


@contextlib.contextmanager
def _stderr_to_file():
    """Send file descriptor 2 to a temporary file while TensorFlow's C++ code starts.

    TensorFlow 2.21 prints absl/oneDNN/CUDA lines during import even with
    TF_CPP_MIN_LOG_LEVEL=3; rnncli's stderr must carry only its own messages. If the
    import fails, what was captured is replayed so the cause is not lost.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield sink
        except Exception:  # not on Ctrl-C: that is no failure to explain
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def import_tensorflow():
    """Import TensorFlow and Keras quietly; returns the ``tensorflow`` module."""
    if "tensorflow" in sys.modules and "keras" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if os.environ["KERAS_BACKEND"] != "tensorflow":
        raise RnnCliError(f"KERAS_BACKEND={os.environ['KERAS_BACKEND']!r}: rnncli needs the "
                          "tensorflow backend; unset KERAS_BACKEND")
    with _stderr_to_file():
        import tensorflow as tf
        import keras  # noqa: F401

        tf.get_logger().setLevel("ERROR")
        if not os.environ.get("RNNCLI_DEBUG"):
            # Keras's advice (e.g. on shuffling a tf.data input) is for Keras users, not
            # for rnncli's; --debug / RNNCLI_DEBUG keeps it.
            warnings.filterwarnings("ignore", category=UserWarning, module=r"keras(\.|$)")
        # Touch the device list here so CUDA start-up chatter lands in the sink too.
        tf.config.list_physical_devices()
    return tf


def select_device(spec: str = "auto") -> str:
    """Make only the requested device visible and return its TensorFlow name.

    Asking for a GPU that is absent is an error listing what exists: TensorFlow itself
    would silently place the work on the CPU. Must run before TensorFlow touches a GPU.
    """
    global _chosen_device
    kind, index = parse_device(spec)
    tf = import_tensorflow()
    gpus = tf.config.list_physical_devices("GPU")
    if kind == "auto":
        kind, index = ("gpu", 0) if gpus else ("cpu", None)
    try:
        if kind == "cpu":
            tf.config.set_visible_devices([], "GPU")
            name = "/CPU:0"
        else:
            index = index or 0
            if index >= len(gpus):
                raise DeviceError(f"{spec} requested but {_available(gpus)}; "
                                  "use --device cpu or auto")
            tf.config.set_visible_devices([gpus[index]], "GPU")
            tf.config.experimental.set_memory_growth(gpus[index], True)
            name = "/GPU:0"
    except RuntimeError as exc:  # devices already initialized in this process
        if _chosen_device is None or _chosen_device != ("/CPU:0" if kind == "cpu" else "/GPU:0"):
            raise DeviceError(f"cannot select {spec}: this process already runs on "
                              f"{_chosen_device or 'another device'} ({exc})") from exc
        return _chosen_device
    _chosen_device = name
    return name


def _available(gpus) -> str:
    if not gpus:
        return "TensorFlow sees no GPU (available: cpu)"
    names = ", ".join(f"gpu:{i}" for i in range(len(gpus)))
    return f"only {len(gpus)} GPU(s) are visible (available: cpu, {names})"


def list_devices() -> list[dict[str, str]]:
    """What TensorFlow can run on, with the --device value that selects each."""
    tf = import_tensorflow()
    rows = []
    gpu_index = 0
    for device in tf.config.list_physical_devices():
        kind = device.device_type.lower()
        detail = ""
        if kind == "gpu":
            try:
                info = tf.config.experimental.get_device_details(device)
                detail = info.get("device_name", "")
                if "compute_capability" in info:
                    detail += " (compute capability %d.%d)" % info["compute_capability"]
            except (ValueError, RuntimeError):
                detail = ""
            option = f"gpu:{gpu_index}"
            gpu_index += 1
        elif kind == "cpu":
            option = "cpu"
            detail = f"{os.cpu_count()} logical cores"
        else:
            option = ""
        rows.append({"name": device.name, "type": device.device_type, "option": option,
                     "details": detail.strip()})
    rows.append({"name": "tensorflow", "type": "version", "option": "",
                 "details": f"{tf.__version__} (built with CUDA: {tf.test.is_built_with_cuda()})"})
    return rows


def set_seed(seed: int) -> None:
    import_tensorflow()
    import keras

    keras.utils.set_random_seed(seed)
