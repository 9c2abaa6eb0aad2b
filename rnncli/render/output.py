"""Renderers for prediction records (stdout) and progress for people (stderr, via Rich);
evaluation figures and model info are rendered by ``tables.py``.

Results: table on a terminal, JSON / JSON lines / CSV when piped, chosen from ``isatty``
as httpie does. Progress and notes go to stderr only; Rich honours ``NO_COLOR``.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from typing import IO, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from rnncli.core.terminal import visible
from rnncli.inference.predict import SCORE_DIGITS

RECORD_FIELDS = ("text", "label", "score", "status")
TOP_CLASSES = 3  # classes a table shows for each text of a multi-class model


_LINE_BREAKS = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def to_json(value: Any, **kwargs: Any) -> str:
    """JSON with readable Unicode, but Unicode line breaks escaped so that every consumer
    (str.splitlines, JavaScript) sees one record per line."""
    text = json.dumps(value, ensure_ascii=False, **kwargs)
    for char, escaped in _LINE_BREAKS.items():
        text = text.replace(char, escaped)
    return text


def is_terminal(stream: IO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class PipeConsole(Console):
    """A Rich console whose closed pipe (`| head -1`) reaches rnncli's handler as a
    BrokenPipeError (exit 0, quietly), not Rich's SystemExit(1)."""

    def on_broken_pipe(self) -> None:
        raise BrokenPipeError


def cell(value: Any) -> Text:
    """A table cell holding text from data: escaped, never read as markup."""
    return Text(visible(str(value)))


def tell(console: Console, text: str) -> None:
    """A note for people (stderr): escaped, never read as markup."""
    console.print(visible(text, lines=True), markup=False, highlight=False)


def err_console() -> Console:
    return PipeConsole(file=sys.stderr, highlight=False, soft_wrap=True)


def out_console() -> Console:
    return PipeConsole(file=sys.stdout, highlight=False)


def resolve_format(fmt: str, *, piped: str = "jsonl") -> str:
    if fmt != "auto":
        return fmt
    return "table" if is_terminal(sys.stdout) else piped


def fmt_value(value: Any, digits: int = 4) -> str:
    """A figure as shown: 4 decimals, '-' for None."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


# --------------------------------------------------------------------------- predict


class RecordWriter:
    """Writes prediction records as they come; ``close`` finishes the document.

    Every format writes each batch when it is done (a table too: one table per batch),
    so a person typing gets each answer at once and memory stays flat on a long stream.
    ``classes``: the model's class names; CSV has a column ``score_<class>`` per class
    after the usual ones (``score`` is the label's own probability, so a two-class model's
    positive-class probability is its ``score_<positive>``), and with more than two
    classes a table shows the most probable ones.
    """

    def __init__(self, fmt: str, stream: IO | None = None, classes: tuple[str, ...] = ()):
        self.fmt = fmt
        self.stream = stream or sys.stdout
        self.classes = tuple(classes)
        self._count = 0
        self._csv = csv.writer(self.stream, lineterminator="\n") if fmt == "csv" else None
        if fmt == "csv":
            self._csv.writerow(RECORD_FIELDS + tuple(f"score_{c}" for c in self.classes))

    def write(self, records: list[dict[str, Any]]) -> None:
        if self.fmt == "table":
            if records:
                PipeConsole(file=self.stream, highlight=False).print(
                    _records_table(records, len(self.classes) > 2))
            self._count += len(records)
        for record in records if self.fmt != "table" else ():
            if self.fmt == "jsonl":
                self.stream.write(to_json(record) + "\n")
            elif self.fmt == "json":
                self.stream.write(("[\n" if self._count == 0 else ",\n") + to_json(record))
            elif self.fmt == "csv":
                scores = record.get("scores") or {}
                self._csv.writerow(["" if record[k] is None else record[k] for k in RECORD_FIELDS]
                                   + [scores.get(c, "") for c in self.classes])
            elif self.fmt == "label":
                self.stream.write((record["label"] or "") + "\n")
            self._count += 1
        self.stream.flush()

    def close(self) -> None:
        if self.fmt == "json":
            self.stream.write("[]\n" if self._count == 0 else "\n]\n")
        self.stream.flush()


def _records_table(records: list[dict[str, Any]], classes: bool = False) -> Table:
    table = Table(show_edge=False, header_style="bold")
    table.add_column("text", overflow="ellipsis", no_wrap=True, max_width=60)
    table.add_column("label")
    table.add_column("score", justify="right")
    if classes:
        table.add_column(f"top {TOP_CLASSES} classes")
    show_status = any(r["status"] != "ok" for r in records)
    if show_status:
        table.add_column("status")
    for r in records:
        # Text objects: a review is never read as Rich markup ('[/]' would crash it)
        # the score as every other format gives it, on whose value the label was decided
        cells = [cell(r["text"]), cell(r["label"] or "-"), fmt_value(r["score"], SCORE_DIGITS)]
        if classes:
            cells.append(cell(_top_classes(r.get("scores"))))
        if show_status:
            cells.append(r["status"])
        table.add_row(*cells)
    return table


def _top_classes(scores: dict[str, float] | None) -> str:
    """"positive 0.71  neutral 0.22  negative 0.07": the most probable classes first."""
    if not scores:
        return "-"
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])[:TOP_CLASSES]
    return "  ".join(f"{name} {p:.2f}" for name, p in ranked)


class StreamProgress:
    """A transient counter on stderr for long predictions (only on a terminal)."""

    def __init__(self, enabled: bool):
        self._progress = None
        if enabled:
            self._progress = Progress(SpinnerColumn(), TextColumn("scored {task.completed} lines"),
                                      TimeElapsedColumn(), console=err_console(), transient=True)
            self._task = self._progress.add_task("predict", total=None)
            self._progress.start()

    def update(self, done: int) -> None:
        if self._progress:
            self._progress.update(self._task, completed=done)

    def close(self) -> None:
        if self._progress:
            self._progress.stop()


# --------------------------------------------------------------------------- train


PROGRESS_EVERY = 60.0  # seconds between the plain reporter's lines within an epoch


class PlainReporter:
    """One plain line per epoch on stderr, for logs and pipes; in an epoch longer than
    PROGRESS_EVERY seconds, a progress line (rows, rows/s, time left) at most that often."""

    wants_batches = False

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.console = err_console()
        self.epochs, self.steps, self.rows, self.batch_size = 0, 0, 0, 0
        self.epoch, self._started, self._told, self._first = 0, 0.0, 0.0, 0

    def message(self, text: str) -> None:
        if not self.quiet:
            tell(self.console, text)

    def warning(self, text: str) -> None:
        """Something the user should act on: shown even with --quiet."""
        tell(self.console, f"warning: {text}")

    def train_begin(self, epochs: int, steps: int, rows: int = 0, batch_size: int = 0) -> None:
        """``rows``: training rows in an epoch, in ``steps`` batches of ``batch_size``
        (the last may be short); 0 if unknown: then no rows per second or time left."""
        self.epochs, self.steps, self.rows, self.batch_size = epochs, steps, rows, batch_size

    def epoch_begin(self, epoch: int, first_step: int = 0) -> None:
        """``first_step``: batches done before (an epoch resumed where it was cut)."""
        self.epoch, self._first = epoch, first_step
        self._started = self._told = time.perf_counter()

    def step_end(self, step: int) -> None:
        """A batch is done; its figures are not read (the plain reporter needs none)."""
        now = time.perf_counter()
        if now - self._told < PROGRESS_EVERY or step >= self.steps or not self.batch_size:
            return
        self._told = now
        done, rate, left = self._pace(step, now)
        self.message(f"epoch {self.epoch}/{self.epochs}  {done:,}/{self.rows:,} rows "
                     f"({done / self.rows:.0%})  {rate:,.0f} rows/s  about {_duration(left)} left")

    def batch_end(self, step: int, logs: dict[str, float]) -> None:
        pass

    def _pace(self, step: int, now: float) -> tuple[int, float, float]:
        """(rows done this epoch, rows per second, seconds left in it) after ``step``."""
        done, rate, _ = _pace(step - self._first, now - self._started, self.rows,
                              self.batch_size)
        done = min(step * self.batch_size, self.rows)
        return done, rate, (self.rows - done) / rate if rate else 0.0

    def epoch_end(self, epoch: int, logs: dict[str, float], seconds: float) -> None:
        self.message(f"epoch {epoch}/{self.epochs}  " + _metrics_text(logs) + f"  {seconds:.1f}s")

    def train_end(self) -> None:
        pass


class RichReporter(PlainReporter):
    """Progress bars for epochs and batches with live loss/accuracy, rows per second and
    the time left in the epoch, on a terminal."""

    wants_batches = True

    def train_begin(self, epochs: int, steps: int, rows: int = 0, batch_size: int = 0) -> None:
        super().train_begin(epochs, steps, rows, batch_size)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[metrics]}"), TextColumn("{task.fields[pace]}"),
            TimeElapsedColumn(), console=self.console, transient=True)
        self._epoch_task = self._progress.add_task("epoch", total=epochs, metrics="", pace="")
        self._batch_task = self._progress.add_task("batch", total=steps, metrics="", pace="")
        self._progress.start()

    def batch_end(self, step: int, logs: dict[str, float]) -> None:
        pace = ""
        if self.batch_size:
            _, rate, left = self._pace(step, time.perf_counter())
            pace = f"{rate:,.0f} rows/s  {_duration(left)} left"
        self._progress.update(self._batch_task, completed=step, metrics=_metrics_text(logs),
                              pace=pace)

    def epoch_end(self, epoch: int, logs: dict[str, float], seconds: float) -> None:
        self._progress.update(self._epoch_task, completed=epoch)
        self._progress.reset(self._batch_task, metrics="", pace="")
        self._progress.console.print(
            f"epoch {epoch}/{self.epochs}  " + _metrics_text(logs) + f"  {seconds:.1f}s",
            markup=False)

    def train_end(self) -> None:
        self._progress.stop()


def _pace(step: int, elapsed: float, rows: int, batch_size: int) -> tuple[int, float, float]:
    """(rows done this epoch, rows per second, seconds left in the epoch) after ``step``
    batches; rows are counted as steps x batch size, at most the epoch's ``rows``."""
    done = min(step * batch_size, rows)
    rate = done / elapsed if elapsed > 0 else 0.0
    return done, rate, (rows - done) / rate if rate else 0.0


def _duration(seconds: float) -> str:
    """"32s", "4m 10s", "2h 05m": a time left, to the second under an hour."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def train_reporter(quiet: bool) -> PlainReporter:
    if quiet:
        return PlainReporter(quiet=True)
    return RichReporter() if is_terminal(sys.stderr) else PlainReporter()


def _metrics_text(logs: dict[str, float | None]) -> str:
    """Epoch figures; a value that is not finite arrives as None (see training/fitloop.py)."""
    names = (("loss", "loss"), ("accuracy", "acc"), ("val_loss", "val_loss"),
             ("val_accuracy", "val_acc"))
    text = "  ".join(f"{short} {fmt_value(logs[key])}" for key, short in names if key in logs)
    if logs.get("val_perplexity") is not None:  # a language model's (training/pretrain.py)
        text += f"  val_perplexity {logs['val_perplexity']:.1f}"
    return text
