"""Training: read and split the data, fit both parts, publish the model directory.

The data is read, checked and split *before* TensorFlow is imported, so a bad file fails
in a fraction of a second. Where the rest lives: the recurrent network's fit loop in
fitloop.py, the n-gram model in ngrams.py and the blend in blend.py, saving, verifying
and publishing in saving.py, the state for ``--resume`` in resume.py.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from rnncli.core import fsio
from rnncli.core.config import TrainConfig
from rnncli.core.errors import UsageError
from rnncli.data.dataset import Dataset, load_dataset, read_texts, split_dataset
from rnncli.data.spool import should_stream
from rnncli.modeldir import artifacts
from rnncli.training import resume as resume_run
from rnncli.training.fitting import Reporter, fit_and_publish
from rnncli.training.train_notes import classes_note, outcome_on_interrupt, split_warnings


def run(data_path: str | Path, config: TrainConfig, *, out: str | Path,
        text_col: str | None = None, label_col: str | None = None,
        positive_label: str | None = None, encoding: str | None = None,
        embeddings: str | Path | None = None, unlabelled: str | Path | None = None,
        encoder=None, device: str = "auto", mixed_precision: bool | str = False,
        resume: bool = False,
        show_skipped: bool = False, stream: bool | None = None,
        reporter: Reporter | None = None) -> dict[str, Any] | None:
    """Train on a labelled file and publish the model directory ``out``; return its manifest
    (None in a worker of a multi-machine run, which publishes nothing: see TF_CONFIG).

    ``embeddings``: a GloVe/word2vec text file to start the embedding from.
    ``unlabelled``: a file of texts (.csv/.tsv/.jsonl) to pretrain the network on first
    (pretrain.py). ``encoder``: a pretrained encoder (encoder.load) to start from.
    ``mixed_precision``: see :func:`runtime.precision_policy`.
    ``resume``: continue an interrupted run of the same data and settings (resume.py).
    ``stream``: read the file from disk as training goes (streamed.py), or whole; None:
    stream a file of more than spool.STREAM_LINES lines.
    """
    from rnncli.network.multi_worker import multi_worker_role

    reporter = reporter or Reporter()
    out = fsio.resolve_output(out)
    role = multi_worker_role()  # TF_CONFIG: one of several machines
    writes = role is None or role.chief  # the other workers write nothing
    if resume and role is not None:
        raise UsageError("--resume is not available when training on several machines "
                         "(TF_CONFIG); start the run again without it")
    if role is not None and config.pretrains(unlabelled is not None):
        raise UsageError("pretraining does not run on several machines (TF_CONFIG); "
                         "pretrain once with 'rnncli pretrain', then train with --encoder")
    if writes:
        artifacts.check_target(out)  # again under the lock, just before the swap
    with outcome_on_interrupt(out) if writes else contextlib.nullcontext():
        opened = should_stream(data_path, stream, encoding=encoding, text_col=text_col,
                               label_col=label_col)
        if opened is not None:
            from rnncli.training import streamed
            return streamed.run(opened, config, out=out, role=role,
                                positive_label=positive_label, encoding=encoding,
                                embeddings=embeddings, unlabelled=unlabelled, encoder=encoder,
                                device=device,
                                mixed_precision=mixed_precision, resume=resume,
                                show_skipped=show_skipped, reporter=reporter)
        return _train(data_path, config, out=out, role=role, writes=writes, text_col=text_col,
                      label_col=label_col, positive_label=positive_label, encoding=encoding,
                      embeddings=embeddings, unlabelled=unlabelled, encoder=encoder,
                      device=device,
                      mixed_precision=mixed_precision, resume=resume,
                      show_skipped=show_skipped, reporter=reporter)


def _train(data_path, config: TrainConfig, *, out: Path, role, writes: bool, text_col,
           label_col, positive_label, encoding, embeddings, unlabelled, encoder, device,
           mixed_precision, resume: bool, show_skipped: bool,
           reporter: Reporter) -> dict[str, Any] | None:
    """:func:`run`, once the target is checked."""
    data = load_dataset(data_path, text_col=text_col, label_col=label_col,
                        positive_label=positive_label, encoding=encoding)
    for note in data.notes + (data.skipped_report() if show_skipped else []):
        reporter.message(note)
    train_set, val_set, test_set = split_dataset(
        data, val_split=config.val_split, test_split=config.test_split, seed=config.seed)
    reporter.message(
        f"{data.summary()}; {classes_note(data.label_names, data.class_counts())}; "
        f"train/validation/test = {len(train_set.texts)}/{len(val_set.texts)}/"
        f"{len(test_set.texts)}")
    for warning in split_warnings(len(val_set.texts), len(test_set.texts)):
        reporter.warning(warning)
    source = _source(data_path, data, train_set, val_set, test_set)
    extra_texts = None
    if unlabelled is not None:
        extra_texts, notes = read_texts(unlabelled)
        for note in notes:
            reporter.message(note)
        source["unlabelled"] = {"file": Path(unlabelled).name, "texts": len(extra_texts)}
    if embeddings is not None:
        source["embeddings"] = {"file": Path(embeddings).name}
    with fsio.lock(out) if writes else contextlib.nullcontext():
        progress = None
        if role is None:
            key = resume_run.run_key(data, config, embeddings, unlabelled, mixed_precision,
                                     encoder=encoder and encoder.weights_file)
            progress = resume_run.prepare(out, key, resume)
            resume_run.announce(progress, reporter.message)
        elif role.chief:  # a run on several machines keeps no state: discard an old one
            resume_run.prepare(out, {}, resume=False)
        return fit_and_publish(train_set, val_set, test_set, config, out=out, source=source,
                               device=device, mixed_precision=mixed_precision, role=role,
                               reporter=reporter, embeddings=embeddings,
                               unlabelled_texts=extra_texts, encoder=encoder,
                               progress=progress)


def _source(data_path: str | Path, data, train_set: Dataset, val_set: Dataset,
            test_set: Dataset) -> dict[str, Any]:
    """The manifest's "data" section: where the rows came from and how they were split."""
    return {
        "file": Path(data_path).name,
        "fingerprint": f"sha256:{data.fingerprint}",
        "text_col": data.text_col,
        "label_col": data.label_col,
        "rows_read": data.rows_read,
        "rows_used": len(data.texts),
        "skipped": data.skipped,
        **({"positive_rate": round(float(np.mean(data.labels)), 4)} if data.binary else {}),
        "class_counts": data.class_counts(),
        "split": {"train": len(train_set.texts), "validation": len(val_set.texts),
                  "test": len(test_set.texts)},
    }


