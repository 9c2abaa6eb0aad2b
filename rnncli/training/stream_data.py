"""HEAVY: tf.data pipelines over a spooled file (data/spool.py): texts are read from disk
and tokenized on the fly, so no part of the data is held in memory whole.

Token ids are made once by the model's own TextVectorization and written beside the
texts as fixed-length records (:class:`IdFiles`), so an epoch only reads them; the
n-gram model tokenizes its n-grams on the fly (:func:`texts`). Training rows: the bucket
files in a new random order each epoch, a few read at a time and interleaved, then a
shuffle buffer of ``SHUFFLE_ROWS`` rows; batches of similar length are formed as
fitloop.length_batches forms them (sorted within windows of 50 batches, the batches
shuffled again). Validation and test rows are read in file order, which the scores
keep (their labels are in that order).
"""

from __future__ import annotations

import numpy as np

from rnncli.data.spool import Spooled
from rnncli.network.model import tf
from rnncli.training.epochs import epoch_seed, same_on_every_worker
from rnncli.training.fitloop import grouped_batches

SHUFFLE_ROWS = 20_000
READ_BATCH = 1024  # texts tokenized per map call
_CYCLE = 4  # bucket files read at once


def _lines(spooled: Spooled, part: str, *, seed: int | None = None):
    """The part's ``<code>\\t<text>`` lines: shuffled (training, ``seed`` given) or in
    file order."""
    files = [str(f) for f in spooled.parts[part].files]
    if seed is None:
        return tf.data.TextLineDataset(files)
    names = tf.data.Dataset.from_tensor_slices(files).shuffle(
        len(files), seed=seed, reshuffle_each_iteration=True)
    lines = names.interleave(tf.data.TextLineDataset, cycle_length=min(_CYCLE, len(files)),
                             block_length=16)
    return lines.shuffle(SHUFFLE_ROWS, seed=seed + 1, reshuffle_each_iteration=True)


def _code_and_text(lines):
    """A batch of ``<code>\\t<text>`` lines -> (label codes, texts)."""
    parts = tf.strings.split(lines, "\t", maxsplit=1).to_tensor()
    return tf.strings.to_number(parts[:, 0], tf.int64), parts[:, 1]


def _split(spooled: Spooled):
    """A batch of lines -> (class indexes, texts)."""
    classes = tf.constant(spooled.class_of_code, tf.int64)

    def split(lines):
        codes, text = _code_and_text(lines)
        return tf.gather(classes, codes), text

    return split


def texts(spooled: Spooled, part: str, *, batch: int = READ_BATCH, seed: int | None = None):
    """Batches of (class indexes, texts) of a part."""
    return (_lines(spooled, part, seed=seed).batch(batch)
            .map(_split(spooled), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))


def text_batches(spooled: Spooled, part: str, *, batch: int = 4096):
    """A part's texts as string tensors of ``batch`` texts (what counting.py counts)."""
    split = _split(spooled)
    for chunk in _lines(spooled, part).batch(batch).prefetch(2):
        yield split(chunk)[1]


def sample_texts(spooled: Spooled, rows: int, seed: int) -> list[str]:
    """Up to ``rows`` training texts from across the file (shuffled buckets)."""
    out = []
    for _, chunk in texts(spooled, "train", batch=4096, seed=seed).take(-(-rows // 4096)):
        out.extend(t.decode("utf-8") for t in chunk.numpy().tolist())
    return out[:rows]


class IdFiles:
    """A spooled file's token ids, made once and kept on disk beside its texts: per text
    file a file of fixed-length records, ``(label code, seq_len ids)`` as uint16 (int32
    for a vocabulary of 65,536 tokens or more), right-padded, in the text file's order.
    Epochs then read records, with no tokenizing. ``shard``: (this worker's rank, workers)
    on several machines: of the training rows, numbered across the files in order, only
    those whose number leaves this rank by the workers are kept (tokenized, written,
    trained on); ``rows`` counts each part's rows kept."""

    def __init__(self, spooled: Spooled, vectorizer, seq_len: int,
                 shard: tuple[int, int] = (0, 1)):
        self.spooled, self.seq_len, self.shard = spooled, seq_len, shard
        self.dtype = np.uint16 if vectorizer.vocabulary_size() < 2**16 else np.int32
        self.files: dict[str, list[str]] = {}
        self.rows: dict[str, int] = {}
        for part, entry in spooled.parts.items():
            self._seen = self.rows[part] = 0
            self.files[part] = [self._write(f, vectorizer, part) for f in entry.files]

    def _write(self, path, vectorizer, part: str) -> str:
        target = path.with_suffix(".ids")
        rank, workers = self.shard if part == "train" else (0, 1)
        with open(target, "wb") as out:
            for codes, batch in texts_of_file(path):
                if workers > 1:
                    mine = (np.arange(len(codes)) + self._seen) % workers == rank
                    self._seen += len(codes)
                    codes, batch = tf.boolean_mask(codes, mine), tf.boolean_mask(batch, mine)
                ids = vectorizer(batch).numpy()[:, : self.seq_len]
                records = np.zeros((len(ids), self.seq_len + 1), self.dtype)
                records[:, 0] = codes.numpy()
                records[:, 1:ids.shape[1] + 1] = ids
                out.write(records.tobytes())
                self.rows[part] += len(ids)
        return str(target)

    def records(self, part: str, *, seed: int | None = None, epoch=None):
        """(class index, ids) rows of a part: in file order, or (``seed`` and ``epoch``
        given) in that epoch's order: the files shuffled, read a few
        at a time, then SHUFFLE_ROWS rows shuffled, all by seeds of the epoch."""
        width = self.seq_len + 1
        dtype = tf.uint16 if self.dtype == np.uint16 else tf.int32
        classes = tf.constant(self.spooled.class_of_code, tf.int64)

        def read(files):
            return tf.data.FixedLengthRecordDataset(files, width * np.dtype(self.dtype).itemsize)

        files = self.files[part]
        if seed is None:
            rows = read(files)
        else:
            rows = (tf.data.Dataset.from_tensor_slices(files)
                    .shuffle(len(files), seed=epoch_seed(seed, epoch, 3),
                             reshuffle_each_iteration=False)
                    .interleave(read, cycle_length=min(_CYCLE, len(files)), block_length=16)
                    .shuffle(SHUFFLE_ROWS, seed=epoch_seed(seed, epoch, 4),
                             reshuffle_each_iteration=False))

        def decode(record):
            values = tf.cast(tf.io.decode_raw(record, dtype), tf.int64)
            return tf.gather(classes, values[0]), values[1:]

        return rows.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def texts_of_file(path):
    """(label codes, texts) batches of one spooled file, in its order."""
    return (tf.data.TextLineDataset(str(path)).batch(READ_BATCH)
            .map(_code_and_text, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(2))


def _row(class_weights: np.ndarray | None):
    """(class index, ids) -> (ids, label, length, weight)."""
    weights = None if class_weights is None else tf.constant(class_weights, tf.float32)

    def row(y, x):
        n = tf.math.count_nonzero(x, dtype=tf.int32)
        w = tf.constant(1.0) if weights is None else tf.gather(weights, y)
        return x, tf.cast(y, tf.float32), n, w

    return row


def ids_batches(ids: IdFiles, part: str, batch_size: int, *,
                class_weights: np.ndarray | None = None, keep_order: bool = False):
    """(ids, labels[, weights]) batches of a part in file order, for validation, or ids
    only (``keep_order``), for scores."""
    rows = ids.spooled.rows(part)
    data = ids.records(part).map(_row(class_weights), num_parallel_calls=tf.data.AUTOTUNE,
                                 deterministic=True)
    outputs = "x" if keep_order else "xy" if class_weights is None else "xyw"
    data = grouped_batches(data, batch_size, rows, sort=False, seed=None, outputs=outputs)
    return same_on_every_worker(data)


def ids_epochs(ids: IdFiles, part: str, batch_size: int, *, seed: int,
               class_weights: np.ndarray | None = None, full_only: bool = False,
               plan: tuple[int, int] | None = None):
    """(a function of the epoch (0-based) giving its training batches
    of texts of similar length, as fitloop.length_epochs makes them; steps an epoch).
    ``full_only``: every batch full (several devices split each batch evenly), the rows
    left over change each epoch. ``plan``: (steps, batches a step) of this worker's own
    rows on several machines (:func:`shard_plan`), in batches of ``batch_size`` a
    device."""
    rows = ids.rows[part]
    steps = rows // batch_size if full_only else -(-rows // batch_size)
    outputs = "xy" if class_weights is None else "xyw"

    def one_epoch(epoch):
        data = ids.records(part, seed=seed, epoch=epoch).map(
            _row(class_weights), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        data = grouped_batches(data, batch_size, rows, sort=True,
                               seed=epoch_seed(seed, epoch, 2),
                               drop_remainder=full_only or plan is not None, outputs=outputs)
        return data if plan is None else data.take(plan[0] * plan[1])

    return one_epoch, steps if plan is None else plan[0]


def shard_plan(rows: int, batch_size: int, workers: int, replicas: int) -> tuple[int, int, int]:
    """How ``workers`` machines with ``replicas`` devices in all train on ``rows``
    training rows, each on its own shard (IdFiles): (steps an epoch, the same on every
    worker so that none waits for another; rows a device takes a step; devices on each
    worker). The smallest shard has rows // workers rows."""
    per_device = max(1, batch_size // replicas)
    local = max(1, replicas // workers)
    return (rows // workers) // (per_device * local), per_device, local
