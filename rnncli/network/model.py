"""HEAVY: the Keras graph built from a TrainConfig.

Two models share the same layers:
- the *core* takes token ids (what ``fit`` trains on, fed by a tf.data pipeline that
  vectorizes once up front), and
- the *text model* takes a flat batch of raw strings (``keras.Input(shape=(),
  dtype="string")``) and runs TextVectorization -> Truncate -> core. That is what is saved as
  ``model.keras`` and exported as a SavedModel: the vocabulary travels inside, and a
  flat list of n strings is served directly (shape ``(n,)`` in, ``(n, 1)`` out).

The recurrent layers keep Keras's cuDNN conditions (tanh/sigmoid, no recurrent dropout,
``reset_after=True``, right padding from TextVectorization, valid masks). Every text
starts with the marker token ``xxbos``, so no row is ever fully masked, even an empty
text or one with only punctuation.
"""

from __future__ import annotations

import functools

import numpy as np

from rnncli.core.config import MAX_TEXT_CHARS, TrainConfig, output_width
from rnncli.core.scripts import FULLWIDTH_OFFSET, FULLWIDTH_RANGES, SPLIT_MARKS
from rnncli.network.runtime import import_tensorflow

tf = import_tensorflow()
import keras  # noqa: E402

from rnncli.network.layers import (  # noqa: E402
    AttentionPooling,
    Blend,
    MaskedMaxPooling,
    NgramLogistic,
    Perturb,
    Temperature,
    TokenPairs,
    Truncate,
)

START_TOKEN = "xxbos"
MAX_AUTO_TOKENS = 20000
MAX_AUTO_SEQ_LEN = 800
# Token pairs (layers.TokenPairs): hash buckets, and the embedding size "auto" gives when
# over half of the training tokens are single Chinese or Japanese characters. Measured on
# the hotel reviews, on two splits kept apart from the rows docs/accuracy.md quotes: defaults with
# pairs 0.9110 and 0.8919 test accuracy, without 0.8967 and 0.8903.
BIGRAM_BUCKETS = 2**15
AUTO_BIGRAM_DIM = 32
MAX_NGRAMS = 200_000  # token n-grams kept for the n-gram model (seen in 2+ texts)
# The n-gram model's longest n-grams when "auto": 3 where token pairs are on (most tokens
# are Chinese or Japanese characters, and many words are two to four of them), else 2. On
# the hotel reviews' seven benchmark splits, character 1-3-grams raised the mean test
# accuracy from 0.8983 to 0.9022 (better on five); word 3-grams were not measured.
AUTO_NGRAM_ORDER = {True: 3, False: 2}
# ... and its solver (training/ngrams.py says what was measured).
AUTO_NGRAM_SOLVER = {True: "lbfgs", False: "adam"}
KEPT_CHARS = r"\p{L}\p{M}\p{N}'!?"  # an RE2 class body: what standardize keeps


# Scripts written without spaces between words, whose every character is a token (RE2 class
# body): Chinese and Japanese (Han, Hiragana, Katakana) and the prolonged sound mark ー,
# which Unicode puts in the Common script (full-width U+30FC and half-width U+FF70).
SPLIT_CHARS = r"\p{Han}\p{Hiragana}\p{Katakana}\x{30FC}\x{FF70}"


@keras.saving.register_keras_serializable(package="rnncli", name="standardize")
def standardize(text):
    """Tokenizer "words" (models of format 2 and older): cut at MAX_TEXT_CHARS,
    lowercase, drop HTML tags, keep letters/digits/apostrophes/!/?, prefix the marker.

    Unicode line breaks such as NEL (\\x85) are removed here because a vocabulary token
    that holds one cannot be reloaded: Keras writes the vocabulary one token per line, and
    reading it back splits that token, which fails with "repeated term ''"."""
    return _standardize(text, cjk=False)


@keras.saving.register_keras_serializable(package="rnncli", name="standardize_cjk")
def standardize_cjk(text):
    """Tokenizer "cjk-chars": as :func:`standardize`, and also full-width forms read as
    ASCII (ＡＢＣ１２３！？ -> abc123!?; not ＜ ＞) and every Chinese or Japanese
    character is a token of its own, while words of other scripts stay whole
    ("这款iPhone很好用" -> 这 款 iphone 很 好 用)."""
    return _standardize(text, cjk=True)


STANDARDIZERS = {"words": standardize, "cjk-chars": standardize_cjk}


def _standardize(text, *, cjk: bool):
    text = tf.strings.substr(text, 0, MAX_TEXT_CHARS, unit="UTF8_CHAR")
    # tf.strings.lower stops at a NUL byte and drops the rest of the text.
    text = tf.strings.regex_replace(text, r"\x00", " ")
    if cjk:
        text = _fold_fullwidth(text)
    text = tf.strings.lower(text, encoding="utf-8")
    text = tf.strings.regex_replace(text, r"<[^<>]{0,200}>", " ")
    text = tf.strings.regex_replace(text, "[\u2018\u2019\u02bc`]", "'")
    text = tf.strings.regex_replace(text, f"[^{KEPT_CHARS}]+", " ")
    if cjk:
        text = tf.strings.regex_replace(text, f"([{SPLIT_CHARS}][{_class(SPLIT_MARKS)}]*)",
                                        r" \1 ")
    text = tf.strings.regex_replace(text, r"([!?])", r" \1 ")
    text = tf.strings.regex_replace(text, r"(^|\s)'+|'+(\s|$)", " ")
    return tf.strings.join([START_TOKEN + " ", text])


def _fold_fullwidth(text):
    """Full-width forms to ASCII (scripts.FULLWIDTH_RANGES). TensorFlow has no NFKC, so the
    codepoints are shifted; only the texts that hold such a form are decoded (a regex scan
    is ~20x cheaper)."""
    flat = tf.reshape(text, [-1])
    rows = tf.where(tf.strings.regex_full_match(flat, f"(?s).*[{_class(FULLWIDTH_RANGES)}].*"))
    codes = tf.strings.unicode_decode(tf.gather_nd(flat, rows), "UTF-8", errors="replace")

    def fold(c):
        inside = functools.reduce(tf.logical_or, [(c >= first) & (c <= last)
                                                  for first, last in FULLWIDTH_RANGES])
        return tf.where(inside, c - FULLWIDTH_OFFSET, c)

    codes = tf.ragged.map_flat_values(fold, codes)
    flat = tf.tensor_scatter_nd_update(flat, rows, tf.strings.unicode_encode(codes, "UTF-8"))
    return tf.reshape(flat, tf.shape(text))


def _class(ranges) -> str:
    """An RE2 character class body for (first, last) codepoint ranges."""
    return "".join(f"\\x{{{first:X}}}-\\x{{{last:X}}}" for first, last in ranges)


@functools.lru_cache(maxsize=1)  # the same in a process; a few seconds to compute
def standardize_tables() -> dict:
    """What :func:`standardize` and :func:`standardize_cjk` do to each character, as this
    TensorFlow does it.

    ``keep``: (first, last) codepoint ranges of the characters kept (RE2's Unicode
    classes); ``lower_from`` / ``lower_to``: every character that ICU's lower-casing
    changes, and what it becomes; ``cased`` / ``ignorable``: ranges of the characters
    ICU counts as cased and as case-ignorable, which decide whether a capital sigma is
    final (ς) or not (σ); ``split``: ranges of the characters that are tokens of their
    own (``SPLIT_CHARS``). ``standardize.Standardizer`` reproduces both standardizations
    from these, whatever Unicode version Python's own tables follow.
    """
    codepoints = np.array([c for c in range(1, 0x110000) if not 0xD800 <= c <= 0xDFFF])
    chars = [chr(c) for c in codepoints]  # NUL never reaches lower: standardize replaces it

    def lower(texts):
        return tf.strings.lower(texts, encoding="utf-8").numpy()

    lowered = lower(chars)
    changed = [i for i, low in enumerate(lowered) if low != chars[i].encode("utf-8")]
    final = "\u03c2".encode("utf-8")
    # Final_Sigma: "xΣ" ends in ς when x is cased; "AxΣ" also when x is case-ignorable.
    cased = np.array([low.endswith(final) for low in lower([c + "\u03a3" for c in chars])])
    skipped = np.array([low.endswith(final) for low in lower(["A" + c + "\u03a3" for c in chars])])
    kept = tf.strings.regex_full_match(chars, f"[{KEPT_CHARS}]").numpy()
    split = tf.strings.regex_full_match(chars, f"[{SPLIT_CHARS}]").numpy()
    return {"keep": _ranges(codepoints[kept]), "cased": _ranges(codepoints[cased]),
            "split": _ranges(codepoints[split]),
            "ignorable": _ranges(codepoints[skipped & ~cased]),
            "lower_from": codepoints[changed].tolist(),
            "lower_to": [lowered[i].decode("utf-8") for i in changed],
            "max_chars": MAX_TEXT_CHARS, "start_token": START_TOKEN}


def _ranges(codepoints: np.ndarray) -> np.ndarray:
    """Sorted codepoints -> (first, last) rows of their runs."""
    breaks = np.flatnonzero(np.diff(codepoints) != 1)
    ranges = np.stack([codepoints[np.r_[0, breaks + 1]],
                       codepoints[np.r_[breaks, len(codepoints) - 1]]], 1)
    ranges.setflags(write=False)
    return ranges


def build_vectorizer(config: TrainConfig, vocab: list[str]):
    layer = keras.layers.TextVectorization(
        max_tokens=config.max_tokens,
        standardize=STANDARDIZERS[config.tokenizer],
        split="whitespace",
        output_mode="int",
        output_sequence_length=None,  # pad per batch; Truncate caps the length
        name="vectorizer",
    )
    layer.set_vocabulary(vocab)
    return layer


def derive_ngrams(texts: list[str], tokenizer: str,
                  order: int = 2) -> tuple[list[str], np.ndarray]:
    """Token 1- to ``order``-grams for the n-gram model, and their idf weights (word
    n-grams, and character n-grams in Chinese and Japanese).

    Of the ``MAX_NGRAMS`` most frequent n-grams of the training texts, those that occur in
    at least two texts (one-off n-grams are mostly noise); the start marker and the n-grams
    that hold it are left out, so a text with no known n-gram has no features at all. idf
    is scikit-learn's smoothed ``log((1 + n) / (1 + df)) + 1``; the first entry ([UNK]) is 0.
    """
    probe = build_ngram_vectorizer(None, tokenizer, order, max_tokens=MAX_NGRAMS + 1)
    probe.adapt(tf.data.Dataset.from_tensor_slices(texts).batch(1024))
    counts = ngram_counts(probe, texts)
    found = probe.get_vocabulary()
    df = np.bincount(counts.indices[:, 1].numpy(), minlength=len(found))
    marker = START_TOKEN + " "
    keep = np.array([i for i in np.flatnonzero(df >= 2)
                     if i > 0 and found[i] != START_TOKEN and not found[i].startswith(marker)],
                    dtype=np.int64)  # index 0 is [UNK]
    idf = np.log((1 + len(texts)) / (1 + df[keep])) + 1
    return [str(found[i]) for i in keep], np.concatenate([[0.0], idf]).astype(np.float32)


def build_ngram_vectorizer(vocab: list[str] | None, tokenizer: str, order: int = 2,
                           max_tokens: int | None = None):
    """Raw strings -> sparse counts of token 1- to ``order``-grams (same standardization as
    the RNN's)."""
    layer = keras.layers.TextVectorization(
        max_tokens=max_tokens, standardize=STANDARDIZERS[tokenizer], split="whitespace",
        ngrams=order,
        output_mode="count", sparse=True, name="ngram_vectorizer")
    if vocab is not None:
        layer.set_vocabulary(vocab)
    return layer


def ngram_counts(vectorizer, texts: list[str], batch: int = 1024):
    """One sparse (len(texts), vocabulary) count matrix, built in chunks."""
    parts = [vectorizer(tf.constant(texts[i:i + batch])) for i in range(0, len(texts), batch)]
    if not parts:
        return tf.sparse.SparseTensor(tf.zeros((0, 2), tf.int64), tf.zeros((0,), tf.float32),
                                      [0, vectorizer.vocabulary_size()])
    return tf.sparse.concat(0, parts) if len(parts) > 1 else parts[0]


def build_ngram_model(size: int, idf: np.ndarray | None = None, outputs: int = 1):
    """Sparse n-gram counts (batch, size) -> probability (batch, 1), or with ``outputs``
    k > 1 the k class probabilities (batch, k)."""
    counts = keras.Input(shape=(size,), sparse=True, name="ngram_counts")
    layer = NgramLogistic(size, outputs=outputs, name="ngram_logistic")
    model = keras.Model(counts, layer(counts), name="ngram")
    if idf is not None:
        layer.idf.assign(idf)
    return model


def build_core(config: TrainConfig, *, perturbable: bool = False):
    """Token ids (batch, time) -> positive-class probability (batch, 1), or the class
    probabilities (batch, k) of a model of k > 2 classes (softmax).

    ``perturbable``: (the core, a model (ids, noise) -> (probabilities, embedded tokens)
    that shares every layer of the core and adds ``noise`` to the embedded tokens before
    the dropout: what adversarial training perturbs, training/adversarial.py)."""
    ids = keras.Input(shape=(None,), dtype="int64", name="ids")
    encoder = Encoder(config, layers=config.layers, dropout=config.dropout,
                      sequences=config.pooling != "last")
    states, _ = encoder(ids)
    head = _Head(config)
    core = keras.Model(ids, head(states), name="core")
    if not perturbable:
        return core
    noise = keras.Input(shape=(None, encoder.width), name="noise")
    states, embedded = encoder(ids, noise)
    return core, keras.Model([ids, noise], [head(states), embedded], name="perturbed")


class _Shared:
    """Layers made once, each at its first use (so in the order, and with the initial
    weights of a given seed, that earlier releases gave), and applied again by later
    calls to new inputs (shared weights)."""

    def __init__(self, config: TrainConfig):
        self.config = config
        self._made: dict[str, keras.layers.Layer] = {}

    def _layer(self, name: str, make):
        if name not in self._made:
            self._made[name] = make()
        return self._made[name]


class _Head(_Shared):
    """The pooling, dropout and output layers of the classifier."""

    def __call__(self, x):
        config, width = self.config, output_width(self.config.classes)
        pooling = {"max": lambda: MaskedMaxPooling(name="max_pool"),
                   "mean": lambda: keras.layers.GlobalAveragePooling1D(name="mean_pool"),
                   "attention": lambda: AttentionPooling(config.units, name="attention_pool"),
                   }.get(config.pooling)  # "last": the recurrent layer's last states
        if pooling is not None:
            x = self._layer("pooling", pooling)(x)
        if config.dropout:
            x = self._layer("dropout", lambda: keras.layers.Dropout(config.dropout,
                                                                    name="dropout"))(x)
        return self._layer("head", lambda: keras.layers.Dense(
            width, activation="sigmoid" if width == 1 else "softmax", dtype="float32",
            name="head"))(x)


class Encoder(_Shared):
    """Token ids -> the recurrent states: the embedding (with the token pairs'), dropout and
    ``layers`` bidirectional layers, the last giving every step's states if ``sequences``.
    The classifier (build_core) and the language models of pretraining share these layers'
    names and shapes (training/pretrain.py)."""

    def __init__(self, config: TrainConfig, *, layers: int, dropout: float, sequences: bool):
        super().__init__(config)
        self.depth, self.rate, self.sequences = layers, dropout, sequences
        self.width = config.embed_dim + (config.bigram_dim or 0)  # of the embedded tokens

    def __call__(self, ids, noise=None):
        """(the recurrent states, the embedded tokens before ``noise`` was added)."""
        config = self.config
        x = self._layer("embedding", lambda: keras.layers.Embedding(
            config.max_tokens, config.embed_dim, mask_zero=True, name="embedding"))(ids)
        if config.bigram_dim:
            x = self._layer("token_pairs", lambda: TokenPairs(
                config.max_tokens, BIGRAM_BUCKETS, config.bigram_dim, name="token_pairs"))([x, ids])
        embedded = x
        if noise is not None:
            x = Perturb(name="perturb")([x, noise])
        if self.rate:
            x = self._layer("embedding_dropout", lambda: keras.layers.SpatialDropout1D(
                self.rate, name="embedding_dropout"))(x)
        cell = {"gru": keras.layers.GRU, "lstm": keras.layers.LSTM}[config.cell]
        for i in range(self.depth):
            # cuDNN-compatible: default activations, no recurrent_dropout, reset_after=True.
            x = self._layer(f"recurrent_{i}", lambda i=i: keras.layers.Bidirectional(
                cell(config.units, return_sequences=i < self.depth - 1 or self.sequences),
                name=f"bi{config.cell}_{i + 1}"))(x)
        return x, embedded


def build_text_model(config: TrainConfig, vectorizer, core, ngrams=None,
                     temperature: float = 1.0):
    """Raw strings (batch,) -> probability (batch, 1), or (batch, k) class probabilities;
    what is saved and exported.

    ``ngrams``: (n-gram vectorizer, n-gram model, weight of the RNN), or None for the
    recurrent model alone; ``temperature``: the calibration (1: none).
    """
    text = keras.Input(shape=(), dtype="string", name="text")
    ids = Truncate(config.seq_len, name="truncate")(vectorizer(text))
    prob = core(ids)
    if ngrams is not None:
        ngram_vectorizer, ngram_model, weight = ngrams
        prob = Blend(weight, name="blend")([prob, ngram_model(ngram_vectorizer(text))])
    if temperature != 1.0:
        prob = Temperature(temperature, name="temperature")(prob)
    return keras.Model(text, prob, name="rnncli")


def vectorize(vectorizer, texts: list[str], seq_len: int, batch: int = 512) -> np.ndarray:
    """Token ids for all texts (right-padded to ``seq_len``), computed once so training
    epochs skip tokenization."""
    out = np.zeros((len(texts), seq_len), dtype=np.int32)
    for start in range(0, len(texts), batch):
        ids = vectorizer(tf.constant(texts[start:start + batch])).numpy()[:, :seq_len]
        out[start:start + len(ids), : ids.shape[1]] = ids
    return out
