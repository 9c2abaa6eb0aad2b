"""What a terminal may be sent. Light: standard library only, so that even the error
path of a mistyped option can use it."""

from __future__ import annotations

_CONTROL = {c: f"\\x{c:02x}" for c in [*range(32), *range(127, 160)] if chr(c) != "\t"}
_CONTROL_BUT_NEWLINE = {c: escaped for c, escaped in _CONTROL.items() if c != ord("\n")}


def visible(text: str, *, lines: bool = False) -> str:
    """Text from data (or holding some: a file or column name in a message), as a
    terminal must show it: control characters shown escaped, as \\x1b (an escape sequence
    in a review could clear the screen or retitle the window); ``lines`` keeps line
    breaks, for a message of several lines. Every renderer that writes such text to a
    terminal passes it through here (tables, notes, errors, serve's log), and prints it
    without Rich markup (``Text``, or ``markup=False``)."""
    return text.translate(_CONTROL_BUT_NEWLINE if lines else _CONTROL)
