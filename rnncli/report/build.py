"""``rnncli report``: PNG plots and one self-contained HTML page about a model on its
held-out test split (or a labelled file).

Light: matplotlib (an optional extra, ``rnncli[report]``, drawn with the Agg backend) is
imported when a report is written; the scores come from the engine ``predict`` uses.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from rnncli.core.errors import UsageError
from rnncli.core.extras import install_line, require
from rnncli.inference.evaluation import Scored, figures_of, notes_of, score_dataset
from rnncli.inference.metrics import ECE_BINS, decide, label_probability, roc_auc
from rnncli.report.page import render_page

PLOTS = ("roc", "pr", "reliability", "confusion", "scores", "learning")
MAX_ANNOTATED = 20  # classes up to which the confusion matrix prints its counts


def pyplot():
    """matplotlib's pyplot on the Agg backend, or how to install it."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError as exc:  # missing, or installed without what it needs
        raise UsageError(f"rnncli report cannot import matplotlib ({exc}): "
                         f"{install_line('report')}") from None
    return plt


def write_report(model_dir: str | Path, data_path: str | Path | None, out: str | Path, *,
                 errors: int = 10, show_skipped: bool = False,
                 **scoring: Any) -> tuple[Path, list[str]]:
    """Write ``out``/index.html and one PNG per plot; returns (the page, notes).
    ``scoring``: text_col, label_col, encoding, device, engine, threshold as for
    ``score_dataset``."""
    require("report")
    if not str(out).strip():
        raise UsageError("-o is empty; name the directory to write the report to")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a directory; choose another -o")
    for name in ("index.html", *(f"{p}.png" for p in PLOTS)):
        if (out / name).is_dir():
            raise UsageError(f"{out / name}: is a directory; move it or choose another -o")
    scored = score_dataset(model_dir, data_path, **scoring)
    names = list(scored.data.label_names)
    figures = figures_of(scored, errors)
    wrong = figures.pop("errors", [])
    notes = notes_of(scored, show_skipped)
    notes += [n for n in [curve_note(scored, names)] if n]
    explained, note = _explanations(model_dir, wrong, scoring.get("threshold"))
    notes += [note] if note else []
    history = (scored.manifest.get("training") or {}).get("history") or []
    plt, pngs = pyplot(), {}
    import matplotlib

    from rnncli.report.fonts import plot_names

    shown = plot_names(names)  # Chinese names need a font with their glyphs
    if shown.stand_ins:
        notes.append(f"no font here has the characters of {', '.join(map(repr, names))}: the "
                     f"plots call them {', '.join(shown.names)}, and the page says which is "
                     "which (a Chinese/Japanese font, such as Noto Sans CJK, draws them)")
    # class names are text, never mathtext ("$5-$10" would be drawn as maths)
    settings = {"text.parse_math": False,
                **({"font.family": shown.families} if shown.families else {})}
    with matplotlib.rc_context(settings):
        for name in PLOTS:
            if name == "learning" and not history:
                notes.append("no training history in this model: no learning curves")
                continue
            pngs[name] = _png(plt, DRAW[name](plt, scored, shown.names, history))
    page = render_page(scored, figures, pngs, wrong, explained, listed=errors,
                       source=str(data_path or "the held-out test split"),
                       model_dir=str(model_dir), stand_ins=shown.stand_ins)
    files = {**{f"{name}.png": png for name, png in pngs.items()},
             "index.html": page.encode("utf-8")}
    publish(out, files, stale=[f"{name}.png" for name in PLOTS if name not in pngs])
    return out / "index.html", notes


def publish(out: Path, files: dict[str, bytes], stale: list[str]) -> None:
    """Write every file beside its target first, then move them all in: a write that
    fails (a full disk) leaves the directory as it was. ``stale``: an earlier report's
    files this one lacks (they would mislead), removed."""
    temps = {name: out / f".{name}.tmp" for name in files}
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            temps[name].write_bytes(content)
        for name in files:
            os.replace(temps[name], out / name)
        for name in stale:
            (out / name).unlink(missing_ok=True)
    except OSError as exc:
        raise UsageError(f"{out}: cannot write the report ({exc.strerror or exc}); choose "
                         "another -o") from exc
    finally:
        for temp in temps.values():
            temp.unlink(missing_ok=True)


def _explanations(model_dir, wrong: list[dict], threshold) -> tuple[list | None, str | None]:
    if not wrong:
        return [], None
    from rnncli.core.errors import ModelError
    from rnncli.inference.explain import explain_records, load_explainer

    try:
        with load_explainer(model_dir, threshold=threshold) as predictor:
            return explain_records(predictor, [w["text"] for w in wrong]), None
    except ModelError as exc:
        return None, f"no explanations in the report: {exc.message}"


def _png(plt, fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


# --------------------------------------------------------------------------- curves


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rates, true positive rates) at every distinct score, from (0, 0)."""
    tps, fps = _counts(labels, scores)
    return (np.r_[0.0, fps / max(fps[-1], 1)] if len(fps) else np.zeros(1),
            np.r_[0.0, tps / max(tps[-1], 1)] if len(tps) else np.zeros(1))


def pr_curve(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """(recalls, precisions) at every distinct score, from recall 0 (precision 1)."""
    tps, fps = _counts(labels, scores)
    if not len(tps):
        return np.zeros(1), np.ones(1)
    return np.r_[0.0, tps / max(tps[-1], 1)], np.r_[1.0, tps / np.maximum(tps + fps, 1)]


def _counts(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """True and false positives above each distinct score, highest score first."""
    y = np.asarray(labels, np.float64)
    s = np.asarray(scores, np.float64)
    order = np.argsort(-s, kind="stable")
    y, s = y[order], s[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1] if len(s) else np.zeros(0, int)
    tps = np.cumsum(y)[last]
    return tps, (last + 1) - tps


def _one_vs_rest(scored: Scored, names: list[str]):
    """(name, 0/1 labels, scores) per curve: the positive class for two classes, every
    class against the rest for more; a class the data has no rows of, or only rows of,
    has no curve."""
    y = np.asarray(scored.data.labels)
    if scored.scores.ndim == 1:
        curves = [(names[1], (y == 1).astype(int), scored.scores)]
    else:
        curves = [(name, (y == c).astype(int), scored.scores[:, c])
                  for c, name in enumerate(names)]
    return [(name, y, s) for name, y, s in curves if y.any() and not y.all()]


def curve_note(scored: Scored, names: list[str]) -> str | None:
    """What the ROC and precision-recall plots leave out, said on stderr too."""
    drawn = {name for name, _, _ in _one_vs_rest(scored, names)}
    if not drawn:
        return ("ROC and precision-recall curves need rows of more than one class; "
                "this data has one, so they are empty")
    missing = [n for n in (names if len(names) > 2 else names[1:]) if n not in drawn]
    return (f"no ROC or precision-recall curve for {', '.join(map(repr, missing))}: the "
            "data has no rows of it" if missing else None)


def _undefined(ax, drawn: bool) -> None:
    if not drawn:
        ax.text(0.5, 0.5, "undefined: the data has one class", ha="center",
                transform=ax.transAxes)


# --------------------------------------------------------------------------- plots


def _roc(plt, scored, names, history):
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    curves = _one_vs_rest(scored, names)
    for name, y, s in curves:
        fpr, tpr = roc_curve(y, s)
        ax.plot(fpr, tpr, label=_legend(f"{name} (AUC {roc_auc(y, s):.3f})"))
    _undefined(ax, bool(curves))
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
    _frame(ax, "ROC curve" + ("s, each class against the rest" if len(names) > 2 else ""),
           "false positive rate", "true positive rate")
    return fig


def _pr(plt, scored, names, history):
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    curves = _one_vs_rest(scored, names)
    for name, y, s in curves:
        recall, precision = pr_curve(y, s)
        ax.plot(recall, precision, label=_legend(f"{name} ({y.mean():.0%} of rows)"))
    _undefined(ax, bool(curves))
    _frame(ax, "precision-recall" + (", each class against the rest" if len(names) > 2
                                     else f" of '{names[1]}'"), "recall", "precision")
    return fig


def _reliability(plt, scored, names, history):
    confidence, correct = _confidence(scored)
    edges = np.linspace(0, 1, ECE_BINS + 1)
    index = np.minimum((confidence * ECE_BINS).astype(int), ECE_BINS - 1)
    counts = np.bincount(index, minlength=ECE_BINS)
    accuracy = np.bincount(index, weights=correct, minlength=ECE_BINS) / np.maximum(counts, 1)
    fig, (ax, below) = plt.subplots(2, 1, figsize=(5.2, 5.6), sharex=True,
                                    gridspec_kw={"height_ratios": [3, 1]})
    shown = counts > 0
    ax.bar(edges[:-1][shown], accuracy[shown], width=1 / ECE_BINS, align="edge",
           edgecolor="black", color="#4c72b0", label="accuracy in the bin")
    ax.plot([0, 1], [0, 1], ls=":", c="grey", label="perfect calibration")
    _frame(ax, "reliability: the predicted label's probability", None, "accuracy")
    below.bar(edges[:-1], counts, width=1 / ECE_BINS, align="edge", color="grey")
    below.set_xlabel("predicted label's probability")
    below.set_ylabel("texts")
    # two classes: the predicted label's probability is at least min(t, 1 - t)
    low = min(0.5, scored.threshold, 1 - scored.threshold) if len(names) == 2 else 0.0
    below.set_xlim(low, 1)
    return fig


def _confidence(scored: Scored) -> tuple[np.ndarray, np.ndarray]:
    chosen = decide(scored.scores, scored.threshold)
    return (label_probability(scored.scores, chosen),
            (chosen == np.asarray(scored.data.labels)).astype(float))


def _confusion(plt, scored, names, history):
    k = len(names)
    y = np.asarray(scored.data.labels)
    predicted = decide(scored.scores, scored.threshold)
    matrix = np.zeros((k, k), dtype=int)
    np.add.at(matrix, (y, predicted), 1)
    size = min(4 + 0.45 * k, 16)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    ax.imshow(matrix, cmap="Blues")
    if k <= MAX_ANNOTATED:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center",
                        color="white" if matrix[i, j] > matrix.max() / 2 else "black")
    ax.set_xticks(range(k), names, rotation=45 if k > 3 else 0, ha="right" if k > 3 else "center")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix (counts)")
    return fig


def _scores(plt, scored, names, history):
    y, p = np.asarray(scored.data.labels), np.asarray(scored.scores, np.float64)
    bins = np.linspace(0, 1, 31)
    if p.ndim == 1:
        fig, ax = plt.subplots(figsize=(5.6, 4))
        for c, name in enumerate(names):
            ax.hist(p[y == c], bins=bins, alpha=0.6,
                    label=_legend(f"true {name} ({(y == c).sum()})"))
        ax.axvline(scored.threshold, c="black", ls=":", lw=1, label="threshold")
        _frame(ax, f"score ('{names[1]}' probability) by true label", "score", "texts")
        return fig
    cols = min(len(names), 3)
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.8 * rows), squeeze=False)
    for c, name in enumerate(names):
        ax = axes[c // cols][c % cols]
        ax.hist(p[y == c, c], bins=bins, color="#4c72b0")
        ax.set_title(f"true {name} ({(y == c).sum()}): p({name})", fontsize=9)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    fig.suptitle("probability of the true class, by true class")
    fig.tight_layout()
    return fig


def _learning(plt, scored, names, history):
    epochs = [h.get("epoch") for h in history]
    best = (scored.manifest.get("training") or {}).get("best_epoch")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, key in zip(axes, ("loss", "accuracy")):
        for prefix, label in (("", "training"), ("val_", "validation")):
            values = [h.get(prefix + key) for h in history]
            if any(v is not None for v in values):
                ax.plot(epochs, [np.nan if v is None else v for v in values], marker="o",
                        ms=3, label=label)
        if best:
            ax.axvline(best, c="grey", ls=":", label=f"kept (epoch {best})")
        _frame(ax, f"recurrent network: {key}", "epoch", key)
    fig.tight_layout()
    return fig


def _legend(label: str) -> str:
    """A legend entry as written (matplotlib leaves out labels that start with "_")."""
    return " " + label if label.startswith("_") else label


def _frame(ax, title, xlabel, ylabel) -> None:
    ax.set_title(title, fontsize=10)
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")


DRAW = {"roc": _roc, "pr": _pr, "reliability": _reliability, "confusion": _confusion,
        "scores": _scores, "learning": _learning}
