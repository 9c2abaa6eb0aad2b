"""HEAVY: what training learns from counting the training texts' tokens: the vocabulary,
the sequence length, the share of Chinese and Japanese characters (:func:`derive_settings`),
and for a streamed file the n-gram model's n-grams and their idf (:func:`count_ngrams`).

The texts arrive in batches (lists of strings, or string tensors from tf.data), so a file
of millions of rows is counted in one pass. Counts are kept in a dict that is pruned
when it passes ``PRUNE_AT`` entries (the rarest are dropped, as lossy counting does), so
memory stays bounded whatever the rows; below that size nothing is dropped and the
result is exact (the in-memory path's vocabulary is the same as before streaming).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from rnncli.core.config import AUTO_BIGRAM_SHARE, MAX_TEXT_CHARS, TrainConfig
from rnncli.core.scripts import LONG_TOKEN
from rnncli.network.model import (
    AUTO_BIGRAM_DIM,
    AUTO_NGRAM_ORDER,
    AUTO_NGRAM_SOLVER,
    MAX_AUTO_SEQ_LEN,
    MAX_AUTO_TOKENS,
    MAX_NGRAMS,
    SPLIT_CHARS,
    STANDARDIZERS,
    tf,
)

PRUNE_AT = 4_000_000  # distinct tokens (or n-grams) kept while counting, at most
TEXT_BATCH = 4096


@dataclass(frozen=True)
class Derived:
    """What :func:`derive_settings` learns from the training texts."""

    config: TrainConfig  # max_tokens, seq_len, bigram_dim, ngram_order, ngram_solver resolved
    vocab: list[str]
    long_share: float  # of token occurrences longer than LONG_TOKEN characters
    char_share: float  # of token occurrences that are one Chinese or Japanese character


def text_batches(texts: list[str], batch: int = TEXT_BATCH):
    """The texts in batches of ``batch``."""
    for start in range(0, len(texts), batch):
        yield texts[start:start + batch]


def derive_settings(config: TrainConfig, texts: list[str] | None = None, *,
                    batches: Iterable | None = None) -> Derived:
    """Resolve ``max_tokens`` / ``seq_len`` from the training texts (a list, or
    ``batches`` of them); find the vocabulary.

    Vocabulary: tokens seen at least twice, most frequent first, at most ``max_tokens``
    (auto: up to 20,000). Sequence length (auto): the 95th percentile of token counts,
    rounded up to a multiple of 8, between 16 and 800. Batches are cut to their longest
    text, so a generous cap costs little: only the long texts pay for it.
    """
    counter, lengths = _Counter(), np.zeros(MAX_TEXT_CHARS + 2, np.int64)  # a histogram
    long = chars = 0
    for batch in (text_batches(texts) if batches is None else batches):
        ragged = tf.strings.split(STANDARDIZERS[config.tokenizer](tf.convert_to_tensor(batch)))
        lengths += np.bincount(ragged.row_lengths().numpy(), minlength=len(lengths))
        long += int(tf.reduce_sum(tf.cast(
            tf.strings.length(ragged.flat_values, unit="UTF8_CHAR") > LONG_TOKEN, tf.int64)))
        chars += int(tf.reduce_sum(tf.cast(
            tf.strings.regex_full_match(ragged.flat_values, f"[{SPLIT_CHARS}]"), tf.int64)))
        counter.add(*tf.unique_with_counts(ragged.flat_values)[::2])
    ranked = counter.ranked()
    seq_len = config.seq_len
    if seq_len is None:
        p95 = _percentile(lengths, 95)
        seq_len = int(min(MAX_AUTO_SEQ_LEN, max(16, 8 * int(np.ceil(p95 / 8)))))
    max_tokens = config.max_tokens
    if max_tokens is None:
        frequent = sum(1 for _, c in ranked if c >= 2)
        max_tokens = int(min(MAX_AUTO_TOKENS, frequent) + 2)  # + padding and [UNK]
    vocab = [t.decode("utf-8") for t, _ in ranked[: max_tokens - 2]]
    texts = int(lengths.sum())
    words = int(np.dot(lengths, np.arange(len(lengths)))) - texts  # without the start marker
    long_share, char_share = (long / words, chars / words) if words else (0.0, 0.0)
    chars_mostly = char_share > AUTO_BIGRAM_SHARE
    bigram_dim = config.bigram_dim
    if bigram_dim is None:
        bigram_dim = AUTO_BIGRAM_DIM if chars_mostly else 0
    ngram_order = config.ngram_order
    if ngram_order is None:
        ngram_order = AUTO_NGRAM_ORDER[chars_mostly]
    return Derived(config.replace(seq_len=seq_len, max_tokens=max(3, len(vocab) + 2),
                                  bigram_dim=bigram_dim, ngram_order=ngram_order,
                                  ngram_solver=config.ngram_solver
                                  or AUTO_NGRAM_SOLVER[chars_mostly]),
                   vocab, long_share, char_share)


def _percentile(histogram: np.ndarray, q: float) -> float:
    """np.percentile's (linear) ``q``-th percentile of the values a histogram counts."""
    n = int(histogram.sum())
    position = q / 100 * (n - 1)
    below = int(np.floor(position))
    cumulative = np.cumsum(histogram)
    low, high = (int(np.searchsorted(cumulative, k, side="right"))
                 for k in (below, min(below + 1, n - 1)))
    return low + (position - below) * (high - low)


def count_ngrams(batches: Iterable, tokenizer: str, order: int) -> tuple[list[str], np.ndarray]:
    """Token 1- to ``order``-grams for the n-gram model, and their idf, from one pass over
    ``batches`` of texts: of the n-grams found in at least two texts, the ``MAX_NGRAMS``
    found in the most texts (the in-memory path, model.derive_ngrams, ranks by
    occurrences instead; with pruning, a document count is what bounds the noise). The
    start marker's n-grams are left out, as there. idf is scikit-learn's smoothed
    ``log((1 + n) / (1 + df)) + 1``; the first entry ([UNK]) is 0."""
    counter, texts = _Counter(), 0
    for batch in batches:
        tokens = tf.strings.split(STANDARDIZERS[tokenizer](tf.convert_to_tensor(batch)))
        grams = tf.strings.ngrams(tokens[:, 1:], ngram_width=list(range(1, order + 1)),
                                  separator=" ")
        texts += int(grams.nrows())
        counter.add(*_document_counts(grams))
    ranked = [(g, n) for g, n in counter.ranked() if n >= 2][:MAX_NGRAMS]
    df = np.array([n for _, n in ranked], np.float64)
    idf = np.log((1 + texts) / (1 + df)) + 1
    return ([g.decode("utf-8") for g, _ in ranked],
            np.concatenate([[0.0], idf]).astype(np.float32))


def _document_counts(grams):
    """(distinct n-grams of a ragged batch, the number of its texts holding each)."""
    flat = grams.flat_values
    if int(tf.size(flat)) == 0:
        return flat, tf.zeros([0], tf.int32)
    key = tf.strings.join([tf.strings.as_string(grams.value_rowids()), flat], separator="\x1f")
    _, index = tf.unique(key)
    first = tf.math.unsorted_segment_min(tf.range(tf.size(flat)), index,
                                         tf.reduce_max(index) + 1)
    values, _, counts = tf.unique_with_counts(tf.gather(flat, first))
    return values, counts


class _Counter:
    """Counts of byte strings, pruned to at most ``PRUNE_AT`` entries."""

    def __init__(self):
        self.counts: dict[bytes, int] = {}

    def add(self, values, counts) -> None:
        table = self.counts
        for token, count in zip(values.numpy().tolist(), counts.numpy().tolist()):
            table[token] = table.get(token, 0) + count
        if len(table) > PRUNE_AT:
            self._prune()

    def _prune(self) -> None:
        """Drop the rarest entries, keeping about half of PRUNE_AT."""
        counts = np.fromiter(self.counts.values(), np.int64, len(self.counts))
        floor = int(np.partition(counts, len(counts) - PRUNE_AT // 2)[len(counts) - PRUNE_AT // 2])
        self.counts = {t: c for t, c in self.counts.items() if c > floor}

    def ranked(self) -> list[tuple[bytes, int]]:
        """Most frequent first; ties in byte order."""
        return sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
