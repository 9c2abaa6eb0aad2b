"""Word vectors to start the embedding from: a GloVe/word2vec text file, or vectors learned
from unlabelled texts (positive PMI + truncated SVD, a count-based cousin of word2vec).

NumPy only; the tokens come from the model's own vectorizer, so the vectors line up with
the vocabulary exactly.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from rnncli.errors import DataError


def read_vectors(path: str | Path, vocab: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Vectors for ``vocab`` from a GloVe or word2vec text file (optionally .gz).

    Returns (matrix with one row per vocabulary entry, boolean mask of rows found). A
    word2vec header line ("count dim") is skipped. Words missing from the file keep a
    zero row (the caller initialises them).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such embeddings file; give a GloVe/word2vec .txt file")
    index = {word: i for i, word in enumerate(vocab)}
    matrix = None
    found = np.zeros(len(vocab), dtype=bool)
    opener = gzip.open if path.read_bytes()[:2] == b"\x1f\x8b" else open
    with opener(path, "rt", encoding="utf-8", errors="strict") as fh:
        for number, line in enumerate(fh, start=1):
            parts = line.rstrip("\n").rstrip().split(" ")
            if number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                continue  # word2vec header
            if len(parts) < 3:
                raise DataError(f"{path}: line {number}: expected 'word v1 v2 ...'")
            if matrix is None:
                matrix = np.zeros((len(vocab), len(parts) - 1), dtype=np.float32)
            if len(parts) - 1 != matrix.shape[1]:
                raise DataError(f"{path}: line {number}: {len(parts) - 1} numbers where the "
                                f"first vector has {matrix.shape[1]}")
            i = index.get(parts[0])
            if i is not None and not found[i]:
                try:
                    matrix[i] = np.asarray(parts[1:], dtype=np.float32)
                except ValueError as exc:
                    raise DataError(f"{path}: line {number}: not a vector of numbers") from exc
                found[i] = True
    if matrix is None:
        raise DataError(f"{path}: holds no vectors")
    return matrix, found


def learn_vectors(id_batches, vocab_size: int, dim: int, *, window: int = 4,
                  contexts: int = 10000, seed: int = 0) -> np.ndarray:
    """Word vectors from token ids by PPMI + randomized SVD (Levy & Goldberg, 2014).

    ``id_batches`` yields int arrays (rows of token ids, 0 = padding). Co-occurrences
    within ``window`` tokens are counted against the ``contexts`` most frequent tokens
    (ids are frequency-ranked), weighted 1/distance; PMI uses context-distribution
    smoothing (0.75) and negatives are clipped. Returns (vocab_size, dim) float32 with
    the spread of Keras's default embedding initializer, ready for an Embedding layer.
    """
    contexts = min(contexts, vocab_size)
    counts = np.zeros(vocab_size * contexts, dtype=np.float32)
    pending: list[tuple[np.ndarray, np.ndarray]] = []
    pending_size = 0

    def flush():
        nonlocal pending, pending_size
        if pending:
            pairs = np.concatenate([p for p, _ in pending])
            weights = np.concatenate([w for _, w in pending])
            counts[:] += np.bincount(pairs, weights=weights, minlength=counts.size)
        pending, pending_size = [], 0

    for ids in id_batches:
        ids = np.asarray(ids, dtype=np.int64)
        for d in range(1, window + 1):
            left, right = ids[:, :-d].ravel(), ids[:, d:].ravel()
            for w, c in ((left, right), (right, left)):
                keep = (w > 1) & (c > 1) & (c < contexts)  # no padding, no [UNK]
                pairs = w[keep] * contexts + c[keep]
                pending.append((pairs, np.full(pairs.size, 1.0 / d, dtype=np.float32)))
                pending_size += pairs.size
        if pending_size > 50_000_000:  # one bincount per ~50M pairs: bounded memory
            flush()
    flush()
    counts = counts.reshape(vocab_size, contexts)
    total = counts.sum()
    if total == 0:
        raise DataError("no word co-occurrences in the unlabelled texts")
    word_p = counts.sum(1, keepdims=True) / total
    context_p = counts.sum(0, keepdims=True) ** 0.75
    context_p /= context_p.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        pmi = np.log(counts / total) - np.log(word_p) - np.log(context_p)
    ppmi = np.where(np.isfinite(pmi) & (pmi > 0), pmi, 0).astype(np.float32)
    del counts, pmi
    vectors = _randomized_svd(ppmi, dim, seed=seed)
    # the spread of Keras's default Embedding initializer, uniform(-0.05, 0.05)
    return (vectors * (0.029 / max(float(vectors.std()), 1e-9))).astype(np.float32)


def _randomized_svd(matrix: np.ndarray, rank: int, *, seed: int, oversample: int = 10,
                    iterations: int = 2) -> np.ndarray:
    """U * sqrt(S) of a rank-``rank`` SVD (Halko, Martinsson & Tropp, 2011)."""
    rng = np.random.default_rng(seed)
    k = min(rank + oversample, min(matrix.shape))
    q, _ = np.linalg.qr(matrix @ rng.standard_normal((matrix.shape[1], k)).astype(np.float32))
    for _ in range(iterations):
        q, _ = np.linalg.qr(matrix.T @ q)
        q, _ = np.linalg.qr(matrix @ q)
    u_small, s, _ = np.linalg.svd(q.T @ matrix, full_matrices=False)
    u = (q @ u_small)[:, :rank] * np.sqrt(s[:rank])
    if u.shape[1] < rank:  # tiny vocabularies: pad to the embedding size
        u = np.pad(u, ((0, 0), (0, rank - u.shape[1])))
    return u
