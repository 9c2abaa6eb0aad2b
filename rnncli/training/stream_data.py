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
    Epochs then read records, with no tokenizing."""

    def __init__(self, spooled: Spooled, vectorizer, seq_len: int):
        self.spooled, self.seq_len = spooled, seq_len
        self.dtype = np.uint16 if vectorizer.vocabulary_size() < 2**16 else np.int32
        self.files: dict[str, list[str]] = {}
        for part, entry in spooled.parts.items():
            self.files[part] = [self._write(f, vectorizer) for f in entry.files]

    def _write(self, path, vectorizer) -> str:
        target = path.with_suffix(".ids")
        with open(target, "wb") as out:
            for codes, batch in texts_of_file(path):
                ids = vectorizer(batch).numpy()[:, : self.seq_len]
                records = np.zeros((len(ids), self.seq_len + 1), self.dtype)
                records[:, 0] = codes.numpy()
                records[:, 1:ids.shape[1] + 1] = ids
                out.write(records.tobytes())
        return str(target)

    def records(self, part: str, *, seed: int | None = None):
        """(class index, ids) rows of a part: shuffled (``seed`` given) or in file order."""
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
                    .shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
                    .interleave(read, cycle_length=min(_CYCLE, len(files)), block_length=16)
                    .shuffle(SHUFFLE_ROWS, seed=seed + 1, reshuffle_each_iteration=True))

        def decode(record):
            values = tf.cast(tf.io.decode_raw(record, dtype), tf.int64)
            return tf.gather(classes, values[0]), values[1:]

        return rows.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def texts_of_file(path):
    """(label codes, texts) batches of one spooled file, in its order."""
    return (tf.data.TextLineDataset(str(path)).batch(READ_BATCH)
            .map(_code_and_text, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(2))


def ids_batches(ids: IdFiles, part: str, batch_size: int, *, seed: int | None = None,
                class_weights: np.ndarray | None = None, keep_order: bool = False,
                full_only: bool = False):
    """((ids, labels[, weights]) batches of a part for fit, or ids only (``keep_order``:
    in file order, for scores); steps). Other than in file order, batches are of texts of
    similar length, as fitloop.length_batches makes them; ``full_only``: every batch
    full (several devices split each batch evenly), the rows left over change each
    epoch."""
    weights = None if class_weights is None else tf.constant(class_weights, tf.float32)

    def row(y, x):
        n = tf.math.count_nonzero(x, dtype=tf.int32)
        w = tf.constant(1.0) if weights is None else tf.gather(weights, y)
        return x, tf.cast(y, tf.float32), n, w

    data = ids.records(part, seed=seed).map(row, num_parallel_calls=tf.data.AUTOTUNE,
                                            deterministic=True)
    rows = ids.spooled.rows(part)
    steps = rows // batch_size if full_only else -(-rows // batch_size)
    outputs = "x" if keep_order else "xy" if class_weights is None else "xyw"
    data = grouped_batches(data, batch_size, rows, sort=not keep_order, seed=seed,
                           drop_remainder=full_only, outputs=outputs)
    options = tf.data.Options()  # on several machines: the same batches on every worker,
    # each taking its share of each (as for arrays); sharding by file would give the
    # workers different numbers of batches, and synchronous training would wait forever
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    return data.with_options(options), steps
