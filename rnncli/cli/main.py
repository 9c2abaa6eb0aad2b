"""The command line: Click commands, shared options and the one error handler.

Only light modules are imported at the top; TensorFlow is reached inside the commands
that need it, so ``--help``, ``--version`` and usage errors stay fast.
"""

from __future__ import annotations

import errno
import os
import signal
import sys

import click

from rnncli.cli.explain_report import echo_written, explain, report
from rnncli.cli.options import (
    DEFAULT_MODEL_DIR,
    FailedLines,
    Probability,
    RnnCliCommand,
    RnnCliContext,
    check_data_file_options,
    data_options,
    device_option,
    engine_option,
    model_option,
    setting,
    train_device_option,
)
from rnncli.cli.serve import serve
from rnncli.core.config import (
    CELLS,
    CLASS_WEIGHTS,
    NGRAM_SOLVERS,
    POOLINGS,
    PREDICT_FORMATS,
    TrainConfig,
    default,
)
from rnncli.core.errors import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_UNEXPECTED,
    EXIT_USAGE,
    RnnCliError,
    Terminated,
    UsageError,
)
from rnncli.core.terminal import visible
from rnncli.core.version import __version__

_debug = False


def _on_sigterm(signum, frame):
    raise Terminated()


class RnnCliGroup(click.Group):
    """Turns every failure inside a command into one line on stderr and an exit code."""

    context_class = RnnCliContext
    command_class = RnnCliCommand

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
    interrupt's ``where`` and ``outcome``, where training gave them (fitloop.py,
    train_notes.py)."""
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
        os.environ["RNNCLI_DEBUG"] = "1"  # runtime.py then keeps Keras's warnings too


@cli.command()
@click.argument("data", metavar="DATA")
@data_options
@click.option("--positive-label", default=None, metavar="VALUE",
              help="Which label value is positive [default: positive/pos/1/true/yes].")
@click.option("--embeddings", type=click.Path(exists=True, dir_okay=False), default=None,
              metavar="FILE",
              help="Start the embedding from GloVe/word2vec vectors (a text file, .gz ok).")
@click.option("--unlabelled", type=click.Path(exists=True, dir_okay=False), default=None,
              metavar="FILE", help="Learn word vectors from these unlabelled texts before "
              "training (.csv/.tsv/.jsonl with a text column, or .txt with one per line).")
@click.option("-o", "--out", default=DEFAULT_MODEL_DIR, envvar="RNNCLI_MODEL",
              show_default=True, show_envvar=True, metavar="DIR",
              help="Model directory to write (replaced atomically when training succeeds).")
@setting("cell", click.Choice(CELLS), "Recurrent cell: GRU is lighter and faster, LSTM richer.")
@setting("units", None, "Units per direction in each recurrent layer.")
@setting("layers", None, "Stacked bidirectional layers.")
@setting("pooling", click.Choice(POOLINGS), "Recurrent states -> one vector: mask-aware max "
          "or mean over time, additive attention, or the last states.")
@setting("embed_dim", None, "Embedding size.")
@setting("bigram_dim", None, "Embedding size for each token's pair with the one "
          "before it (hashed), beside the token's own; 0: none [auto: 32 when most tokens "
          "are Chinese or Japanese characters, else 0].", auto=True)
@click.option("--word-vectors/--no-word-vectors", "word_vectors", default=default("word_vectors"),
              show_default=True, help="Start the embedding from word vectors learned from the "
              "training texts by PPMI + SVD, not at random (--unlabelled always does).")
@click.option("--ngrams/--no-ngrams", "ngrams", default=default("ngrams"), show_default=True,
              help="Also fit a logistic regression over token n-gram TF-IDF and blend its "
              "probability with the RNN's (the weight is chosen on the validation split).")
@setting("ngram_order", None, "Longest n-grams of the n-gram model [auto: 3 (1-3-grams) "
          "when most tokens are Chinese or Japanese characters, else 2].", auto=True)
@setting("ngram_solver", click.Choice(NGRAM_SOLVERS), "How the n-gram model is fitted: Adam "
          "with early stopping, or the exact L2-regularized logistic regression with C chosen "
          "on the validation split [auto: lbfgs when most tokens are Chinese or Japanese "
          "characters, else adam].", auto=True)
@setting("max_tokens", None, "Vocabulary size, including padding and [UNK] "
          "[auto: words seen twice, up to 20,000].", auto=True)
@setting("seq_len", None, "Tokens per text [auto: 95th percentile of lengths, "
          "16 to 800].", auto=True)
@setting("dropout", None, "Dropout on embeddings and "
          "before the head.")
@setting("epochs", None, "Most epochs to train.")
@setting("batch_size", None, "Training batch size.")
@setting("lr", None, "Adam learning rate.")
@setting("lr_decay", None, "Learning-rate factor applied "
          "when the validation loss gets worse (1: never).")
@setting("clipnorm", None, "Gradient clipping norm (0: off).")
@setting("patience", None, "Early stopping: epochs without a better "
          "validation loss (best weights are restored).")
@setting("val_split", None,
          "Fraction of rows for validation.")
@setting("test_split", None,
          "Fraction of rows held out for 'rnncli evaluate'.")
@setting("seed", None, "Random seed for the split and the weights.")
@setting("class_weight", click.Choice(CLASS_WEIGHTS), "Weight each class in the losses: "
          "none, or balanced (rows / (classes x rows of the class)) for skewed data.")
@train_device_option
@click.option("--mixed-precision", is_flag=True,
              help="Compute the recurrent network in float16 on GPUs (bfloat16 on CPUs), "
                   "weights in float32: faster on GPUs with tensor cores. The saved model "
                   "computes in float32.")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted run of this same command from its last finished "
                   "epoch (weights, optimizer state and epoch restored); refused if the data "
                   "or settings changed.")
@click.option("-q", "--quiet", is_flag=True, help="No progress or notes on stderr.")
def train(data, text_col, label_col, encoding, show_skipped, positive_label, embeddings,
          unlabelled, out, device, mixed_precision, resume, quiet, **settings):
    """Train a classifier on DATA (.csv, .tsv or .jsonl, optionally .gz)."""
    from rnncli.core.extras import require
    from rnncli.render import output

    require("train")  # before the data is read (TensorFlow is imported after it)
    from rnncli.training.train import run
    from rnncli.training.train_notes import SMALL_SPLIT_ROWS, accuracy_error

    if embeddings and (unlabelled or settings["word_vectors"]):
        raise UsageError("--embeddings gives the word vectors; drop --unlabelled / "
                         "--word-vectors, or drop --embeddings")
    config = TrainConfig(**settings)
    reporter = output.train_reporter(quiet)
    manifest = run(data, config, out=out, text_col=text_col, label_col=label_col,
                   positive_label=positive_label, encoding=encoding, embeddings=embeddings,
                   unlabelled=unlabelled, device=device, mixed_precision=mixed_precision,
                   resume=resume, show_skipped=show_skipped, reporter=reporter)
    if manifest is None:  # a worker of a multi-machine run (TF_CONFIG); the chief saves
        return
    val, test = manifest["validation"], manifest["test"]
    error = (f", standard error up to {accuracy_error(test['n']):.2f}"
             if 0 < test["n"] < SMALL_SPLIT_ROWS else "")
    reporter.message(f"validation accuracy {val['accuracy']:.4f}, test accuracy "
                     f"{test['accuracy']:.4f} (n={test['n']}{error}); next: rnncli predict "
                     f"-m {out} \"some text\"")


@cli.command()
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


@cli.command()
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


@cli.command()
@model_option
@click.option("-o", "--out", "dest", required=True, metavar="DEST",
              help="Directory to write the SavedModel to.")
@click.option("--force", is_flag=True, help="Replace DEST if it already holds a SavedModel.")
def export(model_dir, dest, force):
    """Export a TensorFlow SavedModel for TF Serving.

    Its 'serve' endpoint and 'serving_default' signature take a flat batch of raw strings
    (shape [n]) and return the positive-class probability (shape [n, 1]), or for a model
    of k > 2 classes every class's probability (shape [n, k], in the order 'rnncli info'
    lists the classes).
    """
    from rnncli.core import fsio
    from rnncli.render import output
    from rnncli.training.export import export_saved_model

    path = export_saved_model(model_dir, dest, force=force)
    if fsio.replaces_cwd(path):
        output.tell(output.err_console(), fsio.CWD_NOTE)
    echo_written(path, "wrote SavedModel to")


@cli.command()
@model_option
@click.option("-f", "--format", "fmt", type=click.Choice(["auto", "table", "json"]),
              default="auto", show_default=True)
def info(model_dir, fmt):
    """What a model is: network, vocabulary, labels, data and figures."""
    from rnncli.modeldir import artifacts
    from rnncli.render import output, tables

    manifest = artifacts.check_model_dir(model_dir)  # a broken model.keras is exit 4 here too
    tables.render_info(manifest, output.resolve_format(fmt, piped="json"))


@cli.command()
@click.option("-f", "--format", "fmt", type=click.Choice(["auto", "table", "json"]),
              default="auto", show_default=True)
def devices(fmt):
    """List the devices TensorFlow can run on, with their --device names."""
    from rnncli.network.runtime import list_devices
    from rnncli.render import output, tables

    tables.render_rows(list_devices(), output.resolve_format(fmt, piped="json"))


cli.add_command(explain)
cli.add_command(report)
cli.add_command(serve)


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
