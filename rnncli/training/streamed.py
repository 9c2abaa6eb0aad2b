"""Training on a file too large to hold: read once into parts on disk (data/spool.py),
counted in one pass (network/counting.py), tokenized on the fly in tf.data
(stream_data.py), the n-gram model fitted by mini-batches (ngrams_stream.py). Memory
stays flat in the rows; fitting.finish scores, blends, calibrates and publishes as for a
file read whole.

The parts are written beside the model directory (``.<name>.stream-XXXX/``: the texts,
about the size of the file, the token ids, 2 x (sequence length + 1) bytes a row, and the
test rows once more) and removed when training ends, unless the process is killed
(SIGKILL, out of memory): then delete that directory.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rnncli.core import fsio
from rnncli.core.config import TrainConfig
from rnncli.core.errors import Terminated, UsageError
from rnncli.data import spool
from rnncli.data.dataset import read_summary, read_texts, skipped_report
from rnncli.data.stream import LabelledStream
from rnncli.training import fitting
from rnncli.training import resume as resume_run
from rnncli.training.train_notes import classes_note, split_warnings

SAMPLE_ROWS = 100_000  # training texts kept for the warnings and the word vectors


@dataclass
class SplitView:
    """What fitting's last steps read of a split: labels, class names, and texts (a
    sample of the training texts; the validation texts that check the saved model)."""

    labels: np.ndarray
    label_names: tuple[str, ...]
    texts: list[str] = field(default_factory=list)
    spooled: spool.Spooled | None = None  # the test split's rows, written with the model

    @property
    def binary(self) -> bool:
        return len(self.label_names) == 2

    def write_split(self, path: Path) -> None:
        self.spooled.write_test_split(path)


def run(stream: LabelledStream, config: TrainConfig, *, out: Path, role=None,
        positive_label: str | None, encoding: str | None, embeddings, unlabelled, device: str,
        encoder=None,
        mixed_precision: bool | str, resume: bool, show_skipped: bool,
        reporter: fitting.Reporter) -> dict[str, Any] | None:
    """Train on ``stream`` and publish ``out`` (train.run has checked the target); on
    several machines (``role``, from TF_CONFIG) every worker reads the file into parts of
    its own and trains on its share of each batch; only the chief publishes (the others
    return None)."""
    _check_room(stream, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f".{out.name}.stream-", dir=out.parent))
    try:
        why = (f"more than {spool.STREAM_LINES}" if stream.physical_lines > spool.STREAM_LINES
               else "--stream")
        reporter.message(f"{stream.path.name}: {stream.physical_lines} lines ({why}): read "
                         "as a stream, its parts kept on disk")
        started = time.perf_counter()
        spooled = spool.spool(stream, workdir, val_split=config.val_split,
                              test_split=config.test_split, seed=config.seed,
                              positive_label=positive_label)
        _tell_read(spooled, show_skipped, time.perf_counter() - started, reporter)
        source = _source(spooled)
        extra_texts = _unlabelled(unlabelled, source, reporter)
        if embeddings is not None:
            source["embeddings"] = {"file": Path(embeddings).name}
        with fsio.lock(out) if role is None or role.chief else contextlib.nullcontext():
            progress = _progress(out, role, resume, config, spooled, encoding, embeddings,
                                 unlabelled, mixed_precision, reporter, encoder)
            return _fit_and_publish(spooled, config, out=out, source=source, device=device,
                                    mixed_precision=mixed_precision, reporter=reporter,
                                    embeddings=embeddings, unlabelled_texts=extra_texts,
                                    progress=progress, role=role, encoder=encoder)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _check_room(stream: LabelledStream, out: Path) -> None:
    """The parts need about three times the file (its texts, the test rows once more, the
    token ids); refuse before reading when the disk beside ``out`` has less."""
    need, free = 3 * stream.size, fsio.free_bytes(out.parent)
    if free is not None and free < need:
        raise UsageError(f"not enough free space beside {out} for the parts of a streamed file: "
                         f"{free // 2**20} MB free, about {need // 2**20} MB needed; free some "
                         "space or train into a directory on a larger disk (-o)")


def _progress(out: Path, role, resume: bool, config: TrainConfig, spooled: spool.Spooled,
              encoding, embeddings, unlabelled, mixed_precision, reporter, encoder=None):
    """The state for --resume (train._train's rules): none on several machines, where the
    chief discards an old one."""
    if role is not None:
        if role.chief:
            resume_run.prepare(out, {}, resume=False)
        return None
    key = resume_run.run_key(None, config, embeddings, unlabelled, mixed_precision,
                             content=_content_key(spooled, encoding),
                             encoder=encoder and encoder.weights_file)
    progress = resume_run.prepare(out, key, resume)
    resume_run.announce(progress, reporter.message)
    return progress


def _tell_read(spooled: spool.Spooled, show_skipped: bool, seconds: float,
               reporter: fitting.Reporter) -> None:
    stream = spooled.stream
    for note in stream.notes:
        reporter.message(note)
    if show_skipped:
        for line in skipped_report(stream.skipped_lines, stream.skipped):
            reporter.message(line)
    sizes = {part: spooled.rows(part) for part in ("train", "validation", "test")}
    reporter.message(f"{read_summary(stream.rows_read, sum(sizes.values()), stream.skipped)}; "
                     f"{classes_note(spooled.label_names, _totals(spooled))}; "
                     f"train/validation/test = {sizes['train']}/{sizes['validation']}/"
                     f"{sizes['test']} (read in {seconds:.0f}s)")
    for warning in split_warnings(sizes["validation"], sizes["test"]):
        reporter.warning(warning)


def _totals(spooled: spool.Spooled) -> dict[str, int]:
    """Rows of each class, in class order."""
    return {name: sum(c[name] for c in spooled.class_counts.values())
            for name in spooled.label_names}


def _source(spooled: spool.Spooled) -> dict[str, Any]:
    """The manifest's "data" section, as train._source writes it, and ``streamed``."""
    stream = spooled.stream
    totals = _totals(spooled)
    used = sum(totals.values())
    return {
        "file": stream.path.name,
        "fingerprint": f"sha256:{stream.fingerprint}",
        "text_col": stream.text_col,
        "label_col": stream.label_col,
        "rows_read": stream.rows_read,
        "rows_used": used,
        "skipped": dict(stream.skipped),
        **({"positive_rate": round(totals[spooled.label_names[1]] / used, 4)}
           if spooled.binary else {}),
        "class_counts": totals,
        "split": {"train": spooled.rows("train"), "validation": spooled.rows("validation"),
                  "test": spooled.rows("test")},
        "streamed": True,
    }


def _content_key(spooled: spool.Spooled, encoding: str | None) -> str:
    """What --resume must find unchanged in the data: the file's bytes, its encoding,
    the columns and the classes (the split follows from them and --seed)."""
    stream = spooled.stream
    return "|".join(["streamed", stream.fingerprint, encoding or "", stream.text_col,
                     stream.label_col, *spooled.label_names])


def _unlabelled(unlabelled, source: dict[str, Any], reporter) -> list[str] | None:
    if unlabelled is None:
        return None
    texts, notes = read_texts(unlabelled)
    for note in notes:
        reporter.message(note)
    source["unlabelled"] = {"file": Path(unlabelled).name, "texts": len(texts)}
    return texts


def _adam_for_ngrams(config: TrainConfig, reporter) -> TrainConfig:
    """The n-gram model of a streamed file is fitted by Adam, whatever was chosen."""
    if config.ngrams and config.ngram_solver == "lbfgs":
        reporter.message("n-gram model: Adam, not L-BFGS, for a streamed file (the exact fit "
                         "needs every row in memory; --no-stream reads the file whole)")
        return config.replace(ngram_solver="adam")
    return config


def _fit_and_publish(spooled: spool.Spooled, config: TrainConfig, *, out: Path,
                     source: dict[str, Any], device: str, mixed_precision: bool | str,
                     reporter: fitting.Reporter, embeddings, unlabelled_texts,
                     progress: resume_run.Progress | None, role=None,
                     encoder=None) -> dict[str, Any] | None:
    from rnncli.network import model as M
    from rnncli.training import stream_data

    names = spooled.label_names
    # several machines: the strategy comes before TensorFlow's first operation
    devices = fitting._devices(device, role, config, spooled.rows("train"), reporter)
    sample = stream_data.sample_texts(spooled, SAMPLE_ROWS, config.seed)
    train_view = SplitView(spooled.labels("train"), names, sample)
    val_view = SplitView(spooled.labels("validation"), names, spooled.verify_texts)
    test_view = SplitView(spooled.labels("test"), names, spooled=spooled)
    config, source, vocab, weights, precision, (device_names, strategy, replicas) = (
        fitting._settings(config, train_view, source, device, mixed_precision, role, reporter,
                          batches=stream_data.text_batches(spooled, "train"), devices=devices,
                          encoder=encoder))
    config = _adam_for_ngrams(config, reporter)
    vectorizer = M.build_vectorizer(config, vocab)
    started = time.perf_counter()
    start, config, source = fitting._starting_vectors(
        vectorizer, vocab, config, source, embeddings, unlabelled_texts, sample, reporter,
        encoder, progress)
    tokenized = time.perf_counter()
    id_files = stream_data.IdFiles(spooled, vectorizer, config.seq_len,
                                   shard=(role.rank, role.workers) if role else (0, 1))
    reporter.message(f"token ids written to disk ({time.perf_counter() - tokenized:.0f}s)")

    def ids(part: str, **kwargs):
        return stream_data.ids_batches(id_files, part, config.batch_size, **kwargs)

    batches = _training_batches(id_files, config, weights, replicas, role, reporter,
                                validation=ids("validation", class_weights=weights))
    fitted = fitting._fit_rnn(config, start, (None, None), (None, None), device_names,
                              strategy, reporter, replicas=replicas, progress=progress,
                              precision=precision, class_weights=weights, batches=batches)
    if role is not None and not role.chief:
        reporter.message(f"{role}: training finished; the chief writes the model")
        return None
    ngram = None
    if config.ngrams:  # after the network: the other workers need not wait for it
        ngram = _fit_ngrams(config, spooled, reporter, weights, device_names[0], progress,
                            batches.steps)
    run = fitting.Run(config, vectorizer, weights, precision, device_names[0], replicas,
                      role.workers if role else 1, started, start.described(source))
    return fitting.finish(run, fitted, ngram, (train_view, val_view, test_view),
                          (ids("validation", keep_order=True), ids("test", keep_order=True)),
                          out=out, progress=progress, reporter=reporter)


def _fit_ngrams(config: TrainConfig, spooled: spool.Spooled, reporter, weights, device: str,
                progress, steps: int):
    """The n-gram model over the stream. Interrupted, it says that the network's state is
    kept (--resume publishes it and fits the n-gram model again)."""
    from rnncli.network import model as M
    from rnncli.training.fitloop import keep_progress
    from rnncli.training.ngrams_stream import fit_ngrams_streamed

    try:
        with M.tf.device(device):
            return fit_ngrams_streamed(config, spooled, reporter, class_weights=weights)
    except (KeyboardInterrupt, Terminated) as exc:
        keep_progress(progress, reporter, steps)
        exc.where = "while the n-gram model was fitted, after the network"
        raise


def _training_batches(id_files, config: TrainConfig, weights, replicas: int, role, reporter, *,
                      validation):
    """The training batches with ``validation``'s (epochs.Batches): on one machine, of all
    training rows; on several, of this worker's own shard, as many steps on each."""
    from rnncli.training import stream_data
    from rnncli.training.epochs import Batches

    if role is None:
        one_epoch, steps = stream_data.ids_epochs(id_files, "train", config.batch_size,
                                                  seed=config.seed, class_weights=weights,
                                                  full_only=replicas > 1)
        return Batches(one_epoch, validation, steps, id_files.rows["train"])
    rows = id_files.spooled.rows("train")
    steps, per_device, local = stream_data.shard_plan(rows, config.batch_size, role.workers,
                                                      replicas)
    if steps == 0:
        raise UsageError(f"{rows} training rows are too few for {role.workers} machines with "
                         f"a batch of {config.batch_size}; train on one machine")
    one_epoch, steps = stream_data.ids_epochs(id_files, "train", per_device, seed=config.seed,
                                              class_weights=weights, plan=(steps, local))
    reporter.message(f"{role}: trains on its own shard of {id_files.rows['train']:,} of "
                     f"{rows:,} training rows, {steps} steps an epoch of {per_device} rows "
                     f"on each of {replicas} devices")
    return Batches(one_epoch, validation, steps, steps * per_device * replicas,
                   per_worker=True)
