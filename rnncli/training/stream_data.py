"""HEAVY: tf.data pipelines over a spooled file (data/spool.py): texts are read from disk
and tokenized on the fly, so no part of the data is held in memory whole.

Training rows: the bucket files in a new random order each epoch, a few read at a time
and interleaved, then a shuffle buffer of ``SHUFFLE_ROWS`` rows; token ids are made by the
model's own TextVectorization in parallel map calls, then batches of similar length are
formed as fitloop.length_batches forms them (sorted within windows of 50 batches, the
batches shuffled again). Validation and test rows are read in file order, which the
scores keep (their labels are in that order).
"""

from __future__ import annotations

import numpy as np

from rnncli.data.spool import Spooled
from rnncli.network.model import tf

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


def _split(spooled: Spooled):
    """A batch of lines -> (class indexes, texts)."""
    classes = tf.constant(spooled.class_of_code, tf.int64)

    def split(lines):
        parts = tf.strings.split(lines, "\t", maxsplit=1).to_tensor()
        codes = tf.strings.to_number(parts[:, 0], tf.int64)
        return tf.gather(classes, codes), parts[:, 1]

    return split


def texts(spooled: Spooled, part: str, *, batch: int = READ_BATCH, seed: int | None = None):
    """Batches of (class indexes, texts) of a part."""
    return (_lines(spooled, part, seed=seed).batch(batch)
            .map(_split(spooled), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))


def text_batches(spooled: Spooled, part: str, *, limit: int | None = None,
                 batch: int = 4096):
    """A part's texts as string tensors of ``batch`` texts (what counting.py counts);
    ``limit``: the first rows only."""
    lines = _lines(spooled, part)
    if limit is not None:
        lines = lines.take(limit)
    split = _split(spooled)
    for chunk in lines.batch(batch).prefetch(2):
        yield split(chunk)[1]


def sample_texts(spooled: Spooled, rows: int, seed: int) -> list[str]:
    """Up to ``rows`` training texts from across the file (shuffled buckets)."""
    out = []
    for _, chunk in texts(spooled, "train", batch=4096, seed=seed).take(-(-rows // 4096)):
        out.extend(t.decode("utf-8") for t in chunk.numpy().tolist())
    return out[:rows]


def ids_batches(spooled: Spooled, part: str, vectorizer, seq_len: int, batch_size: int, *,
                seed: int | None = None, class_weights: np.ndarray | None = None,
                keep_order: bool = False):
    """(ids, labels[, weights]) batches of a part for fit, or ids only (``keep_order``:
    in file order, for scores). Training (``seed`` given) batches texts of similar length."""
    weights = None if class_weights is None else tf.constant(class_weights, tf.float32)

    def tokenize(y, text):
        ids = vectorizer(text)[:, :seq_len]
        ids = tf.pad(ids, [[0, 0], [0, seq_len - tf.shape(ids)[1]]])
        ids = tf.ensure_shape(tf.cast(ids, tf.int64), [None, seq_len])
        n = tf.math.count_nonzero(ids, axis=1, dtype=tf.int32)
        w = tf.ones_like(y, tf.float32) if weights is None else tf.gather(weights, y)
        return ids, tf.cast(y, tf.float32), n, w

    data = (texts(spooled, part, seed=seed)
            .map(tokenize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .unbatch())
    steps = -(-spooled.rows(part) // batch_size)
    if not keep_order:  # batches of similar length, as fitloop.length_batches makes them
        def by_length(x, y, n, w):
            order = tf.argsort(n, stable=True)
            return tuple(tf.gather(t, order) for t in (x, y, n, w))

        data = data.batch(batch_size * 50).map(by_length).unbatch()
    data = data.batch(batch_size)
    if seed is not None:
        data = data.shuffle(50, seed=seed, reshuffle_each_iteration=True)

    def trim(x, y, n, w):
        x = x[:, : tf.maximum(1, tf.reduce_max(n))]
        if keep_order:
            return x
        return (x, y) if class_weights is None else (x, y, w)

    return (data.map(trim, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .apply(tf.data.experimental.assert_cardinality(steps))
            .prefetch(tf.data.AUTOTUNE)), steps
