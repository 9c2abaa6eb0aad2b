"""Where the recurrent network helps: each part of a trained model on groups of its test rows.

    python benchmarks/phenomena.py MODEL_DIR [MODEL_DIR ...] [--test-file FILE] [--format json]

For each model directory (trained by `rnncli train`, n-gram model on), reads the held-out
test split the model saved (`test.jsonl.gz`; nothing here was tuned on it), or FILE (a
labelled file with the model's label spellings, read as `rnncli evaluate` reads it), and
scores every row with the recurrent network alone, the n-gram model alone and the served blend
(the sub-models of `model.keras`). It prints their accuracy on groups of rows that
single out what word order carries:

- negation: a negator (English not, n't, no, never, nothing, without, ...; Chinese and
  Japanese 不, 没, 无, 别, 未, 非, ない, ません, less the words they only start or end,
  such as 非常, 特别, 无线, 少ない);
- contrast: a contrast word (but, however, although, though, yet, despite, ...;
  但, 可是, 不过, 然而, 却, 虽然, けど, しかし, でも);
- both, and neither;
- length: the shortest third and the longest third of the rows, by tokens;
- the rows where the two parts disagree, and which part was right there.

A group of n rows has a binomial standard error of about sqrt(p(1-p)/n): on 100 rows at
0.85, 0.036. Differences within that are noise; the table gives n.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

# Whole words: single characters such as 非, 别 and 无 would match 非常 ("very"), 特别
# ("especially") and 无线 ("wireless"), and ない would match 少ない ("few").
NEGATION = re.compile(
    r"\b(?:not|no|never|nothing|nobody|none|neither|nor|nowhere|without|hardly|barely|"
    r"cannot)\b|n['\u2019]t\b|不(?!过)|没|(?<!特)别(?![的人])|未|无(?!线|论)|非(?!常)|"
    r"(?<![少危])ない|ません", re.IGNORECASE)
CONTRAST = re.compile(
    r"\b(?:but|however|although|though|yet|despite|nevertheless|nonetheless|whereas|"
    r"otherwise)\b|但|可是|不过|然而|却|虽然|けど|しかし|(?<![こどな])でも", re.IGNORECASE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--test-file", default=None, help="score these labelled rows instead")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    args = parser.parse_args()
    results = [groups(Path(m), args.test_file) for m in args.models]
    if args.format == "json":
        json.dump(results, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    for result in results:
        print(f"\n{result['model']}: {result['rows']} test rows, blend weight "
              f"{result['rnn_weight']:.2f} x RNN")
        print(f"{'rows':<32}{'n':>6}  {'RNN':>7}  {'n-gram':>7}  {'blend':>7}")
        for name, g in result["groups"].items():
            print(f"{name:<32}{g['n']:>6}  {_f(g['rnn'])}  {_f(g['ngram'])}  {_f(g['blend'])}")


def _f(value: float | None) -> str:
    return f"{value:>7.4f}" if value is not None else f"{'-':>7}"


def groups(model_dir: Path, test_file: str | None = None) -> dict:
    """Each part's and the blend's accuracy on groups of the model's test rows."""
    from rnncli.modeldir import artifacts
    from rnncli.network import loading

    manifest = artifacts.check_model_dir(model_dir, extra=(artifacts.TEST_FILE,))
    if not manifest.get("blend"):
        raise SystemExit(f"{model_dir}: has no n-gram model (trained with --no-ngrams); "
                         "nothing to compare")
    from rnncli.data.dataset import load_dataset
    from rnncli.inference.metrics import decide

    model = loading.load_keras_model(model_dir)
    # the saved split's labels are class names, read as evaluate reads them
    data = load_dataset(test_file or model_dir / artifacts.TEST_FILE,
                        **({} if test_file else {"text_col": "text", "label_col": "label"}),
                        known_labels=artifacts.label_names(manifest))
    texts, labels = list(data.texts), np.asarray(data.labels)
    rnn, ngram, blend, lengths = _scores(model, texts)
    right = {name: decide(s) == labels for name, s in
             (("rnn", rnn), ("ngram", ngram), ("blend", blend))}
    neg = np.array([bool(NEGATION.search(t)) for t in texts])
    con = np.array([bool(CONTRAST.search(t)) for t in texts])
    low, high = np.quantile(lengths, [1 / 3, 2 / 3])
    disagree = right["rnn"] != right["ngram"]
    masks = {
        "all": np.ones(len(texts), bool),
        "negation": neg,
        "contrast": con,
        "negation and contrast": neg & con,
        "neither": ~neg & ~con,
        f"shortest third (<= {low:.0f} tokens)": lengths <= low,
        f"longest third (> {high:.0f} tokens)": lengths > high,
        "the parts disagree": disagree,
    }
    out = {}
    for name, mask in masks.items():
        n = int(mask.sum())
        out[name] = {"n": n, **{k: (round(float(v[mask].mean()), 4) if n else None)
                                for k, v in right.items()}}
    return {"model": str(model_dir), "test": test_file or artifacts.TEST_FILE,
            "rows": len(texts),
            "rnn_weight": manifest["blend"]["rnn_weight"], "groups": out}


def _scores(model, texts: list[str]):
    """(RNN, n-gram, blend) probabilities (of the positive class, or of every class) and
    token counts, from the served model's parts."""
    import tensorflow as tf

    from rnncli.core.scoring import as_scores

    rnn, ngram, blend, lengths = [], [], [], []
    for i in range(0, len(texts), 256):
        batch = tf.constant(texts[i:i + 256])
        tokens = model.get_layer("vectorizer")(batch)
        ids = model.get_layer("truncate")(tokens)
        lengths.append(np.count_nonzero(tokens.numpy(), axis=1) - 1)  # less the start marker
        rnn.append(as_scores(model.get_layer("core")(ids).numpy()))
        ngram.append(as_scores(model.get_layer("ngram")(
            model.get_layer("ngram_vectorizer")(batch)).numpy()))
        blend.append(as_scores(model(batch).numpy()))
    return tuple(np.concatenate(x) for x in (rnn, ngram, blend, lengths))


if __name__ == "__main__":
    main()
