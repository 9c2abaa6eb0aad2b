"""Why a text got its label: each token's contribution to the predicted class's log-odds.

Light: numpy and the ONNX engine, never TensorFlow. The method (docs/explain.md, "The method"):

- A token's contribution is how much the blend's log-odds of the predicted class fall
  when that token is replaced by a word the model has never seen (occlusion): the
  recurrent network runs once per token on the text with that token's id set to [UNK],
  and the n-gram model drops every n-gram that contains the token. This is the model that
  ``predict`` runs, blend and all, not an approximation of it; a positive number supports
  the predicted class, a negative one speaks against it.
- The parts are reported too: ``rnn``, the same occlusion on the recurrent network
  alone, and ``ngram``, the n-gram model's exact additive shares. The n-gram model is
  linear in its (unit-length) TF-IDF row, so each n-gram's term is exact; it is split
  equally among the text's tokens in it, and ``ngram_base`` (the bias and the start
  marker's unigram) plus the shares add up to the n-gram model's log-odds exactly (with
  more than two classes: of the predicted class against the mean of the others' logits).

Occluding every token costs one network run per token the network reads (in parallel
batches) and, for the n-gram model, an update of the counts that the token's n-grams
touch, so a 100-word review takes a few tens of milliseconds.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from rnncli.core.errors import ModelError
from rnncli.core.scoring import CLIP
from rnncli.inference.onnx_engine import probabilities
from rnncli.inference.predict import SCORE_DIGITS, Predictor

UNK_ID = 1  # the network's id for a word it has never seen


def load_explainer(model_dir, *, threshold: float | None = None) -> Predictor:
    """The model directory's predictor on the ONNX engine (checked as predict checks it),
    or a clear error for a model without the engine's files."""
    from rnncli.modeldir import artifacts

    manifest = artifacts.read_manifest(model_dir)
    if not all(name in manifest["files"]
               for name in (artifacts.ONNX_FILE, artifacts.SERVING_FILE)):
        raise ModelError("explain runs on the ONNX engine, and this model has no ONNX files "
                         "(it was trained by an older rnncli, or its ONNX export failed); "
                         "retrain it with this version")
    try:
        return Predictor.load(model_dir, engine="onnx", threshold=threshold)
    except ModelError as exc:  # explain has no --engine tf to suggest
        raise ModelError(exc.message.replace("use --engine tf or retrain the model",
                                             "retrain the model")) from exc


def explain_records(predictor: Predictor, texts: list[str | bytes]) -> list[dict[str, Any]]:
    """One record per input, in order: predict's record (text, label, score, status,
    scores) and the explanation (tokens with offsets and contributions)."""
    engine = predictor.engine
    records = predictor.records(texts)
    for record in records:
        record.update({"log_odds": None, "tokens": [], "read_chars": None,
                       "network_tokens": None, "rnn_weight": engine.rnn_weight,
                       "ngram_log_odds": None, "ngram_base": None})
        if record["label"] is not None:  # scored: not blank, not undecodable
            target = predictor.label_names.index(record["label"])
            record.update(explain_text(engine, record["text"], target))
    return records


def explain_text(engine, text: str, target: int) -> dict[str, Any]:
    """The explanation of one text for class ``target`` (an index into the classes)."""
    tokens = engine.tokens(text)
    ids = engine.ids(tokens)
    weight = engine.rnn_weight
    positions = len(tokens)
    # Row 0: the text as it is; row i: token i occluded (row 0 of tokens is the start
    # marker, never occluded). Rows past what the network reads leave it unchanged.
    network = rnn_lo = None
    if weight > 0:
        rows = [ids] + [ids[:i] + [UNK_ID] + ids[i + 1:] for i in range(1, len(ids))]
        got = engine.network_scores(rows)
        network = np.concatenate([got, np.repeat(got[:1], positions - len(ids), axis=0)])
        rnn_lo = _log_odds(network.astype(np.float64), target)
    ngram = logits = shares = base = None
    if weight < 1:
        logits, shares, base = ngram_occlusion(engine, tokens)
        ngram = probabilities(logits).astype(np.float64)
    blend_lo = _log_odds(np.asarray(engine.combine(network, ngram), np.float64), target)
    spans = token_spans(engine.standardize, text, tokens[1:])
    ngram_shares = None if shares is None else _toward(shares, target)
    entries = []
    for i, span in enumerate(spans, start=1):
        entries.append({
            "token": tokens[i],
            "start": None if span is None else span[0],
            "end": None if span is None else span[1],
            "contribution": _rounded(blend_lo[0] - blend_lo[i]),
            "rnn": (None if rnn_lo is None or i >= len(ids)
                    else _rounded(rnn_lo[0] - rnn_lo[i])),
            "ngram": None if ngram_shares is None else _rounded(ngram_shares[i]),
        })
    return {
        "log_odds": _rounded(blend_lo[0]),
        "tokens": entries,
        "read_chars": min(len(text), engine.standardize.max_chars),
        "network_tokens": max(len(ids) - 1, 0) if weight > 0 else None,
        "ngram_log_odds": None if logits is None else _rounded(_toward(logits[:1], target)[0]),
        "ngram_base": None if base is None else _rounded(_toward(base[None], target)[0]),
    }


def ngram_occlusion(engine, tokens: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The n-gram model on a tokenized text and on each occlusion of it.

    Returns (logits, shares, base): logits (len(tokens), outputs), row 0 the text's, row i
    with every n-gram containing token i dropped; shares (len(tokens), outputs), each
    token's exact additive part of row 0's logits; base (outputs,), the bias and what
    the start marker's own unigram adds, so that ``base + shares.sum(0) == logits[0]``.
    The sublinear TF-IDF, unit-length row and logistic regression are those of
    ``engine.ngram_logits`` (float64 here).
    """
    grams = engine.grams(tokens)
    idf = np.asarray(engine.idf, np.float64)
    kernel = np.asarray(engine.kernel, np.float64)
    bias = np.asarray(engine.bias, np.float64).reshape(-1)
    counts = Counter(feature for feature, _, _ in grams)
    value = {f: (1.0 + np.log(c)) * idf[f] for f, c in counts.items()}
    squares = sum(v * v for v in value.values())
    raw = sum((v * kernel[f] for f, v in value.items()), np.zeros_like(bias))
    norm = np.sqrt(squares + 1e-12)
    logits = np.zeros((len(tokens), len(bias)))
    logits[0] = raw / norm + bias
    shares = np.zeros_like(logits)
    base = bias.copy()
    touching: list[Counter] = [Counter() for _ in tokens]
    for feature, first, length in grams:
        term = value[feature] / counts[feature] * kernel[feature] / norm
        inside = [p for p in range(first, first + length) if p > 0]
        if inside:
            shares[inside] += term / len(inside)
        else:
            base += term  # the start marker's unigram
        for p in range(first, first + length):
            touching[p][feature] += 1
    for p in range(1, len(tokens)):
        row, left_squares = raw.copy(), squares
        for feature, dropped in touching[p].items():
            left = counts[feature] - dropped
            new = (1.0 + np.log(left)) * idf[feature] if left else 0.0
            row -= (value[feature] - new) * kernel[feature]
            left_squares -= value[feature] ** 2 - new * new
        logits[p] = row / np.sqrt(max(left_squares, 0.0) + 1e-12) + bias
    return logits, shares, base


def _log_odds(rows: np.ndarray, target: int) -> np.ndarray:
    """log(p / (1 - p)) of class ``target`` for each row: positive-class probabilities
    (n,) of a two-class model, or rows of class probabilities."""
    if rows.ndim == 1:
        p = np.clip(rows, CLIP, 1 - CLIP)
        odds = np.log(p) - np.log1p(-p)
        return odds if target == 1 else -odds
    p = np.clip(rows[:, target], CLIP, 1 - CLIP)
    rest = np.clip(rows.sum(axis=1) - rows[:, target], CLIP, 1 - CLIP)
    return np.log(p) - np.log(rest)


def _toward(logits: np.ndarray, target: int) -> np.ndarray:
    """Rows of logits (or of their additive shares) -> what they add to class
    ``target``'s log-odds (two classes) or to its logit against the mean of the others'."""
    if logits.shape[1] == 1:
        return logits[:, 0] if target == 1 else -logits[:, 0]
    others = np.delete(logits, target, axis=1).mean(axis=1)
    return logits[:, target] - others


def _rounded(value) -> float:
    return round(float(value), SCORE_DIGITS)


def token_spans(standardize, text: str, tokens: list[str]) -> list[tuple[int, int] | None]:
    """Each token's (start, end) character offsets in ``text`` (None where it cannot be
    placed), found by walking the text as the standardizer changes it.

    Every step of the standardization keeps, drops or separates characters, or changes
    their case (one character's lower case may be two, like İ); none reorders them. So a
    token is a run of the text's characters after the per-character steps, found by a
    search from where the previous one ended.
    """
    read = text[: standardize.max_chars]
    mapped, origin = [], []
    for i, char in enumerate(read):
        form = standardize.char_form(char)
        mapped.append(form)
        origin.extend([i] * len(form))
    flat = "".join(mapped)
    flat = standardize.blank_tags(flat)  # a tag's words are not the text's
    flat = flat.replace("\u03c2", "\u03c3")
    spans, cursor = [], 0
    for token in tokens:
        at = flat.find(token.replace("\u03c2", "\u03c3"), cursor)
        if at < 0 or not token:
            spans.append(None)
            continue
        end = at + len(token)
        spans.append((origin[at], origin[end - 1] + 1))
        cursor = end
    return spans
