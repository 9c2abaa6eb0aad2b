"""Accuracy benchmark: rnncli with its defaults against three classical baselines.

    python benchmarks/accuracy.py DATA [--test-file FILE] [--rnncli-args "--cell lstm"]
    python benchmarks/accuracy.py DATA --split-from-data      # the baselines alone

Every system sees the same split and the same test rows:
- without --test-file, `rnncli train DATA` makes its own stratified split (seeded); the
  linear baselines choose their regularization C on rnncli's validation rows (the
  lowest log loss over C_GRID), then refit on train + validation with it; fastText
  trains on train + validation; all are scored on the test split rnncli saved (rnncli's
  validation rows choose its epoch and blend weight; nothing is tuned on the test rows);
- with --test-file, rnncli trains on DATA as a user would (its own validation and test
  splits take 10% each, so it fits on 80% of DATA); the linear baselines choose C on a
  stratified 10% of DATA and refit on all of it, fastText trains on all of it; all are
  scored on FILE;
- with --split-from-data (no rnncli model: --systems may not name rnncli), the columns are
  detected and the split made here as `rnncli train DATA` would make it with its default
  seed and split sizes, calling rnncli's own reader and split.

Systems: rnncli (the installed command, defaults unless --rnncli-args); TF-IDF 1-2-grams +
logistic regression (scikit-learn); NBSVM-bi (Wang & Manning 2012): binary 1-2-gram
features scaled by their Naive Bayes log-count ratios, into logistic regression (the
NBLR form of NBSVM); fastText supervised with bigrams (wordNgrams=2) and 10 epochs.
Three or more label values (classes as rnncli's reader makes them) work too: the TF-IDF
model is then a multinomial logistic regression (C on the validation log loss over all
classes, the class of highest probability predicted), fastText as before, and NBSVM,
whose log-count ratios set one positive class against one negative, is skipped with a
note; F1 (of the positive class) is then '-', and the header names the classes.
--tokens sets the baselines' tokens:
- `words`: lower-cased, HTML tags dropped, split at spaces and around punctuation (fastText
  keeps the punctuation marks as tokens; TF-IDF's default pattern keeps words of two or
  more letters or digits);
- `chars`, for scripts written without spaces (Chinese, Japanese), one rule for both:
  after NFKC (full-width ＡＢＣ１２３！？ become ASCII) and lower-casing, each Han,
  Hiragana or Katakana character (ー included) is a token, runs of other letters and
  digits stay words, and each other mark is a token;
- `auto` (the default): chars when Han and kana make up at least CHARS_SHARE (20%) of the
  letters in the baselines' training texts, else words.
Each system runs in its own process; the table gives accuracy, F1, macro-F1 (the mean of
the classes' F1, by rnncli.inference.metrics' rule for all systems), train seconds and that
process's peak RSS, and says which tokens the baselines used. Train seconds: for rnncli the
whole 'rnncli train' command (start-up, reading, tokenizing, fitting, saving and
verifying); for the baselines only their fit.
Needs: pip install scikit-learn fasttext (benchmark-only dependencies).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_baseline":
        return _baseline(*sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data")
    parser.add_argument("--test-file", default=None)
    parser.add_argument("--rnncli-args", default="", help="extra 'rnncli train' options")
    parser.add_argument("--systems", default=None,
                        help="default: rnncli,tfidf,fasttext (tfidf,fasttext with "
                             "--split-from-data)")
    parser.add_argument("--tokens", choices=("auto", "words", "chars"), default="auto",
                        help="the baselines' tokens (see the top of this file)")
    parser.add_argument("--split-from-data", action="store_true",
                        help="no rnncli model: the baselines alone, on the split 'rnncli "
                             "train DATA' would make with its defaults")
    parser.add_argument("--workdir", default=None, help="keep files here (default: temp)")
    args = parser.parse_args()
    systems = (args.systems or ("tfidf,nbsvm,fasttext" if args.split_from_data
                                else "rnncli,tfidf,nbsvm,fasttext")).split(",")
    if args.split_from_data and "rnncli" in systems:
        parser.error("--split-from-data runs the baselines alone; "
                     "leave rnncli out of --systems")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="rnncli-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    model = None if args.split_from_data else work / "model"
    if "rnncli" in systems:
        rows.append(_run_rnncli(args.data, model, args.rnncli_args, args.test_file))
    elif model is not None and not (model / "rnncli.json").is_file():
        sys.exit(f"without rnncli in --systems, {model} must hold the model of an earlier run "
                 "(its split and columns are reused), or pass --split-from-data")
    split = _baseline_split(args.data, model, args.test_file)
    tokens, why = _choose_tokens(args.tokens, [text for text, _ in split.train])
    files = _write_rows(work, split)
    notes = []
    for system in ("tfidf", "nbsvm", "fasttext"):
        if system == "nbsvm" and system in systems and not split.binary:
            notes.append(f"nbsvm: skipped, binary only ({len(split.label_names)} classes "
                         "here; its log-count ratios set one class against one other)")
        elif system in systems:
            row = _run_child([sys.executable, str(HERE), "_baseline", system, tokens,
                              str(len(split.label_names)), *map(str, files)], system)
            rows.append({**row, "detail": _PEER_DETAIL[system, tokens].format(**row)})
    _print_table(rows, args.data, split, f"baselines' tokens: {tokens} ({why})", notes)


# --------------------------------------------------------------------------- rnncli


def _run_rnncli(data: str, model: Path, extra: str, test_file: str | None) -> dict:
    command = ["rnncli", "train", data, "-o", str(model), "--quiet", *shlex.split(extra)]
    row = _run_child(command, "rnncli " + (extra or "(defaults)"), parse=False)
    evaluate = ["rnncli", "evaluate", *([test_file] if test_file else []), "-m", str(model),
                "-f", "json"]
    figures = json.loads(subprocess.run(evaluate, check=True, capture_output=True,
                                        text=True).stdout)
    manifest = json.loads((model / "rnncli.json").read_text())
    binary = "classes" not in manifest["labels"]
    row.update(accuracy=figures["accuracy"], f1=figures["f1"] if binary else None,
               macro_f1=figures.get("macro_f1"), n=figures["n"],
               detail=f"{manifest['settings']['cell']}, pooling "
                      f"{manifest['settings']['pooling']}, seq_len "
                      f"{manifest['settings']['seq_len']}, vocab "
                      f"{manifest['settings']['max_tokens']}, epochs "
                      f"{manifest['training']['epochs_run']}" + _blend_detail(manifest))
    return row


def _blend_detail(manifest: dict) -> str:
    blend = manifest.get("blend")
    if not blend:
        return ", no n-gram model"
    parts = blend["parts"]
    # the parts on rnncli's own validation and test splits (its test split is this
    # table's test rows unless --test-file gave others)
    c = f" (C={blend['ngram_c']:g})" if blend.get("ngram_c") else ""
    return (f", blend {blend['rnn_weight']:.2f} x rnn + n-gram{c} (own validation / test "
            f"split: rnn {parts['rnn']['validation_accuracy']:.4f} / "
            f"{parts['rnn']['test_accuracy']:.4f}, n-gram "
            f"{parts['ngram']['validation_accuracy']:.4f} / "
            f"{parts['ngram']['test_accuracy']:.4f}"
            + _refit_detail(blend.get("ngram_refit")) + ")")


def _refit_detail(refit: dict | None) -> str:
    """The n-gram part's refit on train + validation rows, and the test accuracy before it."""
    if not refit:
        return ""
    before = refit["before"]
    return (f"; n-gram refit on {refit['rows']} rows; before the refit: n-gram test "
            f"{before['ngram_test_accuracy']:.4f}, blend test {before['test_accuracy']:.4f}")


@dataclass(frozen=True)
class Split:
    """The baselines' rows as (text, class index), and where the test rows come from.
    ``val``: the rows their regularization is chosen on (rnncli's validation rows); they
    are then refitted on train + val with the chosen value. ``label_names``: the class
    names by index, (negative, positive) for two."""

    train: list[tuple[str, int]]
    val: list[tuple[str, int]]
    test: list[tuple[str, int]]
    source: str
    label_names: tuple[str, ...]

    @property
    def binary(self) -> bool:
        return len(self.label_names) == 2


def _baseline_split(data: str, model: Path | None, test_file: str | None) -> Split:
    """rnncli's split: read from its model's manifest, or made here with its defaults."""
    sys.path.insert(0, str(HERE.parent.parent))
    from rnncli.core.config import TrainConfig
    from rnncli.data.dataset import load_dataset, split_dataset

    if model is None:
        d = TrainConfig()
        columns, s = {}, {"val_split": d.val_split, "test_split": d.test_split, "seed": d.seed}
        classes = None
    else:
        manifest = json.loads((model / "rnncli.json").read_text())
        columns = {"text_col": manifest["data"]["text_col"],
                   "label_col": manifest["data"]["label_col"]}
        classes = manifest["labels"].get("classes")
        if classes is None:  # two classes; more have no positive one
            columns["positive_label"] = manifest["labels"]["positive"]
        s = manifest["settings"]
    data_set = load_dataset(data, **columns)
    names = data_set.label_names
    assert classes in (None, list(names)), "the baselines' classes differ from rnncli's"
    if test_file:
        test_set = load_dataset(test_file, known_labels=names)
        # all of DATA to train on; 10% of it (stratified, seeded) to choose C on first
        train, val = _carve(_pairs(data_set), 0.1, s["seed"])
        return Split(train, val, _pairs(test_set), f"from {test_file}", names)
    train, val, test = split_dataset(data_set, val_split=s["val_split"],
                                     test_split=s["test_split"], seed=s["seed"])
    if model is None:
        return Split(_pairs(train), _pairs(val), _pairs(test),
                     f"split as 'rnncli train' makes it: seed {s['seed']}, validation "
                     f"{s['val_split']}, test {s['test_split']}, stratified; no rnncli run",
                     names)
    with gzip.open(model / "test.jsonl.gz", "rt", encoding="utf-8") as fh:
        saved = [json.loads(line)["text"] for line in fh if line.strip()]
    assert saved == test.texts, "the baselines' test rows differ from rnncli's"
    return Split(_pairs(train), _pairs(val), _pairs(test),
                 "held out by rnncli, same for all", names)


def _carve(pairs: list[tuple[str, int]], share: float, seed: int):
    """(rest, a stratified ``share`` of the rows), seeded."""
    import random

    rng = random.Random(seed)
    held = set()
    for label in sorted({y for _, y in pairs}):
        index = [i for i, (_, y) in enumerate(pairs) if y == label]
        rng.shuffle(index)
        held.update(index[:round(len(index) * share)])
    return ([r for i, r in enumerate(pairs) if i not in held],
            [r for i, r in enumerate(pairs) if i in held])


def _pairs(data_set) -> list[tuple[str, int]]:
    return [(text, int(label)) for text, label in zip(data_set.texts, data_set.labels)]


def _write_rows(work: Path, split: Split) -> list[Path]:
    """Write the baselines' train, validation and test rows as JSON lines (text, label)."""
    paths = []
    for name, rows in (("train", split.train), ("val", split.val), ("test", split.test)):
        path = work / f"{name}.jsonl"
        with open(path, "w", encoding="utf-8") as fh:
            for text, label in rows:
                fh.write(json.dumps({"text": text, "label": label}) + "\n")
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- tokens

# Han (ideographs, 々, 〇), Hiragana, Katakana and its ー; not ・ (U+30FB), a punctuation
# mark. In these scripts a run of letters between spaces is a clause, not a word.
_CJK = ("\u3005\u3007\u3040-\u30fa\u30fc-\u30ff\u31f0-\u31ff\u3400-\u4dbf"
        "\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f")
_CHAR_TOKEN = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+(?:'[^\W_{_CJK}]+)*|[^\w\s]")
_CJK_LETTER = re.compile(f"[{_CJK}]")
_LETTER = re.compile(r"[^\W\d_]")
CHARS_SHARE = 0.2  # English text with quoted Chinese names stays far below, Chinese or
#                    Japanese with English brand names far above
_PEER_DETAIL = {
    ("tfidf", "words"): "word 1-2-grams, min_df 2, LR C={C:g} (chosen on validation)",
    ("tfidf", "chars"): "char-token 1-2-grams, min_df 2, LR C={C:g} (chosen on validation)",
    ("nbsvm", "words"): "NB log-count ratios of binary word 1-2-grams, LR C={C:g} (chosen "
                        "on validation)",
    ("nbsvm", "chars"): "NB log-count ratios of binary char-token 1-2-grams, LR C={C:g} "
                        "(chosen on validation)",
    ("fasttext", "words"): "word tokens, wordNgrams 2, 10 epochs",
    ("fasttext", "chars"): "char tokens, wordNgrams 2, 10 epochs",
}
# The linear peers' inverse regularization strengths, tried on the validation rows.
C_GRID = (0.03, 0.06, 0.125, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256)


def _choose_tokens(mode: str, texts: list[str]) -> tuple[str, str]:
    """'words' or 'chars' for the baselines, and why."""
    if mode != "auto":
        return mode, "--tokens"
    cjk = sum(len(_CJK_LETTER.findall(text)) for text in texts)
    letters = sum(len(_LETTER.findall(text)) for text in texts)
    share = cjk / letters if letters else 0.0
    tokens = "chars" if share >= CHARS_SHARE else "words"
    return tokens, (f"auto: Han/Hiragana/Katakana are {share:.1%} of the training letters; "
                    f"chars from {CHARS_SHARE:.0%}")


def _char_tokens(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text).lower()  # ＡＢＣ１２３！？ -> abc123!?
    return _CHAR_TOKEN.findall(re.sub(r"<[^<>]{0,200}>", " ", text))


# --------------------------------------------------------------------------- baselines


def _baseline(system: str, tokens: str, classes: str, train_path: str, val_path: str,
              test_path: str) -> None:
    def read(path):
        return [json.loads(line) for line in open(path, encoding="utf-8")]

    train, val, test = read(train_path), read(val_path), read(test_path)
    k = int(classes)
    started = time.perf_counter()
    extra = {}
    if system in ("tfidf", "nbsvm"):
        predict, extra["C"] = _train_linear(system, train, val, tokens, k)
    else:
        predict = _train_fasttext(train + val, tokens)
    seconds = time.perf_counter() - started
    predicted = predict([r["text"] for r in test])
    labels = [r["label"] for r in test]
    tp = sum(p == 1 and y == 1 for p, y in zip(predicted, labels))
    fp = sum(p == 1 and y == 0 for p, y in zip(predicted, labels))
    fn = sum(p == 0 and y == 1 for p, y in zip(predicted, labels))
    accuracy = sum(p == y for p, y in zip(predicted, labels)) / len(labels)
    f1 = round(2 * tp / (2 * tp + fp + fn) if tp else 0.0, 4) if k == 2 else None
    macro_f1 = _macro_f1(labels, predicted, k)
    print(json.dumps({"accuracy": round(accuracy, 4), "f1": f1,
                      "macro_f1": None if macro_f1 is None else round(macro_f1, 4),
                      "n": len(labels), "train_seconds": round(seconds, 1), **extra}))


def _macro_f1(labels: list[int], predicted: list[int], k: int) -> float | None:
    """rnncli's own macro F1 (rnncli.inference.metrics), so that all rows of the table agree on it:
    a class never predicted, or absent from the test rows, is left out of the mean."""
    import numpy as np

    sys.path.insert(0, str(HERE.parent.parent))
    from rnncli.inference.metrics import evaluate_scores

    predicted = np.asarray(predicted, dtype=np.int64)
    # the predicted class as a score: 0/1 for two classes, else one-hot rows
    scores = predicted if k == 2 else np.eye(k)[predicted]
    return evaluate_scores(labels, scores)["macro_f1"]


def _clean(text: str) -> str:
    text = re.sub(r"<[^<>]{0,200}>", " ", text.lower())
    return re.sub(r"([^\w\s'])", r" \1 ", text)


def _features(system: str, tokens: str):
    """A fresh scikit-learn vectorizer: sublinear TF-IDF (tfidf) or binary counts (nbsvm,
    as Wang & Manning 2012 binarize), of token 1-2-grams."""
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

    words = ({"tokenizer": _char_tokens, "token_pattern": None, "lowercase": False}
             if tokens == "chars" else {"preprocessor": _clean})
    if system == "tfidf":
        return TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, **words)
    return CountVectorizer(ngram_range=(1, 2), binary=True, **words)


def _nb_ratios(x, y, alpha: float = 1.0):
    """NBSVM's log-count ratio r = log((p / |p|1) / (q / |q|1)), p and q the smoothed
    feature counts of the positive and negative rows."""
    import numpy as np

    y = np.asarray(y)
    p = alpha + np.asarray(x[y == 1].sum(0)).ravel()
    q = alpha + np.asarray(x[y == 0].sum(0)).ravel()
    return np.log((p / p.sum()) / (q / q.sum()))


def _fit_linear(system: str, tokens: str, rows, C: float):
    """(fitted vectorizer, per-feature scale or None, classifier) on ``rows``."""
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression

    vectorizer = _features(system, tokens)
    texts, labels = [r["text"] for r in rows], [r["label"] for r in rows]
    x = vectorizer.fit_transform(texts)
    scale = _nb_ratios(x, labels) if system == "nbsvm" else None
    if scale is not None:
        x = x @ sp.diags(scale)
    classifier = LogisticRegression(C=C, max_iter=5000).fit(x, labels)
    return vectorizer, scale, classifier


def _linear_scores(model, texts, k: int):
    """Class probabilities, one column per class 0..k-1 (0 for a class absent in training)."""
    import numpy as np
    import scipy.sparse as sp

    vectorizer, scale, classifier = model
    x = vectorizer.transform(texts)
    if scale is not None:
        x = x @ sp.diags(scale)
    scores = np.zeros((x.shape[0], k))
    scores[:, classifier.classes_] = classifier.predict_proba(x)
    return scores


def _train_linear(system: str, train, val, tokens: str, k: int):
    """C chosen on the validation rows (lowest log loss; ties go to the smaller C), then
    refitted on train + validation with it; returns (predict, C). With k > 2 classes the
    lbfgs logistic regression is multinomial and predicts the most probable class."""
    from sklearn.metrics import log_loss

    labels = [r["label"] for r in val]
    losses = []
    for C in C_GRID:
        scores = _linear_scores(_fit_linear(system, tokens, train, C),
                                [r["text"] for r in val], k)
        losses.append(log_loss(labels, scores[:, 1] if k == 2 else scores,
                               labels=list(range(k))))
    best = min(range(len(C_GRID)), key=lambda i: (round(losses[i], 6), C_GRID[i]))
    model = _fit_linear(system, tokens, train + val, C_GRID[best])

    def predict(new):
        scores = _linear_scores(model, new, k)
        if k == 2:  # the positive class from 0.5 up, as rnncli's default threshold
            return [int(p >= 0.5) for p in scores[:, 1]]
        return [int(i) for i in scores.argmax(axis=1)]

    return predict, C_GRID[best]


def _train_fasttext(rows, tokens: str):
    import fasttext

    split = _char_tokens if tokens == "chars" else lambda text: _clean(text).split()
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as fh:
        for r in rows:
            fh.write(f"__label__{r['label']} {' '.join(split(r['text']))}\n")
    model = fasttext.train_supervised(fh.name, epoch=10, wordNgrams=2, verbose=0)
    os.unlink(fh.name)

    def predict(new):
        labels, _ = model.predict([" ".join(split(t)) for t in new])
        return [int(label[0].replace("__label__", "")) for label in labels]

    return predict


# --------------------------------------------------------------------------- plumbing


# Runs a command and records the peak RSS of it alone (its own RUSAGE_CHILDREN).
_WRAPPER = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[2:]).returncode
open(sys.argv[1], "w").write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""


def _run_child(command: list[str], name: str, parse: bool = True) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".peak") as peak:
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", _WRAPPER, peak.name, *command],
                              capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            sys.exit(f"{name} failed ({proc.returncode}): {proc.stderr[-2000:]}")
        peak_mb = round(int(Path(peak.name).read_text()) / 1024)  # KB on Linux
    row = {"system": name, "train_seconds": round(seconds, 1), "peak_mb": peak_mb,
           "detail": ""}
    if parse:
        row.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    return row


def _print_table(rows: list[dict], data: str, split: Split, tokens: str,
                 notes: list[str]) -> None:
    classes = ""
    if not split.binary:
        counts = [0] * len(split.label_names)
        for _, label in split.test:
            counts[label] += 1
        classes = (f"; {len(counts)} classes (test rows): "
                   + ", ".join(f"{name} {n}" for name, n in zip(split.label_names, counts)))
    print(f"data: {data}; test rows: {len(split.test)} ({split.source}){classes}")
    print(tokens)
    print(f"{'system':<34} {'accuracy':>8} {'F1':>7} {'macro-F1':>8} {'train s':>8} "
          f"{'peak MB':>8}  detail")
    # baselines: train seconds = fit time in their process; rnncli: the whole command
    for r in rows:
        print(f"{r['system']:<34} {r['accuracy']:>8.4f} {_figure(r['f1']):>7} "
              f"{_figure(r.get('macro_f1')):>8} {r['train_seconds']:>8.1f} "
              f"{r['peak_mb']:>8}  {r.get('detail', '')}")
    for note in notes:
        print(note)


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


if __name__ == "__main__":
    main()
