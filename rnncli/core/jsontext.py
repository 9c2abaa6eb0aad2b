"""JSON from outside (request bodies, data files, manifests, kept state, TF_CONFIG): one
parse whose every failure is one exception with a one-line reason.

``json.loads`` fails in three ways: ``JSONDecodeError`` for bad syntax, ``RecursionError``
for absurd nesting, and a plain ``ValueError`` for an integer of more than 4,300 digits
(CPython's limit on int(str), which the parser applies). Catching only the first lets the
others through as "unexpected" errors and 500s. Light: standard library only.
"""

from __future__ import annotations

import json
from typing import Any


class BadJSON(ValueError):
    """Text that is not JSON we can use; ``reason`` says why, in a few words."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def loads(text: str | bytes) -> Any:
    """``json.loads`` with every way of failing turned into :class:`BadJSON`."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadJSON(f"{exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except RecursionError:
        raise BadJSON("nested too deeply") from None
    except UnicodeDecodeError as exc:  # bytes that are not UTF-8 (or UTF-16/32)
        raise BadJSON(f"not UTF-8 text (byte {exc.start})") from None
    except ValueError as exc:  # "Exceeds the limit (4300 digits) for integer string conversion"
        raise BadJSON(f"a number too long to read ({str(exc).split(':')[0]})") from None
