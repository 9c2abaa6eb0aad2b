"""A pretrained encoder, saved once and reused by several trainings: ``rnncli pretrain
TEXTS -o DIR`` writes it, ``rnncli train DATA --encoder DIR`` starts from it.

The directory holds ``encoder.json`` (its format, the settings that shape the pretrained
layers, the vocabulary and a record of the pretraining) and ``encoder.npz`` (the
pretrained layers' weights, by layer name: pretrain.pretrained_layers). A training that
starts from it takes its tokenizer, vocabulary, embedding and first recurrent layer; the
rest of its settings are its own.

Light at import: TensorFlow is imported only when an encoder is trained.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnncli import __version__
from rnncli.core import fsio, jsontext
from rnncli.core.config import TrainConfig
from rnncli.core.errors import UsageError

ENCODER_JSON = "encoder.json"
ENCODER_WEIGHTS = "encoder.npz"
ENCODER_FORMAT = 1
# The settings an encoder fixes for the trainings that start from it.
SHAPING = ("cell", "units", "embed_dim", "bigram_dim", "tokenizer", "max_tokens")


@dataclass(frozen=True)
class Encoder:
    """A pretrained encoder read from its directory."""

    path: Path
    settings: dict[str, Any]  # SHAPING's values, with seq_len and pretrain_epochs
    vocab: list[str]
    weights: dict[str, list[np.ndarray]]
    record: dict[str, Any]

    @property
    def weights_file(self) -> Path:
        return self.path / ENCODER_WEIGHTS

    def configure(self, config: TrainConfig, reporter) -> TrainConfig:
        """``config`` with the settings this encoder fixes (saying which it changed)."""
        changed = {k: self.settings[k] for k in SHAPING
                   if getattr(config, k) is not None and getattr(config, k) != self.settings[k]}
        if changed:
            reporter.message(f"{self.path.name}: the encoder sets " + ", ".join(
                f"{k.replace('_', '-')} {v}" for k, v in changed.items()))
        return config.replace(**{k: self.settings[k] for k in SHAPING},
                              pretrain_epochs=self.settings["pretrain_epochs"])


def save(out: Path, config: TrainConfig, vocab: list[str],
         weights: dict[str, list[np.ndarray]], record: dict[str, Any]) -> None:
    """Write the encoder directory beside ``out`` and swap it in (an old one at ``out`` is
    replaced only by a complete new one)."""
    header = {"format": ENCODER_FORMAT, "rnncli_version": __version__,
              "settings": {k: getattr(config, k) for k in (*SHAPING, "seq_len",
                                                           "pretrain_epochs", "seed")},
              "layers": {name: len(values) for name, values in weights.items()},
              "pretraining": record, "vocabulary": list(vocab)}
    arrays = {f"{name}/{i}": value for name, values in weights.items()
              for i, value in enumerate(values)}
    with fsio.staging(out) as staged:
        with open(staged / ENCODER_WEIGHTS, "wb") as fh:
            np.savez(fh, **arrays)
        (staged / ENCODER_JSON).write_text(json.dumps(header, ensure_ascii=False, indent=1),
                                           encoding="utf-8")
        fsio.publish(staged, out, _check_target)


def _check_target(target: Path) -> None:
    """Refuse to replace a directory that is not an encoder."""
    if target.exists() and not (target / ENCODER_JSON).is_file():
        if not target.is_dir() or any(target.iterdir()):
            raise UsageError(f"{target} exists and is not an rnncli encoder; give -o a new "
                             "directory or an encoder's")


def load(path: str | Path) -> Encoder:
    """Read an encoder directory; a UsageError names what is wrong with it."""
    path = Path(path)
    if not (path / ENCODER_JSON).is_file():
        raise UsageError(f"{path}: not an rnncli encoder (no {ENCODER_JSON}); give a "
                         "directory written by 'rnncli pretrain'")
    try:
        header = jsontext.loads((path / ENCODER_JSON).read_text(encoding="utf-8"))
        if header.get("format") != ENCODER_FORMAT:
            raise ValueError(f"format {header.get('format')!r}, this rnncli reads "
                             f"{ENCODER_FORMAT}")
        settings, vocab, record = header["settings"], header["vocabulary"], header["pretraining"]
        config = _checked_settings(settings)
        if not (isinstance(vocab, list) and len(vocab) + 2 == config.max_tokens
                and all(isinstance(t, str) and t for t in vocab) and len(set(vocab)) == len(vocab)
                and isinstance(record, dict)):
            raise ValueError("the vocabulary does not match max_tokens, or the record is bad")
        with np.load(path / ENCODER_WEIGHTS, allow_pickle=False) as kept:
            weights = {name: [kept[f"{name}/{i}"] for i in range(count)]
                       for name, count in header["layers"].items()}
        _check_shapes(config, weights)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, UsageError,
            zipfile.BadZipFile) as exc:
        raise UsageError(f"{path}: the encoder is unreadable ({str(exc)[:200]}); write it "
                         "again with 'rnncli pretrain'") from exc
    return Encoder(path.resolve(), settings, vocab, weights, record)


def _checked_settings(settings: dict[str, Any]) -> TrainConfig:
    """The encoder's settings as a config (TrainConfig checks each); every shaping one
    must be set."""
    config = TrainConfig().replace(**{k: settings[k] for k in (*SHAPING, "pretrain_epochs")})
    if any(getattr(config, k) is None for k in SHAPING):
        raise ValueError("a setting is missing")
    return config


def _check_shapes(config: TrainConfig, weights: dict[str, list[np.ndarray]]) -> None:
    """The weights are those of the layers the settings build (pretrain.pretrained_layers)."""
    gates = {"gru": 3, "lstm": 4}[config.cell]
    inputs = config.embed_dim + config.bigram_dim
    per_direction = [(inputs, gates * config.units), (config.units, gates * config.units),
                     (2, gates * config.units) if config.cell == "gru" else
                     (gates * config.units,)]
    want = {"embedding": [(config.max_tokens, config.embed_dim)],
            f"bi{config.cell}_1": per_direction * 2}
    if config.bigram_dim:
        from rnncli.network.model import BIGRAM_BUCKETS  # (TensorFlow: training follows)

        want["token_pairs"] = [(BIGRAM_BUCKETS, config.bigram_dim)]
    got = {name: [tuple(w.shape) for w in values] for name, values in weights.items()}
    if got != want:
        raise ValueError(f"its weights {got} are not those its settings build")


def run(texts_path: str | Path, config: TrainConfig, *, out: Path, text_col: str | None,
        encoding: str | None, device: str, resume: bool, reporter) -> None:
    """``rnncli pretrain``: read the texts, derive the vocabulary, pretrain and save the
    encoder at ``out``."""
    from rnncli.data.dataset import read_texts
    from rnncli.training import fitting, pretrain
    from rnncli.training import resume as resume_run

    _check_target(out)  # now, not after the pretraining (save checks it again)
    texts, notes = read_texts(texts_path, text_col=text_col, encoding=encoding)
    for note in notes:
        reporter.message(note)
    if len(texts) < 2:
        raise UsageError(f"{texts_path}: {len(texts)} text(s); pretraining needs at least two")
    reporter.message(f"{len(texts):,} texts read from {Path(texts_path).name}")
    device_names, strategy, replicas, where = fitting._devices(device, None, config,
                                                               len(texts), reporter)
    with fsio.lock(out):
        key = resume_run.run_key(None, config, None, texts_path, False,
                                 content=f"pretrain {resume_run.file_key(texts_path)}, "
                                         f"column {text_col}, encoding {encoding}")
        progress = resume_run.prepare(out, key, resume)
        config, vocab, _ = fitting._derive(config.replace(classes=2), texts, reporter)
        reporter.message(f"vocabulary {config.max_tokens} tokens, sequence length "
                         f"{config.seq_len}, device {where}")
        from rnncli.network import model as M
        from rnncli.network.runtime import device_scope

        vectorizer = M.build_vectorizer(config, vocab)
        data, config = pretrain.prepare(vectorizer, texts, [], config, reporter)
        with device_scope(device_names, strategy):
            weights, record = pretrain.run(config, data, reporter, progress=progress,
                                           replicas=replicas)
        save(out, config, vocab, weights, {**record, "file": Path(texts_path).name})
        resume_run.finish(progress.backup)
    reporter.message(f"saved encoder to {out}; next: rnncli train DATA --encoder {out}")
