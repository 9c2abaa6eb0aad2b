"""The commands that show why: ``explain`` (each word's part in a label) and ``report``
(plots and a page about a model). Registered on the group in main.py."""

from __future__ import annotations

import sys

import click

from rnncli.cli.context import RnnCliCommand
from rnncli.cli.options import (
    FailedLines,
    Probability,
    check_data_file_options,
    data_options,
    device_option,
    engine_option,
    model_option,
)


@click.command(cls=RnnCliCommand)
@click.argument("texts", nargs=-1, metavar="[TEXT]...")
@model_option
@click.option("-f", "--format", "fmt", type=click.Choice(["text", "json", "jsonl"]),
              default="text", show_default=True,
              help="text: words shaded on a terminal, [+word]/[-word] when piped or with "
                   "NO_COLOR; json/jsonl: tokens with offsets and contributions.")
@click.option("--top", type=click.IntRange(0), default=5, show_default=True,
              help="Words listed for and against the label (text format).")
@click.option("--threshold", type=Probability(), default=None,
              help="Score at or above which the positive label is given [default: the "
                   "model's]; two-class models only.")
@click.pass_context
def explain(ctx, texts, model_dir, fmt, top, threshold):
    """Show why TEXTs (or lines from stdin) get their label: each word's contribution
    to the predicted label's log-odds, in the model that predict runs.

    A word's contribution is how much the log-odds fall when the model sees an unknown
    word in its place. JSON records are predict's plus tokens (token, start and end
    character offsets, contribution, and the parts: rnn, ngram) and log_odds.
    """
    from rnncli.inference.explain import explain_records, load_explainer
    from rnncli.inference.predict import FAILED, read_lines
    from rnncli.render.highlight import ExplanationWriter

    from_stdin = texts in ((), ("-",))
    predictor = load_explainer(model_dir, threshold=threshold)
    writer = ExplanationWriter(fmt, top=top)
    failed = FailedLines(FAILED)
    with predictor:
        for batch in (read_lines(sys.stdin.buffer) if from_stdin else [list(texts)]):
            records = explain_records(predictor, batch)
            writer.write(records)
            failed.add(records)
    writer.close()
    failed.exit_if_any(ctx, "explanation")


@click.command(cls=RnnCliCommand)
@click.argument("data", required=False, metavar="[DATA]")
@model_option
@data_options
@click.option("-o", "--out", required=True, metavar="DIR",
              help="Directory to write index.html and the PNG plots to (made if needed; "
                   "files of an earlier report there are replaced).")
@click.option("--errors", type=click.IntRange(0), default=10, show_default=True, metavar="N",
              help="Most confidently wrong texts listed (with their explanations).")
@click.option("--threshold", type=Probability(), default=None,
              help="Decision threshold [default: the model's]; two-class models only.")
@device_option
@engine_option
def report(data, model_dir, text_col, label_col, encoding, show_skipped, out, errors,
           threshold, device, engine):
    """Write plots and one self-contained HTML page about the model: ROC and
    precision-recall curves, reliability diagram, confusion matrix, score histograms,
    learning curves, figures, settings, and the most confidently wrong texts explained.

    On DATA when given (same columns and options as train), else on the test split held
    out when the model was trained. Needs matplotlib: pip install 'rnncli[report]'.
    """
    from rnncli.core.extras import require
    from rnncli.render import output
    from rnncli.report.build import write_report

    check_data_file_options(data, text_col, label_col, encoding)
    require("report")  # before the model and the data: say at once what to install
    page, notes = write_report(model_dir, data, out, errors=errors, show_skipped=show_skipped,
                               text_col=text_col,
                               label_col=label_col, encoding=encoding, device=device,
                               engine=engine, threshold=threshold)
    console = output.err_console()
    for note in notes:
        output.tell(console, note)
    echo_written(page, "wrote")


def echo_written(path, what: str) -> None:
    """A written file's path on stdout (for scripts), and "``what`` PATH" on stderr for a
    person, unless stdout is the terminal too, where that showed the path twice."""
    from rnncli.render import output

    if not output.is_terminal(sys.stdout):
        output.tell(output.err_console(), f"{what} {path}")
    click.echo(str(path))
