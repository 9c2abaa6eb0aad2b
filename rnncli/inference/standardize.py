"""The text models' standardization in Python (``Standardizer``), for the ONNX engine:
the steps of ``model.standardize`` and ``model.standardize_cjk``, in their order, from
the character tables that training takes from TensorFlow itself (``serving.npz``), so
that nothing depends on the Unicode version of Python's own tables.

Light: imports numpy and ``re`` only.
"""

from __future__ import annotations

import re

import numpy as np

from rnncli.core.scripts import FULLWIDTH_TO_ASCII, SPLIT_MARKS

_TAGS = re.compile(r"<[^<>]{0,200}>")
_QUOTES = re.compile("[\u2018\u2019\u02bc`]")
_MARKS = re.compile(r"([!?])")
_EDGE_QUOTES = re.compile(r"(^|\s)'+|'+(\s|$)")
_SIGMA = "\u03a3"
_SPACES = re.compile(" {2,}")


def _char_class(ranges: np.ndarray) -> str:
    """A regex character class body for the (first, last) codepoint ranges."""
    def esc(cp: int) -> str:
        return f"\\U{cp:08x}"

    return "".join(esc(a) if a == b else f"{esc(a)}-{esc(b)}" for a, b in ranges.tolist())


class Standardizer:
    """``model.standardize`` (``split`` None) or ``model.standardize_cjk`` (``split``: the
    ranges of the characters that are tokens of their own) in Python: same steps, same
    order, same character tables."""

    def __init__(self, *, keep: np.ndarray, lower_from: np.ndarray, lower_to: list[str],
                 cased: np.ndarray, ignorable: np.ndarray, max_chars: int, start_token: str,
                 split: np.ndarray | None = None):
        self.max_chars = max_chars
        self.start = start_token + " "
        self._drop = re.compile(f"[^{_char_class(keep)}]+")
        self._split = None if split is None else re.compile(
            f"([{_char_class(split)}][{_char_class(np.array(SPLIT_MARKS))}]*)")
        kept = {c for a, b in keep.tolist() if a < 128 for c in range(a, min(b, 127) + 1)}
        self._ascii = {c: (c if c in kept else ord(" ")) for c in range(128)}
        self._ascii[ord("`")] = ord("'")  # the one ASCII character the quote step changes
        # Every character ICU's lower-casing changes, as it changes it; capital sigma
        # depends on its neighbours (below).
        self._lower = {c: t for c, t in zip(lower_from.tolist(), lower_to) if chr(c) != _SIGMA}
        self._cased = _charset(cased)
        self._ignorable = _charset(ignorable) - self._cased

    def lower(self, text: str) -> str:
        """ICU's lower case (root locale), from the tables."""
        if text.isascii():
            return text.lower()
        if _SIGMA not in text:
            return text.translate(self._lower)
        out, at = [], 0
        for i, piece in enumerate(text.split(_SIGMA)):
            if i:
                out.append("\u03c2" if self._final_sigma(text, at - 1) else "\u03c3")
            out.append(piece.translate(self._lower))
            at += len(piece) + 1
        return "".join(out)

    def _final_sigma(self, text: str, i: int) -> bool:
        """Unicode's Final_Sigma: a cased letter before (case-ignorable ones skipped), and
        none after; the character classes are ICU's."""
        before = i - 1
        while before >= 0 and text[before] in self._ignorable:
            before -= 1
        if before < 0 or text[before] not in self._cased:
            return False
        after = i + 1
        while after < len(text) and text[after] in self._ignorable:
            after += 1
        return after == len(text) or text[after] not in self._cased

    def char_form(self, char: str) -> str:
        """What the per-character steps make of one character (before characters are
        dropped): full-width forms, lower case (possibly two characters), quotes."""
        if char == "\x00":
            return " "
        if self._split is not None and not char.isascii():
            char = char.translate(FULLWIDTH_TO_ASCII)
        return _QUOTES.sub("'", self.lower(char))

    @staticmethod
    def blank_tags(text: str) -> str:
        """HTML-like tags as spaces of the same length (the standardizer drops them)."""
        return _TAGS.sub(lambda m: " " * len(m.group()), text) if "<" in text else text

    def __call__(self, text: str) -> str:
        text = text[: self.max_chars].replace("\x00", " ")
        if self._split is not None and not text.isascii():
            text = text.translate(FULLWIDTH_TO_ASCII)
        text = self.lower(text)
        if "<" in text:
            text = _TAGS.sub(" ", text)
        if text.isascii():
            # The quote and drop steps in one table: dropped characters become spaces
            # (spaces are dropped characters too), then each run becomes one space, as
            # the regular expression's "+" makes it.
            text = _SPACES.sub(" ", text.translate(self._ascii))
        else:
            text = self._drop.sub(" ", _QUOTES.sub("'", text))
            if self._split is not None:
                text = self._split.sub(r" \1 ", text)
        if "!" in text or "?" in text:
            text = _MARKS.sub(r" \1 ", text)
        # The edge-quote pattern needs a quote beside a space or at either end.
        if "' " in text or " '" in text or text.startswith("'") or text.endswith("'"):
            text = _EDGE_QUOTES.sub(" ", text)
        return self.start + text


def _charset(ranges: np.ndarray) -> frozenset[str]:
    return frozenset(chr(c) for a, b in ranges.tolist() for c in range(a, b + 1))
