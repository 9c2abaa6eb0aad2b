"""HEAVY: TensorFlow import, device choice, seeds.

Everything here imports TensorFlow, lazily, through :func:`import_tensorflow`; the light
core and ``rnncli --help`` never reach this module (``--device`` syntax is checked by the
light core/device_spec.py).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import warnings

from rnncli.core.device_spec import CPU_DEVICES_ENV, parse_device
from rnncli.core.errors import DeviceError, RnnCliError

_chosen_devices: list[str] | None = None
_chosen_labels: list[str] | None = None  # the same devices as --device names them
_chosen_selection: tuple | None = None  # (kind, physical indexes, devices of that kind)


@contextlib.contextmanager
def stderr_to_file():
    """Send file descriptor 2 to a temporary file while TensorFlow's C++ code starts.

    TensorFlow 2.21 prints absl/oneDNN/CUDA lines during import even with
    TF_CPP_MIN_LOG_LEVEL=3; rnncli's stderr must carry only its own messages. If the
    import fails, what was captured is replayed so the cause is not lost. With --debug
    (RNNCLI_DEBUG) nothing is captured.
    """
    if os.environ.get("RNNCLI_DEBUG"):  # --debug: the lines that say why no GPU was found
        yield None
        return
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
    if sys.modules.get("tensorflow") is not None and sys.modules.get("keras") is not None:
        return sys.modules["tensorflow"]  # (None there means its import is blocked)
    _root_case_mapping()
    if not os.environ.get("RNNCLI_DEBUG"):  # --debug: TensorFlow's own log lines too
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if os.environ["KERAS_BACKEND"] != "tensorflow":
        raise RnnCliError(f"KERAS_BACKEND={os.environ['KERAS_BACKEND']!r}: rnncli needs the "
                          "tensorflow backend; unset KERAS_BACKEND")
    from rnncli.core.extras import require

    require("train")  # the one check for every TensorFlow path (train checks earlier too)
    with stderr_to_file():
        import keras  # noqa: F401
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")
        if not os.environ.get("RNNCLI_DEBUG"):
            # Keras's advice (e.g. on shuffling a tf.data input) is for Keras users, not
            # for rnncli's; --debug / RNNCLI_DEBUG keeps it.
            warnings.filterwarnings("ignore", category=UserWarning, module=r"keras(\.|$)")
        # Touch the device list here so CUDA start-up chatter lands in the sink too.
        tf.config.list_physical_devices()
    return tf


# Locales whose lower-casing ICU changes (Turkish and Azeri dotless i, Lithuanian accents).
_CASING_LOCALES = ("tr", "az", "lt")


def _root_case_mapping() -> None:
    """``tf.strings.lower`` lower-cases by ICU's default locale, which ICU takes from the
    environment (LC_ALL, then LC_MESSAGES, then LANG): under a Turkish locale "I" would
    become "ı", and a model would tokenize differently on different machines. Where the
    environment names such a locale, LC_ALL is set to C.UTF-8 in this process before
    ICU first reads it (Python's own locale, set at start-up, is not changed)."""
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(name, "")
        if value:
            if re.split(r"[_.@-]", value.lower())[0] in _CASING_LOCALES:
                os.environ["LC_ALL"] = "C.UTF-8"
            return


def select_device(spec: str = "auto") -> str:
    """:func:`select_devices` for commands that run on one device (predict, evaluate)."""
    names = select_devices(spec)
    if len(names) > 1:
        raise DeviceError(f"--device {spec}: only training runs on several devices; give "
                          "one here (for example gpu:0)")
    return names[0]


def select_devices(spec: str = "auto") -> list[str]:
    """Make only the requested devices visible; return their TensorFlow names.

    Asking for a GPU that is absent is an error listing what exists: TensorFlow itself
    would silently place the work on the CPU. Must run before TensorFlow touches a GPU.
    """
    global _chosen_devices, _chosen_selection, _chosen_labels
    kind, chosen = parse_device(spec)
    tf = import_tensorflow()
    gpus = tf.config.list_physical_devices("GPU")
    if kind == "auto":
        kind, chosen = ("gpu", None) if gpus else ("cpu", None)
    total = len(gpus) if kind == "gpu" else _cpu_count()
    selection = (kind, tuple(range(total)) if chosen == "all" else chosen or (0,), total)
    try:
        if kind == "cpu":
            count = _split_cpu(tf)
            indexes = range(count) if chosen == "all" else chosen or (0,)
            if max(indexes) >= count:
                raise DeviceError(f"{spec} requested but there is {_cpus(count)}; set "
                                  f"{CPU_DEVICES_ENV}=N to split the CPU into N devices")
            tf.config.set_visible_devices([], "GPU")
            names = [f"/CPU:{i}" for i in indexes]
        else:
            indexes = range(len(gpus)) if chosen == "all" else chosen or (0,)
            if not gpus or max(indexes) >= len(gpus):
                raise DeviceError(f"{spec} requested but {_available(gpus)}; "
                                  "use --device cpu or auto")
            visible = [gpus[i] for i in indexes]
            tf.config.set_visible_devices(visible, "GPU")
            for gpu in visible:
                tf.config.experimental.set_memory_growth(gpu, True)
            names = [f"/GPU:{i}" for i in range(len(visible))]  # renumbered once visible
    except RuntimeError as exc:  # devices already initialized in this process
        if _chosen_devices is None or _chosen_selection != selection:
            raise DeviceError(f"cannot select {spec}: this process already runs on "
                              f"{', '.join(_chosen_devices or ['another device'])} "
                              f"({exc})") from exc
        return _chosen_devices
    _chosen_devices, _chosen_selection = names, selection
    # TensorFlow renumbers the visible GPUs from 0; people know them by their own numbers.
    _chosen_labels = [f"{kind}:{i}" for i in indexes]
    return names


def chosen_labels() -> list[str]:
    """The devices the last :func:`select_devices` chose, as ``--device`` names them
    (``gpu:2,gpu:3``, where TensorFlow now calls them /GPU:0 and /GPU:1)."""
    return list(_chosen_labels or [])


def _cpu_count() -> int:
    raw = os.environ.get(CPU_DEVICES_ENV, "1").strip()
    if not raw.isdigit() or not 1 <= int(raw) <= 64:
        raise DeviceError(f"{CPU_DEVICES_ENV}={raw!r}: give a whole number from 1 to 64")
    return int(raw)


def _split_cpu(tf) -> int:
    """Apply RNNCLI_CPU_DEVICES (before TensorFlow starts); return the logical CPU count."""
    count = _cpu_count()
    if count > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    return count


def _cpus(count: int) -> str:
    return "one CPU device (cpu:0)" if count == 1 else f"{count} CPU devices (cpu:0-{count - 1})"


def device_scope(names: list[str], strategy=None):
    """Where to build and fit a model: one device, or a MirroredStrategy over several
    (each batch is split evenly between them and their gradients are all-reduced, so
    one step learns from the whole global batch), or ``strategy`` when given (several
    machines, :func:`multi_worker_strategy`)."""
    tf = import_tensorflow()
    if strategy is not None:
        return strategy.scope()
    if len(names) == 1:
        return tf.device(names[0])
    return tf.distribute.MirroredStrategy(devices=names).scope()


def precision_policy(mixed_precision: bool | str, device_names: list[str]) -> str:
    """The Keras dtype policy for the recurrent network.

    ``--mixed-precision``: float16 compute on GPUs (tensor cores; Keras scales the loss so
    small gradients survive), bfloat16 on CPUs (the same range as float32, so no scaling;
    fast only where the CPU has bfloat16 instructions). Weights stay float32 either way,
    and the saved model computes in float32. A policy name may be given directly.
    """
    if isinstance(mixed_precision, str):
        return mixed_precision
    if not mixed_precision:
        return "float32"
    return "mixed_float16" if device_names[0].upper().startswith("/GPU") else "mixed_bfloat16"


@contextlib.contextmanager
def dtype_policy(name: str):
    """Layers built inside compute with the ``name`` policy; the global one is restored."""
    import_tensorflow()
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


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
                    major, minor = info["compute_capability"]
                    detail += f" (compute capability {major}.{minor})"
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
