"""The options, parameter types and command class the commands share (main.py,
explain_report.py). Light: Click only."""

from __future__ import annotations

import click

from rnncli.core.config import ENGINES, RANGES, default
from rnncli.core.errors import EXIT_DATA, RnnCliError, UsageError

DEFAULT_MODEL_DIR = "rnncli-model"


class Probability(click.FloatRange):
    """A threshold in [0, 1]; NaN (which FloatRange lets through) is refused."""

    def __init__(self):
        super().__init__(0, 1)

    def convert(self, value, param, ctx):
        value = super().convert(value, param, ctx)
        if value != value:
            self.fail("nan is not a number in [0, 1]", param, ctx)
        return value


class DeviceType(click.ParamType):
    name = "device"

    def __init__(self, several: bool = False):
        self.several = several

    def convert(self, value, param, ctx):
        from rnncli.core.device_spec import parse_device  # light: syntax check only

        try:
            _, chosen = parse_device(value)
        except RnnCliError as exc:
            self.fail(exc.message, param, ctx)
        if not self.several and (chosen == "all" or (chosen and len(chosen) > 1)):
            self.fail(f"{value!r}: only 'rnncli train' runs on several devices; give one "
                      "(for example gpu:0)", param, ctx)
        return value.strip().lower()


def model_option(f):
    return click.option("-m", "--model", "model_dir", default=DEFAULT_MODEL_DIR,
                        envvar="RNNCLI_MODEL", show_default=True, show_envvar=True,
                        metavar="DIR", help="Model directory written by 'rnncli train'.")(f)


def device_option(f):
    return click.option("--device", type=DeviceType(), default="auto", show_default=True,
                        metavar="auto|cpu|gpu|gpu:N",
                        help="Where to run. 'auto': the ONNX engine runs on "
                             "the CPU, the TensorFlow engine takes a GPU when one is visible. "
                             "An absent GPU is an error, never a silent CPU fallback.")(f)


def engine_option(f):
    return click.option("--engine", type=click.Choice(ENGINES), default="auto",
                        show_default=True, help="onnx: ONNX Runtime on the CPU, no TensorFlow "
                        "(starts in a fraction of a second); tf: the Keras model in "
                        "TensorFlow, the reference. auto: onnx unless --device asks for a "
                        "GPU or the model has no ONNX files.")(f)


def train_device_option(f):
    return click.option("--device", type=DeviceType(several=True), default="auto",
                        show_default=True, metavar="auto|cpu|gpu|gpu:N|gpu:N,M|gpu:all",
                        help="Where to train. 'auto' takes a GPU when one is visible; an "
                             "absent GPU is an error, never a silent CPU fallback. Several "
                             "GPUs train together (MirroredStrategy); RNNCLI_CPU_DEVICES=N "
                             "splits the CPU into cpu:0..N-1 to try it.")(f)


def data_options(f):
    f = click.option("--show-skipped", is_flag=True,
                     help="List the line numbers of the rows skipped, by reason, on stderr.")(f)
    f = click.option("--encoding", default=None, metavar="NAME",
                     help="Text encoding of DATA [default: UTF-8, else detected (named on "
                          "stderr)].")(f)
    f = click.option("--label-col", default=None, metavar="NAME",
                     help="Label column [default: detected: label, sentiment, ...].")(f)
    f = click.option("--text-col", default=None, metavar="NAME",
                     help="Text column [default: detected: text, review, sentence, ...].")(f)
    return f


def setting(name: str, type_, help_: str, *, auto: bool = False):
    """An option whose default is TrainConfig's (defaults live only there); ``type_`` None:
    a number in config.RANGES[name]."""
    value = default(name)
    if type_ is None:
        allowed = RANGES[name]
        type_ = (click.IntRange(allowed.low, allowed.high) if allowed.whole else
                 click.FloatRange(allowed.low, allowed.high, min_open=allowed.low_open,
                                  max_open=allowed.high_open))
    flag = "--" + name.replace("_", "-")
    return click.option(flag, name, type=type_, default=value,
                        show_default="auto" if auto else True, help=help_)


class FailedLines:
    """The input lines that were not UTF-8 (scored as decoded with U+FFFD), counted as
    records stream by: how many, and the first few line numbers (bounded, however long
    the stream)."""

    def __init__(self, statuses: tuple[str, ...]):
        self.statuses = statuses  # predict.FAILED
        self.count, self.first, self.done = 0, [], 0

    def add(self, records: list[dict]) -> None:
        bad = [self.done + i + 1 for i, r in enumerate(records) if r["status"] in self.statuses]
        self.count, self.first = self.count + len(bad), (self.first + bad)[:5]
        self.done += len(records)

    def exit_if_any(self, ctx: click.Context, what: str) -> None:
        """Say which lines were not UTF-8 on stderr and exit 3; ``what``: what they got."""
        if self.count:
            where = ", ".join(map(str, self.first)) + (", ..." if self.count > 5 else "")
            click.echo(f"Error: {self.count} input line(s) not valid UTF-8 (line {where}); "
                       f"they have status invalid_utf8 (their {what} is of the text with "
                       "U+FFFD for the bad bytes); convert the input to UTF-8", err=True)
            ctx.exit(EXIT_DATA)


def check_data_file_options(data, text_col, label_col, encoding) -> None:
    """--text-col, --label-col and --encoding describe a DATA file (evaluate, report)."""
    if data is None and (text_col or label_col or encoding):
        raise UsageError("--text-col, --label-col and --encoding apply to a DATA file; the "
                         "saved test split needs none of them")
