"""Rendering explanations (``inference/explain.py``) on stdout: the text with its words shaded on a
terminal, marked with signs elsewhere, or as JSON for programs."""

from __future__ import annotations

import os
import sys
import unicodedata
from typing import IO, Any

from rich.console import Console
from rich.text import Text

from rnncli.core.config import AUTO_BIGRAM_SHARE
from rnncli.render.output import PipeConsole, RecordWriter, fmt_value, is_terminal, visible

SHOWN_SHARE = 0.1  # a word is marked when its |contribution| is this share of the largest,
MIN_SHOWN = 0.01  # at least this many log-odds units,
SHOWN_MOST = 20  # and among this many words of the largest |contribution|
# Backgrounds, weakest to strongest, with black text: one hue for, one against; on a
# terminal of 8 or 16 colours (where those shades would all become white or one green),
# a coloured underlined word, then black on the colour, then bold.
FOR_STYLES = ("black on #d7ffd7", "black on #87d787", "black on #00af00")
AGAINST_STYLES = ("black on #ffd7d7", "black on #ff8787", "black on #d70000")
FOR_STYLES_16 = ("green underline", "black on green", "bold black on green")
AGAINST_STYLES_16 = ("red underline", "black on red", "bold black on red")
STATUS_TEXT = {"empty": "(empty line: nothing to explain)"}
SCORED_NOTE = {"truncated": "scored on the start of the line",
               "invalid_utf8": "scored with U+FFFD for the bytes that are not UTF-8"}
# Unicode names of the characters that are tokens of their own (model.SPLIT_CHARS)
_CHARACTER_TOKENS = ("CJK ", "HIRAGANA", "KATAKANA", "HALFWIDTH KATAKANA")


def token_noun(tokens: list[dict[str, Any]]) -> tuple[str, str]:
    """("word", "words"), or ("character", "characters") when most of the tokens are
    Chinese or Japanese characters (the share at which a model is one of characters)."""
    chars = sum(1 for t in tokens if t["token"]
                and unicodedata.name(t["token"][0], "").startswith(_CHARACTER_TOKENS))
    if tokens and chars / len(tokens) > AUTO_BIGRAM_SHARE:
        return "character", "characters"
    return "word", "words"


class ExplanationWriter:
    """Writes explanation records as they come: ``text`` (shaded words on a terminal, or
    with FORCE_COLOR, unless NO_COLOR is set; ``[+word]`` / ``[-word]`` marks otherwise),
    ``json`` or ``jsonl`` (the records as they are)."""

    def __init__(self, fmt: str, *, top: int = 5, stream: IO | None = None,
                 color: bool | None = None):
        self.fmt = fmt
        self.top = top
        self.stream = stream or sys.stdout
        if color is None:  # as Rich decides: NO_COLOR wins, FORCE_COLOR (say for less -R)
            color = ((is_terminal(self.stream) or bool(os.environ.get("FORCE_COLOR")))
                     and not os.environ.get("NO_COLOR"))
        self._records = RecordWriter(fmt, self.stream) if fmt in ("json", "jsonl") else None
        self._console = _console(self.stream, color)
        if color and self._console.color_system is None:  # TERM=dumb: no styles show
            color, self._console = False, _console(self.stream, False)
        self.color = color
        self._count = 0
        rich = self._console.color_system in ("truecolor", "256")
        self._styles = ((FOR_STYLES, AGAINST_STYLES) if rich
                        else (FOR_STYLES_16, AGAINST_STYLES_16))

    def write(self, records: list[dict[str, Any]]) -> None:
        if self._records is not None:
            self._records.write(records)
            return
        for record in records:
            if self._count:
                self._console.print()
            if self._count == 0:
                self._console.print(self._legend(*token_noun(record.get("tokens") or [])))
            for line in self.render(record):
                self._console.print(line)
            self._count += 1
        self.stream.flush()

    def close(self) -> None:
        if self._records is not None:
            self._records.close()

    def _legend(self, noun: str = "word", nouns: str = "words") -> Text:
        if not self.color:
            return Text(f"[+{noun}] counts towards the predicted label, [-{noun}] against it "
                        f"({nouns} that matter; numbers: change in log-odds)")
        legend = Text()
        legend.append(" for the predicted label ", self._styles[0][2]).append(" ")
        legend.append(" against it ", self._styles[1][2])
        legend.append("  darker: stronger; numbers: change in log-odds", "dim")
        return legend

    def render(self, record: dict[str, Any]) -> list[Text]:
        """The lines shown for one record."""
        if record["label"] is None:
            return [Text(f"{visible(record['text'])}  {STATUS_TEXT.get(record['status'], '')}")]
        head = Text(visible(record["label"]), style="bold")  # and its own probability
        head.append(f"  {fmt_value(record['scores'][record['label']], 4)}")
        if record["status"] != "ok":
            head.append(f"  ({record['status']}: {SCORED_NOTE[record['status']]})", "dim")
        lines = [head, self._body(record)]
        for name, sign in (("for", 1), ("against", -1)):
            chosen = sorted((t for t in record["tokens"]
                             if sign * t["contribution"] >= MIN_SHOWN),
                            key=lambda t: -sign * t["contribution"])[: self.top]
            if chosen:
                row = Text().append(f"{name}: ", "bold")
                row.append(", ".join(f"{visible(t['token'])} {t['contribution']:+.2f}"
                                     for t in chosen))
                lines.append(row)
        lines.extend(Text(note, style="dim") for note in cut_notes(record))
        return lines

    def _body(self, record: dict[str, Any]) -> Text:
        """The text the model read, each word that matters shaded or marked."""
        text = record["text"][: record["read_chars"]]
        body, at = Text(), 0
        for start, end, strength in shown_spans(record["tokens"]):
            body.append(visible(text[at:start]))
            word = visible(text[start:end])
            if self.color:
                styles = self._styles[0] if strength > 0 else self._styles[1]
                body.append(word, styles[min(int(abs(strength) * 3), 2)])
            else:
                body.append(f"[{'+' if strength > 0 else '-'}{word}]")
            at = end
        body.append(visible(text[at:]))
        if record["read_chars"] < len(record["text"]):
            body.append(" …")
        return body


def shown_spans(tokens: list[dict[str, Any]]) -> list[tuple[int, int, float]]:
    """(start, end, signed strength in -1..1) of the words that matter, in text order;
    touching words of one sign (Chinese characters, say) make one span, as strong as its
    strongest word."""
    placed = [t for t in tokens if t["start"] is not None]
    largest = max((abs(t["contribution"]) for t in placed), default=0.0)
    floor = max(SHOWN_SHARE * largest, MIN_SHOWN)
    strongest = sorted(range(len(placed)), key=lambda i: -abs(placed[i]["contribution"]))
    chosen = {i for i in strongest[:SHOWN_MOST] if abs(placed[i]["contribution"]) >= floor}
    spans: list[tuple[int, int, float]] = []
    for i, t in enumerate(placed):
        value = t["contribution"]
        if i not in chosen:
            continue
        strength = value / largest
        if spans and spans[-1][1] == t["start"] and (spans[-1][2] > 0) == (value > 0):
            first, _, before = spans.pop()
            strength = max(before, strength, key=abs)
            spans.append((first, t["end"], strength))
        else:
            spans.append((t["start"], t["end"], strength))
    return spans


def _console(stream: IO, color: bool) -> Console:
    """Styles and colours when ``color``; otherwise none at all (no bold either)."""
    return PipeConsole(file=stream, highlight=False, soft_wrap=not color,
                       force_terminal=color or None, color_system="auto" if color else None,
                       emoji=False, markup=False)


def cut_notes(record: dict[str, Any]) -> list[str]:
    """What was not read, when a text was longer than the model reads."""
    notes = []
    if record["read_chars"] is not None and record["read_chars"] < len(record["text"]):
        notes.append(f"the model read the first {record['read_chars']:,} of "
                     f"{len(record['text']):,} characters; the rest is not shown")
    read = record["network_tokens"]
    if read is not None and read < len(record["tokens"]):
        rest = ("the rest count through the n-gram model only" if record["rnn_weight"] < 1
                else "the rest are not read (the model has no n-gram part)")
        notes.append(f"the recurrent network read the first {read:,} of "
                     f"{len(record['tokens']):,} {token_noun(record['tokens'])[1]}; {rest}")
    return notes
