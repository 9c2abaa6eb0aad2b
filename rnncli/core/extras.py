"""The optional parts of an install, and what a command says when one is missing.

``pip install rnncli`` predicts, evaluates, explains, serves and describes models with
ONNX Runtime alone; training, ``export``, ``devices`` and ``--engine tf`` need the
``train`` extra (TensorFlow, Keras, tf2onnx, onnx, SciPy), ``report`` the ``report`` extra
(matplotlib), the Ray job the ``ray`` extra. A command that needs a missing one says so
before it reads anything, with the one line that installs it (exit 2). Light: standard
library only; finding a package does not import it.
"""

from __future__ import annotations

import importlib.util

from rnncli.core.errors import UsageError

EXTRAS = {
    "train": ("tensorflow", "keras", "tf2onnx", "onnx", "scipy"),
    "report": ("matplotlib",),
    "ray": ("ray", "pandas", "pyarrow"),  # ray[data]: what Ray Data reads and writes with
}
NEEDED_BY = {
    "train": "training, export, devices and --engine tf",
    "report": "rnncli report",
    "ray": "the Ray job (python -m rnncli.ray_job)",
}


def missing(extra: str) -> list[str]:
    """The packages of ``extra`` that cannot be imported here."""
    absent = []
    for name in EXTRAS[extra]:
        try:
            found = importlib.util.find_spec(name) is not None
        except ValueError:  # sys.modules[name] is None: its import is blocked
            found = False
        if not found:
            absent.append(name)
    return absent


def install_line(extra: str) -> str:
    return f"pip install 'rnncli[{extra}]'"


def require(extra: str) -> None:
    """Exit 2 at once, with the install line, when ``extra`` is not installed."""
    absent = missing(extra)
    if absent:
        raise UsageError(f"{NEEDED_BY[extra]} need {', '.join(absent)}, which this install "
                         f"lacks: {install_line(extra)}")
