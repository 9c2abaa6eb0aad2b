"""What training tells a person beyond its progress: a validation or test split too
small for its figures to mean much, why training stopped and which epoch's weights are
kept, and after Ctrl-C or SIGTERM what became of the model directory. Light."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

from rnncli.core.errors import Terminated
from rnncli.modeldir import artifacts

# An accuracy measured on n rows has a standard error of sqrt(p(1-p)/n), at most
# 0.5/sqrt(n): under 100 rows that bound is over 0.05, so the figure says little.
SMALL_SPLIT_ROWS = 100


def accuracy_error(rows: int) -> float:
    """The largest standard error of an accuracy measured on ``rows`` rows."""
    return 0.5 / math.sqrt(rows)


def split_warnings(validation_rows: int, test_rows: int) -> list[str]:
    """Warnings for a validation or test split too small for its figures to mean much."""
    uses = {"validation": "early stopping, the blend and the calibration rest on it",
            "test": "the figures of rnncli evaluate come from it"}
    warnings = []
    for name, rows in (("validation", validation_rows), ("test", test_rows)):
        if 0 < rows < SMALL_SPLIT_ROWS:
            warnings.append(
                f"the {name} split has only {rows} rows ({uses[name]}): an accuracy on it "
                f"has a standard error of up to {accuracy_error(rows):.2f} (0.5/sqrt(n)); "
                f"{SMALL_SPLIT_ROWS} rows bring that to {accuracy_error(SMALL_SPLIT_ROWS):.2f}"
                f": add rows or raise --{'val' if name == 'validation' else 'test'}-split")
    return warnings


def _model_identity(out: Path) -> tuple[int, int] | None:
    """Which model ``out`` holds (its manifest's inode and modification time), or None."""
    try:
        found = (out / artifacts.MANIFEST).stat()
    except OSError:
        return None
    return found.st_ino, found.st_mtime_ns


@contextlib.contextmanager
def outcome_on_interrupt(out: Path):
    """On Ctrl-C or SIGTERM, add to the interrupt what became of ``out`` (its ``outcome``;
    the fit loop gives its ``where``), which cli/main.py shows on one line."""
    before = _model_identity(out)
    try:
        yield
    except (KeyboardInterrupt, Terminated) as exc:
        now = _model_identity(out)
        if now is None:
            outcome = "no model was written"
        elif now == before:
            outcome = "an existing model there was left as it was"
        else:  # interrupted after the new model was published
            outcome = f"the new model was saved to {out}"
        exc.outcome = outcome  # shown by cli/main.py's _interrupted
        raise


def stopping_note(history: list[dict[str, Any]], best_epoch: int, epochs: int) -> str | None:
    """Why training ended before ``epochs``, and which epoch's weights are kept (early
    stopping restores the best one), or None when the last epoch is kept."""
    done = len(history)
    if not done or not best_epoch:
        return None
    kept = f"keeping epoch {best_epoch}'s weights"
    if done < epochs:
        if history[-1].get("loss") is None or history[-1].get("val_loss") is None:
            return f"stopped after epoch {done}: the loss is not finite (diverged); {kept}"
        waited = done - best_epoch
        return (f"stopped early after epoch {done}: validation loss had not improved for "
                f"{waited} epoch{'s' if waited != 1 else ''}; {kept}")
    if best_epoch < done:
        return f"{kept}, the lowest validation loss of the {done}"
    return None


def classes_note(names: tuple[str, ...], counts: dict[str, int]) -> str:
    """"positive label 'x'", or "3 classes ('a' 10, 'b' 20, 'c' 5 rows)"."""
    if len(names) == 2:
        return f"positive label {names[1]!r}"
    listed = ", ".join(f"{name!r} {counts[name]}" for name in names)
    return f"{len(names)} classes ({listed} rows)"
