"""``serving.npz``: what the ONNX engine (``inference/onnx_engine.py``) needs around ``core.onnx``.

Light (NumPy only). Plain arrays, written with ``np.savez`` and read with pickle disabled;
every member is checked for type, shape and range before use, so a crafted file ends in
a ModelError (exit 4), never in an exception the user cannot act on.

Members:
    text          UTF-8 JSON: version, seq_len, rnn_weight (the blend), max_chars,
                  start_token, lower_to (what each ``lower_from`` character becomes),
                  tokenizer (version 2; version 1 files are "words"), ngram_order
                  (version 3: the n-gram model's longest n-grams; 2 before it),
                  outputs (version 4: 1 for a binary model's positive-class
                  probability, else the number of classes; 1 before it)
    tokens        the RNN vocabulary, newline-separated (index = line)
    keep          (n, 2) codepoint ranges standardization keeps (RE2's classes)
    lower_from    codepoints ICU's lower-casing changes
    cased         (n, 2) ranges of ICU's cased characters      } for the context rule of
    ignorable     (n, 2) ranges of its case-ignorable ones     } capital sigma
    split         (n, 2) ranges of the characters that are tokens of their own
                  (tokenizer "cjk-chars" only)
    ngrams, ngram_idf, ngram_kernel, ngram_bias   the n-gram model (when blended); the
                  kernel is (n-grams x outputs) flattened row by row, the bias one per
                  output
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from rnncli.core import jsontext
from rnncli.core.config import TOKENIZERS
from rnncli.core.errors import ModelError, first_line

# 4: "outputs" (more than two classes: one probability per class); 3: "ngram_order" (the
# n-gram model's longest n-grams; 2 before it); 2: the tokenizer and its "split" table; 1
# (tokenizer "words"); all still read
VERSION = 4
MAX_BYTES = 2**30  # the file, and each member
MAX_CODEPOINT = 0x10FFFF
_RANGES = ("keep", "cased", "ignorable")
_NGRAM_ARRAYS = ("ngram_idf", "ngram_kernel", "ngram_bias")
_MEMBERS = {"text", "tokens", "lower_from", "ngrams", "split", *_RANGES, *_NGRAM_ARRAYS}


def write_serving(path: Path, *, tokens: list[str], seq_len: int, rnn_weight: float,
                  tokenizer: str, tables: dict[str, Any], ngrams: list[str] | None = None,
                  idf=None, kernel=None, bias=None, ngram_order: int = 2,
                  outputs: int = 1) -> None:
    """Write ``serving.npz`` (``tables``: ``model.standardize_tables()``)."""
    text = {"version": VERSION, "seq_len": int(seq_len), "rnn_weight": float(rnn_weight),
            "max_chars": int(tables["max_chars"]), "start_token": tables["start_token"],
            "lower_to": list(tables["lower_to"]), "tokenizer": tokenizer,
            "ngram_order": int(ngram_order), "outputs": int(outputs)}
    arrays = {"text": _encode(json.dumps(text, ensure_ascii=False)),
              "tokens": _encode("\n".join(tokens)),
              "lower_from": np.asarray(tables["lower_from"], np.int32)}
    for name in _RANGES + (("split",) if tokenizer == "cjk-chars" else ()):
        arrays[name] = np.asarray(tables[name], np.int32).reshape(-1, 2)
    if ngrams is not None:
        arrays.update(ngrams=_encode("\n".join(ngrams)),
                      ngram_idf=np.asarray(idf, np.float32).reshape(-1),
                      ngram_kernel=np.asarray(kernel, np.float32).reshape(-1),
                      ngram_bias=np.asarray(bias, np.float32).reshape(-1))
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def read_serving(path: Path) -> dict[str, Any]:
    """Read and check ``serving.npz``; anything odd is a ModelError naming the file."""
    try:
        data = _load(path)
        serving = _check(data)
    except (OSError, ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError,
            RecursionError, MemoryError, EOFError, zipfile.BadZipFile) as exc:
        detail = (f"no {exc} in it" if isinstance(exc, KeyError) else
                  first_line(exc))
        raise ModelError(f"{path}: unreadable ({detail}); use --engine tf or retrain the "
                         "model") from exc
    return serving


def _load(path: Path) -> dict[str, np.ndarray]:
    if path.stat().st_size > MAX_BYTES:
        raise ValueError("implausibly large")
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            if name not in _MEMBERS or info.file_size > MAX_BYTES:
                raise ValueError(f"unexpected member {info.filename!r}")
    with np.load(path, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def _check(data: dict[str, np.ndarray]) -> dict[str, Any]:
    text = jsontext.loads(_utf8_text(data["text"]))
    if not isinstance(text, dict) or text.get("version") not in range(1, VERSION + 1):
        raise ValueError(f"not serving format 1 to {VERSION}")
    tokenizer = text["tokenizer"] if text["version"] > 1 else "words"
    if not isinstance(tokenizer, str) or tokenizer not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {tokenizer!r}")
    serving = _settings_and_tables(data, text, tokenizer)
    serving.update(_model_shape(text))
    if len(serving["tokens"]) < 3:
        raise ValueError("vocabulary too small")
    if not all(len(serving[name]) for name in _RANGES) or (
            serving["split"] is not None and not len(serving["split"])):
        raise ValueError("empty character tables")
    if serving["rnn_weight"] < 1:
        serving.update(_ngram_model(data, serving["outputs"]))
    return serving


def _settings_and_tables(data: dict[str, np.ndarray], text: dict,
                         tokenizer: str) -> dict[str, Any]:
    """The tokenizer's settings from ``text`` and its vocabulary and character tables."""
    seq_len, max_chars = text["seq_len"], text["max_chars"]
    weight, start, lower_to = text["rnn_weight"], text["start_token"], text["lower_to"]
    if not (_whole(seq_len) and _whole(max_chars) and isinstance(weight, (int, float))
            and not isinstance(weight, bool) and math.isfinite(weight) and 0 <= weight <= 1
            and isinstance(start, str) and start and start.split() == [start]
            and isinstance(lower_to, list) and all(isinstance(t, str) for t in lower_to)):
        raise ValueError("bad settings in 'text'")
    lower_from = _codepoints(data["lower_from"], "lower_from")
    if len(lower_from) != len(lower_to):
        raise ValueError("lower_from and lower_to differ in length")
    return {
        "seq_len": seq_len, "max_chars": max_chars, "rnn_weight": float(weight),
        "start_token": start, "lower_from": lower_from, "lower_to": lower_to,
        "tokens": _utf8_text(data["tokens"]).split("\n"), "tokenizer": tokenizer,
        "split": _ranges(data["split"], "split") if tokenizer == "cjk-chars" else None,
        **{name: _ranges(data[name], name) for name in _RANGES},
    }


def _model_shape(text: dict) -> dict[str, int]:
    """The n-gram order and the number of outputs (older formats had neither)."""
    order = text["ngram_order"] if text["version"] > 2 else 2
    if not (_whole(order) and order <= 3):
        raise ValueError(f"bad ngram_order {order!r}")
    outputs = text["outputs"] if text["version"] > 3 else 1
    if not (_whole(outputs) and outputs != 2 and outputs <= 10**4):
        raise ValueError(f"bad outputs {outputs!r}")
    return {"ngram_order": order, "outputs": outputs}


def _ngram_model(data: dict[str, np.ndarray], outputs: int) -> dict[str, Any]:
    """The n-gram list and its weights (a model that is not all RNN)."""
    model: dict[str, Any] = {"ngrams": _utf8_text(data["ngrams"]).split("\n")}
    for name in _NGRAM_ARRAYS:
        array = data[name]
        if array.ndim != 1 or array.dtype != np.float32 or not np.all(np.isfinite(array)):
            raise ValueError(f"{name} is not a finite float32 vector")
        model[name] = array
    size = len(model["ngrams"])
    if not (len(model["ngram_idf"]) == size
            and len(model["ngram_kernel"]) == size * outputs
            and len(model["ngram_bias"]) == outputs):
        raise ValueError("n-gram arrays do not match the n-gram list")
    model["ngram_kernel"] = model["ngram_kernel"].reshape(size, outputs)
    return model


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 10**9


def _codepoints(array: np.ndarray, name: str) -> np.ndarray:
    if array.dtype.kind not in "iu" or array.ndim != 1:
        raise ValueError(f"{name} is not a vector of codepoints")
    if len(array) and (array.min() < 0 or array.max() > MAX_CODEPOINT):
        raise ValueError(f"{name} holds a codepoint out of range")
    return array.astype(np.int64)


def _ranges(array: np.ndarray, name: str) -> np.ndarray:
    if array.dtype.kind not in "iu" or array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"{name} is not a list of codepoint ranges")
    _codepoints(array.reshape(-1), name)
    if np.any(array[:, 0] > array[:, 1]):
        raise ValueError(f"{name} holds a reversed range")
    return array.astype(np.int64)


def _encode(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


def _utf8_text(array: np.ndarray) -> str:
    if array.dtype != np.uint8 or array.ndim != 1:
        raise ValueError("text array of the wrong type")
    return array.tobytes().decode("utf-8")
