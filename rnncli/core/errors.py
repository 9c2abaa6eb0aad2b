"""Errors a user can act on, each with its documented exit code.

Raised anywhere in the core; rendered once, in ``cli/main.py``. No click import here.
"""

from __future__ import annotations

# Documented in README.md ("Exit codes"); tests assert every one of them.
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_DATA = 3
EXIT_MODEL = 4
EXIT_DEVICE = 5
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


def first_line(exc: BaseException, limit: int = 200, *, with_type: bool = False) -> str:
    """An exception's first line, cut to ``limit`` characters, for a one-line message;
    its type name when it has no message (or before the message, ``with_type``)."""
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    return f"{type(exc).__name__}: {lines[0][:limit]}" if with_type else lines[0][:limit]


class RnnCliError(Exception):
    """Base class: a message for the user and the exit code that goes with it."""

    exit_code = EXIT_UNEXPECTED

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class UsageError(RnnCliError):
    """Options that do not fit together (beyond what Click checks itself)."""

    exit_code = EXIT_USAGE


class DataError(RnnCliError):
    """An input file or input text that cannot be used as given."""

    exit_code = EXIT_DATA


class ModelError(RnnCliError):
    """A model directory that is missing, incomplete, corrupt or not rnncli's."""

    exit_code = EXIT_MODEL


class DeviceError(RnnCliError):
    """A requested device that TensorFlow cannot see."""

    exit_code = EXIT_DEVICE


class Terminated(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so that ``finally`` blocks clean up."""
