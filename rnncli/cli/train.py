"""``rnncli train``: the command (registered on the group in main.py); the training itself
is rnncli/training/."""

from __future__ import annotations

import click

from rnncli.cli.context import RnnCliCommand
from rnncli.cli.options import DEFAULT_MODEL_DIR, data_options, setting, train_device_option
from rnncli.core.config import CELLS, CLASS_WEIGHTS, NGRAM_SOLVERS, POOLINGS, TrainConfig, default
from rnncli.core.errors import UsageError


@click.command(cls=RnnCliCommand)
@click.argument("data", metavar="DATA")
@data_options
@click.option("--positive-label", default=None, metavar="VALUE",
              help="Which label value is positive [default: positive/pos/1/true/yes].")
@click.option("--embeddings", type=click.Path(exists=True, dir_okay=False), default=None,
              metavar="FILE",
              help="Start the embedding from GloVe/word2vec vectors (a text file, .gz ok).")
@click.option("--unlabelled", type=click.Path(exists=True, dir_okay=False), default=None,
              metavar="FILE", help="Pretrain the recurrent network on these unlabelled texts "
              "(and the training texts) as forward and backward language models before it "
              "learns the labels (.csv/.tsv/.jsonl with a text column, or .txt with one per "
              "line).")
@click.option("--encoder", type=click.Path(exists=True, file_okay=False), default=None,
              metavar="DIR", help="Start from an encoder written by 'rnncli pretrain' (its "
              "tokenizer, vocabulary, embedding and first recurrent layer).")
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
              "training texts (and --unlabelled's) by PPMI + SVD, not at random.")
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
@setting("pretrain_epochs", None, "Epochs of language-model pretraining (0: none, so "
          "--unlabelled only feeds --word-vectors); without --unlabelled, on the training "
          "texts alone [auto with --unlabelled: enough to read about 15 million tokens, 1 "
          "to 10; else none].", auto=True)
@setting("batch_size", None, "Training batch size.")
@setting("lr", None, "Adam learning rate.")
@setting("lr_decay", None, "Learning-rate factor applied "
          "when the validation loss gets worse (1: never).")
@setting("clipnorm", None, "Gradient clipping norm (0: off).")
@setting("adversarial", None, "Adversarial training: also learn from each batch with its "
          "embedded words pushed this many word-vector lengths (per text) the way that "
          "raises the loss most; about twice the time an epoch (0: off) [auto: 0.3 when the "
          "network is pretrained, else 0].", auto=True)
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
              help="Continue an interrupted run of this same command where it stopped: at "
                   "the batch Ctrl-C cut, else the last state kept (every epoch and every 5 "
                   "minutes); refused if the data or settings changed.")
@click.option("--stream/--no-stream", default=None,
              help="Stream the file from disk, so memory does not grow with the rows "
                   "(default: when it has more than 100,000 lines); --no-stream reads it "
                   "whole, as for a small file.")
@click.option("-q", "--quiet", is_flag=True, help="No progress or notes on stderr.")
def train(data, text_col, label_col, encoding, show_skipped, positive_label, embeddings,
          unlabelled, encoder, out, device, mixed_precision, resume, stream, quiet,
          **settings):
    """Train a classifier on DATA (.csv, .tsv or .jsonl, optionally .gz)."""
    from rnncli.core.extras import require
    from rnncli.render import output

    require("train")  # before the data is read (TensorFlow is imported after it)
    from rnncli.training.train import run
    from rnncli.training.train_notes import SMALL_SPLIT_ROWS, accuracy_error

    if embeddings and settings["word_vectors"]:
        raise UsageError("--embeddings gives the word vectors; drop --word-vectors, or drop "
                         "--embeddings")
    config = TrainConfig(**settings)
    if unlabelled and config.pretrain_epochs == 0 and not config.word_vectors:
        raise UsageError("--unlabelled with --pretrain-epochs 0 is not used: add "
                         "--word-vectors to learn word vectors from it, or drop --unlabelled")
    if encoder is not None:
        clash = [flag for flag, given in (("--unlabelled", unlabelled),
                                          ("--embeddings", embeddings),
                                          ("--word-vectors", config.word_vectors),
                                          ("--pretrain-epochs",
                                           config.pretrain_epochs is not None))
                 if given]
        if clash:
            raise UsageError(f"--encoder is pretrained already; drop {', '.join(clash)} (or "
                             "pretrain a new encoder with 'rnncli pretrain')")
        from rnncli.training import encoder as encoders

        encoder = encoders.load(encoder)
    reporter = output.train_reporter(quiet)
    manifest = run(data, config, out=out, text_col=text_col, label_col=label_col,
                   positive_label=positive_label, encoding=encoding, embeddings=embeddings,
                   unlabelled=unlabelled, encoder=encoder, device=device,
                   mixed_precision=mixed_precision, resume=resume, show_skipped=show_skipped,
                   stream=stream, reporter=reporter)
    if manifest is None:  # a worker of a multi-machine run (TF_CONFIG); the chief saves
        return
    val, test = manifest["validation"], manifest["test"]
    error = (f", standard error up to {accuracy_error(test['n']):.2f}"
             if 0 < test["n"] < SMALL_SPLIT_ROWS else "")
    reporter.message(f"validation accuracy {val['accuracy']:.4f}, test accuracy "
                     f"{test['accuracy']:.4f} (n={test['n']}{error}); next: rnncli predict "
                     f"-m {out} \"some text\"")


@click.command(cls=RnnCliCommand)
@click.argument("texts", metavar="TEXTS")
@click.option("--text-col", default=None, metavar="NAME",
              help="Text column [default: detected: text, review, sentence, ...].")
@click.option("--encoding", default=None, metavar="NAME",
              help="Text encoding of TEXTS [default: UTF-8, else detected (named on stderr)].")
@click.option("-o", "--out", required=True, metavar="DIR",
              help="Encoder directory to write (replaced atomically when pretraining ends).")
@setting("cell", click.Choice(CELLS), "Recurrent cell: GRU is lighter and faster, LSTM richer.")
@setting("units", None, "Units per direction in the recurrent layer.")
@setting("embed_dim", None, "Embedding size.")
@setting("bigram_dim", None, "Embedding size for each token's pair with the one before it "
          "[auto: 32 when most tokens are Chinese or Japanese characters, else 0].", auto=True)
@setting("max_tokens", None, "Vocabulary size, including padding and [UNK] "
          "[auto: words seen twice, up to 20,000].", auto=True)
@setting("seq_len", None, "Tokens read per text [auto: 95th percentile of lengths, "
          "16 to 800].", auto=True)
@setting("pretrain_epochs", click.IntRange(1), "Epochs over the texts [auto: enough to "
          "read about 15 million tokens, 1 to 10].", auto=True)
@setting("batch_size", None, "Batch size.")
@setting("seed", None, "Random seed.")
@train_device_option
@click.option("--resume", is_flag=True, help="Continue an interrupted run of this same "
              "command where it stopped; refused if the texts or settings changed.")
@click.option("-q", "--quiet", is_flag=True, help="No progress or notes on stderr.")
def pretrain(texts, text_col, encoding, out, device, resume, quiet, **settings):
    """Pretrain an encoder on unlabelled TEXTS, once, for several trainings (--encoder)."""
    from rnncli.core import fsio
    from rnncli.core.extras import require
    from rnncli.render import output

    require("train")
    from rnncli.training import encoder

    reporter = output.train_reporter(quiet)
    encoder.run(texts, TrainConfig(**settings), out=fsio.resolve_output(out),
                text_col=text_col, encoding=encoding, device=device, resume=resume,
                reporter=reporter)
