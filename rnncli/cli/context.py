"""The Click context and command class of every rnncli command. Light: Click, os and sys
only, so that ``rnncli --help`` imports nothing else from the commands' modules."""

from __future__ import annotations

import os
import sys

import click


class RnnCliContext(click.Context):
    def make_formatter(self) -> click.HelpFormatter:
        """Click's help formatter at the width Click would choose, found without importing
        shutil: Click imports it (and with it bz2, lzma and zlib, about 4 ms of a 60 ms
        ``--help``) only to call ``shutil.get_terminal_size``."""
        width = self.terminal_width or click.formatting.FORCED_WIDTH  # CliRunner's 80
        if width is None:
            width = max(min(_terminal_columns(), self.max_content_width or 80) - 2, 50)
        return self.formatter_class(width=width, max_width=self.max_content_width)


def _terminal_columns() -> int:
    """``shutil.get_terminal_size().columns``: $COLUMNS, else the terminal's, else 80."""
    try:
        columns = int(os.environ.get("COLUMNS", ""))  # int() as shutil reads it: " 60", "+60"
    except ValueError:  # unset, "", "wide", "²"
        columns = 0
    if columns > 0:
        return columns
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80
    except (AttributeError, ValueError, OSError):  # no stdout, closed, not a terminal
        return 80


class RnnCliCommand(click.Command):
    context_class = RnnCliContext
