"""TrainConfig: the one settings object that defines a trained model.

Defaults live here and only here; the CLI reads them. The object validates itself and
round-trips through JSON inside the model directory, so evaluate, predict and export read
back exactly what train used. Settings that depend on the data (``max_tokens``,
``seq_len``, ``bigram_dim``, ``ngram_order``, ``ngram_solver``, ``classes``) may be
``None`` here, meaning "derive from the training data"; the model directory always
records the resolved values.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

from rnncli.core.errors import UsageError

CELLS = ("gru", "lstm")
POOLINGS = ("last", "max", "mean", "attention")
# How the n-gram model is fitted (training/ngrams.py): Adam with early stopping, or the exact
# L2-regularized logistic regression with C chosen on validation (L-BFGS).
NGRAM_SOLVERS = ("adam", "lbfgs")
# Per-class weights in both parts' losses: none, or "balanced" (rows / (classes x rows of
# the class), as scikit-learn's class_weight="balanced"), for skewed data.
CLASS_WEIGHTS = ("none", "balanced")
# How texts become tokens, and what each makes a token of: "words" splits at spaces and
# punctuation (models of format 2 and older); "cjk-chars" also makes every Chinese and
# Japanese character a token and reads full-width forms as ASCII (model.STANDARDIZERS).
# How info and report describe a model's tokens: artifacts.describe_tokens.
TOKENIZERS = ("cjk-chars", "words")
# Above this share of Chinese or Japanese characters among the training tokens, a model is
# one of characters: token pairs are embedded and its n-grams are longer (network/model.py).
AUTO_BIGRAM_SHARE = 0.5
# `rnncli predict --format` choices; here so that `--help` need not import Rich.
PREDICT_FORMATS = ("auto", "table", "json", "jsonl", "csv", "label")
# `--engine` choices for predict and evaluate (see predict.choose_engine).
ENGINES = ("auto", "onnx", "tf")
# Characters of one text that are read at all (the rest is ignored): bounds the memory
# and work a single huge input (a 10 MB line) can cause, far beyond any seq_len.
MAX_TEXT_CHARS = 200_000

class Range(NamedTuple):
    """The values a numeric setting may take; TrainConfig checks them and the CLI's option
    types are made from them, so each rule is written once. (A NamedTuple, not a frozen
    dataclass: `rnncli --help` imports this module, and a dataclass costs it 1.3 ms.)"""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    whole: bool = False  # a whole number

    def holds(self, value: Any) -> bool:
        if not (_is_int(value) if self.whole else _is_number(value)):
            return False
        return ((self.low is None or (value > self.low if self.low_open else value >= self.low))
                and (self.high is None
                     or (value < self.high if self.high_open else value <= self.high)))

    def describe(self) -> str:
        kind = "a whole number" if self.whole else "a number"
        if self.high is None:
            return f"{kind} {'>' if self.low_open else '>='} {self.low:g}"
        return (f"{kind} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                f"{')' if self.high_open else ']'}")


# Numeric settings; None (derive from the data) is also allowed where the default is None.
RANGES = {
    "units": Range(1, whole=True),
    "layers": Range(1, 8, whole=True),
    "embed_dim": Range(1, whole=True),
    "bigram_dim": Range(0, whole=True),
    "ngram_order": Range(1, 3, whole=True),
    "max_tokens": Range(3, whole=True),
    "seq_len": Range(2, whole=True),
    "dropout": Range(0, 1, high_open=True),
    "epochs": Range(1, whole=True),
    "pretrain_epochs": Range(0, whole=True),
    "batch_size": Range(1, whole=True),
    "lr": Range(0, low_open=True),
    "lr_decay": Range(0, 1, low_open=True),  # 1: never decay
    "clipnorm": Range(0),  # 0: no clipping
    "adversarial": Range(0),  # 0: none
    "patience": Range(0, whole=True),
    "val_split": Range(0, 0.5, low_open=True, high_open=True),
    "test_split": Range(0, 0.5, low_open=True, high_open=True),
    "seed": Range(0, whole=True),
}


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    cell: str = "gru"
    units: int = 64
    layers: int = 1
    pooling: str = "max"
    embed_dim: int = 128
    bigram_dim: int | None = None
    word_vectors: bool = False
    ngrams: bool = True
    ngram_order: int | None = None
    ngram_solver: str | None = None
    tokenizer: str = "cjk-chars"
    max_tokens: int | None = None
    seq_len: int | None = None
    dropout: float = 0.3
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    lr_decay: float = 0.3
    clipnorm: float = 1.0
    # Adversarial training's perturbation, in word-vector lengths (training/adversarial.py);
    # 0: none; None "auto": on for a pretrained network.
    adversarial: float | None = None
    patience: int = 2
    val_split: float = 0.1
    test_split: float = 0.1
    seed: int = 42
    # Epochs of language-model pretraining (training/pretrain.py): 0 none; None "auto":
    # with unlabelled texts enough to read about 15 million tokens (1 to 10), else none.
    pretrain_epochs: int | None = None
    class_weight: str = "none"
    classes: int | None = None  # from the labels: 2 (sigmoid head) or more (softmax)

    def __post_init__(self) -> None:
        problems = []
        if self.cell not in CELLS:
            problems.append(f"cell must be one of {', '.join(CELLS)}, not {self.cell!r}")
        for name in ("word_vectors", "ngrams"):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name} must be true or false, not {getattr(self, name)!r}")
        if not isinstance(self.tokenizer, str) or self.tokenizer not in TOKENIZERS:
            problems.append(f"tokenizer must be one of {', '.join(TOKENIZERS)}, not "
                            f"{self.tokenizer!r}")
        if self.ngram_solver is not None and self.ngram_solver not in NGRAM_SOLVERS:
            problems.append(f"ngram_solver must be one of {', '.join(NGRAM_SOLVERS)}, not "
                            f"{self.ngram_solver!r}")
        if self.classes is not None and not (_is_int(self.classes) and self.classes >= 2):
            problems.append(f"classes must be a whole number >= 2, not {self.classes!r}")
        if self.class_weight not in CLASS_WEIGHTS:
            problems.append(f"class_weight must be one of {', '.join(CLASS_WEIGHTS)}, not "
                            f"{self.class_weight!r}")
        if self.pooling not in POOLINGS:
            problems.append(f"pooling must be one of {', '.join(POOLINGS)}, not {self.pooling!r}")
        for name, allowed in RANGES.items():
            value = getattr(self, name)
            if not (allowed.holds(value) or (value is None and default(name) is None)):
                problems.append(f"{name} must be {allowed.describe()}, not {value!r}")
        if not problems and self.val_split + self.test_split >= 0.8:
            problems.append("val_split + test_split must leave at least 20% of rows to train on")
        if problems:
            raise UsageError("invalid settings: " + "; ".join(problems))

    def pretrains(self, unlabelled: bool) -> bool:
        """Whether the network is pretrained, ``unlabelled`` texts given or not."""
        return bool(self.pretrain_epochs) or (self.pretrain_epochs is None and unlabelled)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a manifest's ``settings``; unknown keys are an error, not ignored.

        A model trained before the n-gram model existed has no ``ngrams`` key: it has none;
        one trained before ``tokenizer`` existed split at spaces ("words") and had no
        token-pair embedding; one trained before ``ngram_order`` existed (format 3 and
        older) had token 1-2-grams fitted by Adam; one trained before ``classes`` existed
        (format 4 and older) was binary, with no class weights; one trained before
        ``pretrain_epochs`` existed (format 6 and older) was not pretrained; one trained
        before ``adversarial`` existed (format 7 and older) was not trained adversarially.
        """
        data = {"ngrams": False, "tokenizer": "words", "bigram_dim": 0, "ngram_order": 2,
                "ngram_solver": "adam", "classes": 2, "class_weight": "none",
                "pretrain_epochs": 0, "adversarial": 0.0, **data}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"unknown settings: {', '.join(unknown)}")
        return cls(**data)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def output_width(classes: int | None) -> int:
    """How many probabilities a model gives per text: one (the positive class's) for two
    classes, else one per class."""
    classes = classes or 2
    return 1 if classes == 2 else classes


def ngram_span(order: int) -> str:
    """How messages and `info` name the n-grams of an ``ngram_order``: "1-3-grams"."""
    return f"1-{order}-grams" if order > 1 else "1-grams"


def default(name: str) -> Any:
    """The default of one TrainConfig field (for CLI help texts)."""
    return TrainConfig.__dataclass_fields__[name].default


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))
