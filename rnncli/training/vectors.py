"""Word vectors to start the embedding from: a GloVe/word2vec text file, or vectors learned
from unlabelled texts (positive PMI + truncated SVD, a count-based cousin of word2vec).

NumPy, and SciPy's sparse matrices for the co-occurrence counts; the tokens come from the
model's own vectorizer, so the vectors line up with the vocabulary exactly.
:func:`initial_vectors` gives a training run the rows to start from.
"""

from __future__ import annotations

import gzip
import time
import zlib
from pathlib import Path

import numpy as np

from rnncli.core.config import TrainConfig
from rnncli.core.errors import DataError

# Words (most frequent first) and contexts that learn_vectors counts, in a sparse table
# (memory grows with the pairs seen, not with LEARN_WORDS x CONTEXTS); rarer words keep a
# random start.
LEARN_WORDS = 50_000
CONTEXTS = 10_000


def read_vectors(path: str | Path, vocab: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Vectors for ``vocab`` from a GloVe or word2vec *text* file (optionally gzipped).

    Returns (matrix with one row per vocabulary entry, boolean mask of rows found). A
    word2vec header line ("count dim") is skipped; the first vector fixes the dimension,
    so words that contain spaces (as in GloVe 840B) are read too.
    """
    path = Path(path)
    index = {word: i for i, word in enumerate(vocab)}
    matrix = None
    found = np.zeros(len(vocab), dtype=bool)
    try:
        with open(path, "rb") as fh:
            gzipped = fh.read(2) == b"\x1f\x8b"
        with (gzip.open if gzipped else open)(path, "rt", encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                parts = line.rstrip().split(" ")
                if number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                    continue  # word2vec header
                if matrix is None:
                    if len(parts) < 2:
                        raise DataError(f"{path}: line {number}: expected 'word v1 v2 ...'")
                    matrix = np.zeros((len(vocab), len(parts) - 1), dtype=np.float32)
                dim = matrix.shape[1]
                if len(parts) <= dim:
                    raise DataError(f"{path}: line {number}: {len(parts) - 1} numbers where "
                                    f"the first vector has {dim}")
                i = index.get(" ".join(parts[:-dim]))
                if i is not None and not found[i]:
                    matrix[i] = _numbers(path, number, parts[-dim:])
                    found[i] = True
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such file; give a GloVe/word2vec text file") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text; --embeddings reads the text format of "
                        "GloVe/word2vec (for a binary .bin, convert it to text first)") from exc
    except (EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from exc
    if matrix is None:
        raise DataError(f"{path}: holds no vectors")
    return matrix, found


def _numbers(path: Path, number: int, values: list[str]) -> np.ndarray:
    try:
        vector = np.asarray(values, dtype=np.float32)
    except ValueError as exc:
        raise DataError(f"{path}: line {number}: not a vector of numbers") from exc
    if not np.all(np.isfinite(vector)):
        raise DataError(f"{path}: line {number}: holds NaN or infinite values")
    return vector


def learn_vectors(id_batches, vocab_size: int, dim: int, *, window: int = 4,
                  seed: int = 0, flush_pairs: int = 50_000_000) -> np.ndarray:
    """Word vectors from token ids by PPMI + randomized SVD (Levy & Goldberg, 2014).

    ``id_batches`` yields int arrays (rows of token ids, 0 = padding, 1 = [UNK]; ids are
    frequency-ranked). Co-occurrences within ``window`` tokens, weighted 1/distance, are
    counted for the LEARN_WORDS most frequent words against the CONTEXTS most frequent
    ones; PMI uses context-distribution smoothing (0.75) and negatives are clipped.
    Returns (vocab_size, dim) float32 scaled like Keras's default embedding initializer;
    rows it did not learn are zero (the caller keeps their random start).
    """
    from scipy import sparse

    words = min(vocab_size, LEARN_WORDS)
    contexts = min(vocab_size, CONTEXTS)
    counts = sparse.csr_matrix((words, contexts), dtype=np.float32)
    pending: dict[int, list[np.ndarray]] = {}
    size = 0
    for ids in id_batches:
        ids = np.asarray(ids, dtype=np.int64)
        for d in range(1, window + 1):
            left, right = ids[:, :-d].ravel(), ids[:, d:].ravel()
            for w, c in ((left, right), (right, left)):
                keep = (w > 1) & (w < words) & (c > 1) & (c < contexts)
                pending.setdefault(d, []).append(w[keep] * contexts + c[keep])
                size += int(keep.sum())
        if size > flush_pairs:
            counts = counts + _pair_counts(pending, words, contexts)
            pending, size = {}, 0
    counts = (counts + _pair_counts(pending, words, contexts)).tocoo()
    total = float(counts.data.sum())
    if total == 0:
        raise DataError("no word co-occurrences in the texts to learn word vectors from")
    word_p = np.bincount(counts.row, weights=counts.data, minlength=words) / total
    context_p = np.bincount(counts.col, weights=counts.data, minlength=contexts) ** 0.75
    context_p /= context_p.sum()
    # PMI of the pairs seen (an unseen pair's is -inf, clipped to 0 like every negative)
    pmi = (np.log(counts.data / total) - np.log(word_p[counts.row])
           - np.log(context_p[counts.col]))
    keep = pmi > 0
    ppmi = sparse.csr_matrix((pmi[keep].astype(np.float32),
                              (counts.row[keep], counts.col[keep])), shape=(words, contexts))
    del counts, pmi
    vectors = _randomized_svd(ppmi, dim, seed=seed)
    out = np.zeros((vocab_size, dim), dtype=np.float32)
    # the spread of Keras's default Embedding initializer, uniform(-0.05, 0.05)
    out[2:words] = vectors[2:] * (0.029 / max(float(vectors[2:].std()), 1e-9))
    return out


def _pair_counts(pending: dict[int, list[np.ndarray]], words: int, contexts: int):
    """The pairs gathered so far as a sparse (words, contexts) table of n / distance."""
    from scipy import sparse

    table = sparse.csr_matrix((words, contexts), dtype=np.float32)
    for d, parts in pending.items():
        pairs, n = np.unique(np.concatenate(parts), return_counts=True)
        table = table + sparse.csr_matrix(
            ((n / d).astype(np.float32), (pairs // contexts, pairs % contexts)),
            shape=(words, contexts))
    return table


def _randomized_svd(matrix: np.ndarray, rank: int, *, seed: int, oversample: int = 10,
                    iterations: int = 2) -> np.ndarray:
    """U * sqrt(S) of a rank-``rank`` SVD (Halko, Martinsson & Tropp, 2011)."""
    rng = np.random.default_rng(seed)
    k = min(rank + oversample, min(matrix.shape))
    q, _ = np.linalg.qr(matrix @ rng.standard_normal((matrix.shape[1], k)).astype(np.float32))
    for _ in range(iterations):
        q, _ = np.linalg.qr(matrix.T @ q)
        q, _ = np.linalg.qr(matrix @ q)
    u_small, s, _ = np.linalg.svd((matrix.T @ q).T, full_matrices=False)  # q.T @ matrix
    u = (q @ u_small)[:, :rank] * np.sqrt(s[:rank])
    if u.shape[1] < rank:  # tiny vocabularies: pad to the embedding size
        u = np.pad(u, ((0, 0), (0, rank - u.shape[1])))
    return u


def initial_vectors(vectorizer, vocab: list[str], config: TrainConfig,
                    embeddings: str | Path | None, unlabelled_texts: list[str] | None,
                    train_texts: list[str], reporter) -> tuple[np.ndarray | None, int]:
    """(rows for the embedding matrix (index 0 padding, 1 [UNK], then ``vocab``) or None,
    how many of ``vocab`` the ``embeddings`` file has a vector for)."""
    from rnncli.network import model as M

    if embeddings is not None:
        matrix, found = read_vectors(embeddings, vocab)
        reporter.message(f"{Path(embeddings).name}: vectors for {found.sum()} of {len(vocab)} "
                         "words")
        return (np.concatenate([np.zeros((2, matrix.shape[1]), np.float32), matrix]),
                int(found.sum()))
    if not config.word_vectors and unlabelled_texts is None:
        return None, 0
    started = time.perf_counter()
    texts = (unlabelled_texts or []) + train_texts
    batches = (M.vectorize(vectorizer, texts[i:i + 2048], config.seq_len)
               for i in range(0, len(texts), 2048))
    matrix = learn_vectors(batches, config.max_tokens, config.embed_dim, seed=config.seed)
    reporter.message(f"learned word vectors from {len(texts)} texts in "
                     f"{time.perf_counter() - started:.0f}s")
    return matrix, 0
