"""``rnncli predict`` and ``rnncli evaluate``: the commands (registered on the group in
main.py); the scoring itself is rnncli/inference/."""

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
from rnncli.core.config import PREDICT_FORMATS


@click.command(cls=RnnCliCommand)
@click.argument("texts", nargs=-1, metavar="[TEXT]...")
@model_option
@click.option("-f", "--format", "fmt", type=click.Choice(PREDICT_FORMATS), default="auto",
              show_default=True, help="auto: a table on a terminal, JSON lines when piped.")
@click.option("--threshold", type=Probability(), default=None,
              help="Score at or above which the positive label is given [default: the "
                   "model's]; two-class models only.")
@click.option("--batch-size", type=click.IntRange(1), default=256, show_default=True,
              help="Lines scored together when reading stdin.")
@device_option
@engine_option
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
@click.pass_context
def predict(ctx, texts, model_dir, fmt, threshold, batch_size, device, engine, quiet):
    """Label TEXTs, or lines from stdin when no TEXT (or '-') is given.

    One record per input line, in order; blank lines get status "empty", and lines that
    are not UTF-8 "invalid_utf8", scored with U+FFFD for the bad bytes (the exit code is
    then 3). Records: text, label, score (the label's probability), status, and scores
    (every class's probability, in class order).
    """
    from rnncli.inference.predict import FAILED, Predictor
    from rnncli.render import output

    from_stdin = texts in ((), ("-",))
    if from_stdin and output.is_terminal(sys.stdin) and not quiet:
        output.err_console().print("reading texts from stdin, one per line (Ctrl-D to end)")
    predictor = Predictor.load(model_dir, device=device, engine=engine, threshold=threshold)
    writer = output.RecordWriter(output.resolve_format(fmt), classes=predictor.label_names)
    progress = output.StreamProgress(
        from_stdin and not quiet and output.is_terminal(sys.stderr)
        and not output.is_terminal(sys.stdout))
    failed = FailedLines(FAILED)
    try:
        if from_stdin:
            # A person typing expects each answer at once; a pipe is scored in batches.
            size = 1 if output.is_terminal(sys.stdin) else batch_size
            batches = predictor.stream(sys.stdin.buffer, batch_size=size,
                                       on_batch=progress.update)
        else:
            batches = [predictor.records(list(texts))]
        for records in batches:
            writer.write(records)
            failed.add(records)
    finally:
        progress.close()
        predictor.close()
    writer.close()
    failed.exit_if_any(ctx, "score")


@click.command(cls=RnnCliCommand)
@click.argument("data", required=False, metavar="[DATA]")
@model_option
@data_options
@click.option("--threshold", type=Probability(), default=None,
              help="Decision threshold [default: the model's]; two-class models only.")
@click.option("-f", "--format", "fmt", type=click.Choice(["auto", "table", "json"]),
              default="auto", show_default=True,
              help="auto: a table on a terminal, JSON when piped.")
@click.option("--errors", type=click.IntRange(0), default=0, metavar="N",
              help="Also list the N texts predicted wrong with the highest probability "
                   "(often label errors worth fixing in the data).")
@device_option
@engine_option
def evaluate(data, model_dir, text_col, label_col, encoding, show_skipped, threshold, fmt,
             errors, device, engine):
    """Accuracy, precision, recall, F1, ROC AUC, loss, calibration error (ECE) and
    confusion matrix (per class, macro and weighted averages too).

    On DATA when given (same columns and options as train), else on the test split
    held out when the model was trained.
    """
    from rnncli.inference.evaluation import evaluate as run_evaluate
    from rnncli.render import output, tables

    check_data_file_options(data, text_col, label_col, encoding)
    figures, notes = run_evaluate(model_dir, data, text_col=text_col, label_col=label_col,
                                  encoding=encoding, device=device, engine=engine,
                                  threshold=threshold, show_skipped=show_skipped,
                                  errors=errors)
    console = output.err_console()
    for note in notes:
        output.tell(console, note)
    tables.render_figures(figures, output.resolve_format(fmt, piped="json"),
                          title=f"evaluation of {model_dir} on "
                                f"{data or 'the held-out test split'}")
