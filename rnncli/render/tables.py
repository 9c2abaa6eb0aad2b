"""Renderers for what a model is and how it scores (stdout): evaluation figures, the
model's info, the device list; a Rich table on a terminal, JSON when piped (the
commands resolve the format with ``output.resolve_format``)."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.cells import cell_len
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from rnncli.core.config import ngram_span
from rnncli.inference.predict import SCORE_DIGITS
from rnncli.modeldir.artifacts import describe_tokens
from rnncli.render.output import cell, out_console, to_json, visible
from rnncli.render.output import fmt_value as _fmt

# --------------------------------------------------------------------------- figures


def render_figures(figures: dict[str, Any], fmt: str, *, title: str = "evaluation") -> None:
    """Figures from metrics.evaluate_scores: two classes or more (told by the keys)."""
    if fmt == "json":
        sys.stdout.write(to_json(figures, allow_nan=False) + "\n")
        return
    # the title on a line of its own: as a table's title it wrapped at the table's width
    if "macro_f1" in figures and "precision" not in figures:
        tables = _multi_class_tables(figures, "")
    else:
        tables = _binary_tables(figures, "")
    if figures.get("errors"):
        tables.append(_errors_table(figures["errors"]))
    console = out_console()
    console.print(Text(_fitted(visible(title), console.width), style="italic"))
    for table in tables:
        console.print(table)


def _fitted(title: str, width: int) -> str:
    """``title`` on one line of ``width`` columns: cut in the middle ("…") if longer (a
    long model path, say)."""
    if cell_len(title) <= width:
        return title
    head, tail = title[: width // 2], title[width // 2 - width:]
    while cell_len(head) + cell_len(tail) + 1 > width and head:
        head, tail = (head[:-1], tail) if cell_len(head) >= cell_len(tail) else (head, tail[1:])
    return f"{head}…{tail}"


def _errors_table(errors: list[dict[str, Any]]) -> Table:
    """The most confidently wrong texts (metrics.confident_errors)."""
    table = Table(title="most confidently wrong", show_edge=False, header_style="bold")
    table.add_column("text", overflow="ellipsis", no_wrap=True, max_width=60)
    table.add_column("label")
    table.add_column("predicted")
    table.add_column("score", justify="right")
    for error in errors:
        table.add_row(cell(error["text"]), cell(error["label"]), cell(error["predicted"]),
                      _fmt(error["score"], SCORE_DIGITS))
    return table


def _binary_tables(figures: dict[str, Any], title: str) -> list[Table]:
    table = Table(title=escape(visible(title)), show_edge=False, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("accuracy", "precision", "recall", "f1", "roc_auc", "loss", "n"):
        table.add_row(key, _fmt(figures.get(key)))
    if "ece" in figures:  # figures saved before it have none
        table.add_row("ece (calibration error)", _fmt(figures["ece"]))
    (tn, fp), (fn, tp) = figures["confusion_matrix"]
    matrix = Table(title="confusion matrix", show_edge=False, header_style="bold")
    matrix.add_column("")
    matrix.add_column("predicted negative", justify="right")
    matrix.add_column("predicted positive", justify="right")
    matrix.add_row("actual negative", str(tn), str(fp))
    matrix.add_row("actual positive", str(fn), str(tp))
    # figures saved before per-class figures existed have no "per_class"
    return [table, matrix] + ([_per_class_table(figures)] if "per_class" in figures else [])


_MULTI_CLASS_ROWS = (("accuracy", "accuracy"), ("macro_precision", "macro precision"),
                     ("macro_recall", "macro recall"), ("macro_f1", "macro F1"),
                     ("weighted_precision", "weighted precision"),
                     ("weighted_recall", "weighted recall"), ("weighted_f1", "weighted F1"),
                     ("roc_auc", "roc_auc (one-vs-rest, macro)"), ("loss", "loss"), ("n", "n"),
                     ("ece", "ece (calibration error)"))


def _multi_class_tables(figures: dict[str, Any], title: str) -> list[Table]:
    table = Table(title=escape(visible(title)), show_edge=False, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, name in _MULTI_CLASS_ROWS:
        table.add_row(name, _fmt(figures.get(key)))
    # class names come from the data: cell keeps "[bold]" literal and escapes ESC
    names = figures["classes"]
    matrix = Table(title="confusion matrix", show_edge=False, header_style="bold")
    matrix.add_column("")
    for name in names:
        matrix.add_column(cell(f"predicted {name}"), justify="right")
    for name, row in zip(names, figures["confusion_matrix"]):
        matrix.add_row(cell(f"actual {name}"), *(str(count) for count in row))
    return [table, _per_class_table(figures), matrix]


def _per_class_table(figures: dict[str, Any]) -> Table:
    table = Table(title="per class", show_edge=False, header_style="bold")
    table.add_column("class")
    for name in ("precision", "recall", "F1", "support"):
        table.add_column(name, justify="right")
    for row in figures["per_class"]:
        table.add_row(cell(row["class"]), _fmt(row["precision"]), _fmt(row["recall"]),
                      _fmt(row["f1"]), _fmt(row["support"]))
    return table


def render_info(manifest: dict[str, Any], fmt: str) -> None:
    if fmt == "json":
        sys.stdout.write(to_json(manifest, indent=2) + "\n")
        return
    s = manifest["settings"]
    data, training = manifest.get("data", {}), manifest.get("training", {})
    rows = [
        ("network", f"Bidirectional {s['cell'].upper()} x{s['layers']}, {s['units']} units, "
                    f"{s['pooling']} pooling, embedding {s['embed_dim']}"
                    + (f" + {s['bigram_dim']} for token pairs" if s.get("bigram_dim") else "")
                    + f", dropout {s['dropout']}"),
        ("vocabulary", f"{s['max_tokens']} tokens ({describe_tokens(manifest)}), "
                       f"sequence length {s['seq_len']}"),
        ("n-gram model", _blend_row(manifest.get("blend"), s, manifest)),
        ("labels", _labels_row(manifest)),
        ("calibration", _calibration_row(manifest.get("calibration"))),
        ("data", f"{data.get('file')} ({data.get('rows_used')} rows used; columns "
                 f"{data.get('text_col')!r}/{data.get('label_col')!r}; "
                 f"{data.get('fingerprint', '')[:19]}...)"),
        ("split", " / ".join(f"{k} {v}" for k, v in data.get("split", {}).items())),
        ("training", f"{training.get('epochs_run')} "
                     f"epoch{'s' if training.get('epochs_run') != 1 else ''} "
                     f"(best {training.get('best_epoch')}), "
                     f"{training.get('seconds')} s on {training.get('device')}"
                     + _training_extras(training, s)),
    ]
    if data.get("pretraining"):
        rows.insert(-1, ("pretraining", _pretraining_row(data["pretraining"])))
    for part in ("validation", "test"):
        f = manifest.get(part) or {}
        f1 = (f"F1 {_fmt(f.get('f1'))}" if "labels" not in manifest
              or "classes" not in manifest["labels"] else f"macro F1 {_fmt(f.get('macro_f1'))}")
        rows.append((part, f"accuracy {_fmt(f.get('accuracy'))}, {f1}, "
                           f"ROC AUC {_fmt(f.get('roc_auc'))}, n {f.get('n')}"))
    from rnncli.modeldir.artifacts import ONNX_FILE, SERVING_FILE

    onnx = all(name in manifest.get("files", {}) for name in (ONNX_FILE, SERVING_FILE))
    rows.append(("engines", "onnx (the default: no TensorFlow at predict time), tf" if onnx
                 else "tf only (no ONNX files: trained by an older rnncli, or the export "
                      "failed)"))
    rows.append(("versions", f"rnncli {manifest.get('rnncli_version')}, keras "
                             f"{manifest.get('keras_version')}, tensorflow "
                             f"{manifest.get('tensorflow_version')}; created "
                             f"{manifest.get('created')}"))
    table = Table(show_header=False, show_edge=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, cell(value))
    out_console().print(table)


def _calibration_row(calibration: dict[str, Any] | None) -> str:
    if not calibration:
        return "none (trained by an older rnncli)"
    ece = _fmt(calibration.get("validation_ece"))
    if calibration.get("temperature", 1.0) == 1.0:
        return (f"none (validation ECE {ece}; a temperature is fitted when the ECE is over "
                "0.02 with 50 or more validation rows, and kept when it lowers the "
                "validation log loss by 0.002)")
    return (f"temperature {calibration['temperature']:.2f}, fitted on the validation split "
            f"(ECE {ece} -> {_fmt(calibration.get('calibrated_validation_ece'))}, log loss "
            f"{_fmt(calibration.get('validation_loss'))} -> "
            f"{_fmt(calibration.get('calibrated_validation_loss'))})")


def _labels_row(manifest: dict[str, Any]) -> str:
    """The classes, with the rows of each in the training file (models of format 5 on)."""
    labels = manifest["labels"]
    counts = (manifest.get("data") or {}).get("class_counts")
    counts = counts if isinstance(counts, dict) else {}

    def name(n) -> str:
        return f"{n!r}" + (f" ({counts[n]} rows)" if n in counts else "")

    if "classes" in labels:
        return (f"{len(labels['classes'])} classes: "
                + ", ".join(name(n) for n in labels["classes"])
                + "; each text gets the most probable class")
    return (f"negative {name(labels['negative'])}, positive {name(labels['positive'])}, "
            f"threshold {manifest['threshold']}")


def _pretraining_row(record: dict[str, Any]) -> str:
    """The language-model pretraining the network started from (training/pretrain.py)."""
    where = f"encoder {record['encoder']}, " if record.get("encoder") else ""
    return (f"{where}{record.get('texts', 0):,} texts, {record.get('tokens', 0):,} tokens, "
            f"{record.get('epochs_run')} epoch(s), validation perplexity "
            f"{record.get('validation_perplexity')}, {record.get('seconds')} s")


def _training_extras(training: dict[str, Any], settings: dict[str, Any]) -> str:
    extras = []
    if settings.get("adversarial"):
        extras.append(f"adversarial {settings['adversarial']:g}")
    if training.get("workers", 1) > 1:
        extras.append(f"{training['workers']} processes")
    if training.get("replicas", 1) > 1:
        extras.append(f"{training['replicas']} devices in all")
    if training.get("precision", "float32") != "float32":
        extras.append(training["precision"].replace("_", " ") + " precision")
    return f" ({', '.join(extras)})" if extras else ""


def _blend_row(blend: dict[str, Any] | None, settings: dict[str, Any],
               figures: dict[str, Any]) -> str:
    """What each part and the blend score on the same validation and test rows
    (``figures``: the manifest, whose validation and test sections are the blend's)."""
    if not blend:
        return "none (RNN alone)"
    parts = blend.get("parts", {})
    w = blend.get("rnn_weight")
    return (f"{blend.get('ngrams')} {ngram_span(settings.get('ngram_order') or 2)} of "
            f"{describe_tokens(figures)}"
            + (f" (C={blend['ngram_c']:g}, chosen on validation)"
               if isinstance(blend.get("ngram_c"), (int, float)) else "")
            + f"; output = {_fmt(w, 2)} x "
            f"{settings['cell'].upper()} + {_fmt(1 - w if w is not None else None, 2)} x "
            "n-gram; "
            + "; ".join(
                f"{split} accuracy {settings['cell'].upper()} "
                f"{_fmt(parts.get('rnn', {}).get(f'{split}_accuracy'))}, n-gram "
                f"{_fmt(parts.get('ngram', {}).get(f'{split}_accuracy'))}, both "
                f"{_fmt((figures.get(split) or {}).get('accuracy'))}"
                for split in ("validation", "test"))
            + _refit_note(blend.get("ngram_refit")))


def _refit_note(refit: dict[str, Any] | None) -> str:
    """The n-gram part's refit on training + validation rows, and the test figures of the
    fit before it (the validation figures above are that fit's: it never saw those rows)."""
    if not isinstance(refit, dict):
        return ""
    before = refit.get("before")
    before = before if isinstance(before, dict) else {}
    return (f"; n-gram part refit on the {refit.get('rows')} training + validation rows "
            f"(before it: test accuracy n-gram "
            f"{_fmt(before.get('ngram_test_accuracy'))}, both "
            f"{_fmt(before.get('test_accuracy'))})")


def render_rows(rows: list[dict[str, str]], fmt: str) -> None:
    if fmt == "json":
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table(show_edge=False, header_style="bold")
    for key in rows[0]:
        table.add_column(key)
    for row in rows:
        table.add_row(*(cell(v) for v in row.values()))
    out_console().print(table)
