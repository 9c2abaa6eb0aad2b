"""The command line: the group, the one error handler and the entry point.

The commands live in the modules ``COMMANDS`` names and are imported when one runs (or
its help is shown), so ``rnncli --help`` and ``--version`` import none of them: only
Click and this floor's light modules. TensorFlow is reached inside the commands that need
it.
"""

from __future__ import annotations

import errno
import importlib
import os
import signal
import sys

import click

from rnncli.cli.context import RnnCliCommand, RnnCliContext
from rnncli.core.errors import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_UNEXPECTED,
    EXIT_USAGE,
    RnnCliError,
    Terminated,
)
from rnncli.core.terminal import visible
from rnncli.core.version import __version__

# name: (its module in rnncli/cli/, the first paragraph of its help, which `rnncli --help`
# shortens and lists without importing the module; tests/test_cli_light.py holds the two
# equal)
COMMANDS = {
    "devices": ("models",
        "List the devices TensorFlow can run on, with their --device names."),
    "evaluate": ("score",
        "Accuracy, precision, recall, F1, ROC AUC, loss, calibration error "
        "(ECE) and confusion matrix (per class, macro and weighted averages "
        "too)."),
    "explain": ("explain_report",
        "Show why TEXTs (or lines from stdin) get their label: each word's "
        "contribution to the predicted label's log-odds, in the model that "
        "predict runs."),
    "export": ("models",
        "Export a TensorFlow SavedModel for TF Serving."),
    "info": ("models",
        "What a model is: network, vocabulary, labels, data and figures."),
    "pretrain": ("train",
        "Pretrain an encoder on unlabelled TEXTS, once, for several trainings "
        "(--encoder)."),
    "predict": ("score",
        "Label TEXTs, or lines from stdin when no TEXT (or '-') is given."),
    "report": ("explain_report",
        "Write plots and one self-contained HTML page about the model: ROC and "
        "precision-recall curves, reliability diagram, confusion matrix, score "
        "histograms, learning curves, figures, settings, and the most "
        "confidently wrong texts explained."),
    "serve": ("serve",
        "Serve the model over HTTP: rnncli's API (POST /predict, POST /explain,"
        " GET /health, GET /info, GET /openapi.json) and TF Serving's REST API "
        "(POST /v1/models/NAME:predict, GET /v1/models/NAME)."),
    "train": ("train",
        "Train a classifier on DATA (.csv, .tsv or .jsonl, optionally .gz)."),
}

_debug = False


def _on_sigterm(signum, frame):
    raise Terminated()


class RnnCliGroup(click.Group):
    """Turns every failure inside a command into one line on stderr and an exit code, and
    imports a command's module only when that command is asked for."""

    context_class = RnnCliContext
    command_class = RnnCliCommand

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        return getattr(importlib.import_module(f"rnncli.cli.{COMMANDS[name][0]}"), name)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        try:
            return super().resolve_command(ctx, args)
        except click.exceptions.NoSuchCommand as exc:  # Click's suggestions come from the
            # commands it holds, and this group holds none until one is asked for
            raise click.exceptions.NoSuchCommand(exc.command_name, possibilities=list(COMMANDS),
                                                 ctx=ctx) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Click's own listing, from ``COMMANDS`` instead of the imported commands."""
        limit = formatter.width - 6 - max(len(name) for name in COMMANDS)
        # a bare Command shortens the summary as the real one would its help
        rows = [(name, click.Command(name, help=summary).get_short_help_str(limit))
                for name, (_, summary) in sorted(COMMANDS.items())]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except RnnCliError as exc:
            code = _error(exc.message, exc, exc.exit_code)
        except (KeyboardInterrupt, Terminated) as exc:
            code = _error(_interrupted(exc), exc,
                          EXIT_INTERRUPTED if isinstance(exc, KeyboardInterrupt)
                          else EXIT_TERMINATED)
        except BrokenPipeError:
            # The reader went away ('| head -1'): stop quietly, and keep Python from
            # failing again when it flushes stdout at exit.
            _silence_stdout()
            code = 0
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
                # Every other write is reported where it happens: this is stdout.
                _silence_stdout()
                code = _error(f"cannot write the output ({exc.strerror}); write it "
                              "somewhere with room", exc, EXIT_USAGE)
            else:
                code = _unexpected(exc)
        except Exception as exc:  # noqa: BLE001  (the one place that catches everything)
            code = _unexpected(exc)
        ctx.exit(code)


def _interrupted(exc: BaseException) -> str:
    """"interrupted during epoch 3/10 (step 41/70); no model was written": the
    interrupt's ``where`` and ``outcome``, where training gave them (training/fitloop.py,
    training/train_notes.py)."""
    where, outcome = getattr(exc, "where", ""), getattr(exc, "outcome", "")
    what = "interrupted" if isinstance(exc, KeyboardInterrupt) else "terminated"
    return what + (f" {where}" if where else "") + (f"; {outcome}" if outcome else "")


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so Python's flush at exit cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _unexpected(exc: BaseException) -> int:
    return _error(f"unexpected {type(exc).__name__}: {exc} (run with --debug for the "
                  "traceback, and please report it)", exc, EXIT_UNEXPECTED)


def _error(message: str, exc: BaseException, code: int) -> int:
    if _debug:
        import traceback  # only here: --help and every light path stay without it

        traceback.print_exception(exc)
    click.echo(f"Error: {visible(message, lines=True)}", err=True)
    return code


@click.group(cls=RnnCliGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="rnncli")
@click.option("--debug", is_flag=True, envvar="RNNCLI_DEBUG",
              help="Show full tracebacks on errors (or set RNNCLI_DEBUG=1).")
def cli(debug: bool) -> None:
    """Train a bidirectional LSTM/GRU sentiment classifier from labelled texts and use it
    from the shell.

    \b
      rnncli train reviews.csv --cell gru     learn from a CSV of texts and labels
      rnncli predict "great movie"            label + probability
      cat reviews.txt | rnncli predict        one result per input line, streamed
      rnncli evaluate                         figures on the held-out split

    Exit codes: 0 ok, 1 unexpected, 2 usage, 3 bad data, 4 bad or missing model,
    5 device, 130 interrupted (143 on SIGTERM).
    """
    global _debug
    _debug = debug
    if debug:
        os.environ["RNNCLI_DEBUG"] = "1"  # network/runtime.py then keeps Keras's warnings too


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    if sys.stdin is None:  # started with stdin closed: no input lines
        sys.stdin = open(os.devnull)
    if sys.stdout is None:  # started with stdout closed: nowhere for results to go
        sys.stderr and sys.stderr.write("Error: stdout is closed; redirect it to a file or "
                                        "a pipe\n")
        sys.exit(EXIT_USAGE)
    cli.main(args=argv, prog_name="rnncli")
