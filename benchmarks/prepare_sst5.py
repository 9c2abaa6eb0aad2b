"""Make five-class and three-class files from the fine-grained Stanford Sentiment Treebank.

    python benchmarks/prepare_sst5.py ../shared/data/sst5_train.tsv.gz OUTDIR

Source: SST's training sentences with their fine-grained labels (Socher et al., 2013), as
the "stsa.fine" distribution gives them: lower-cased, tokens split by spaces, columns
label (0 very negative, 1 negative, 2 neutral, 3 positive, 4 very positive) and sentence.
Unlike GLUE SST-2's training file (see prepare_sst2.py), it holds whole sentences only, no
parse-tree phrases: 8,544 rows, of which the few that lie inside longer ones are short
sentences of their own ("wow .", "see it ."). So no phrase can leak into a test split,
except through repeats: a handful of sentences appear twice (with the same label in this
copy), and only the first of each is kept, in file order (the count of repeats whose
label differs is printed).
Writes, with columns label and sentence:
- OUTDIR/sst5.tsv: the labels as they are, the numbers 0-4, so that rnncli's classes are
  in numeric order, 0 (very negative) to 4 (very positive);
- OUTDIR/sst3.tsv: 0-1 -> negative, 2 -> neutral, 3-4 -> positive (the usual three-class
  reduction), as words.
"""

from __future__ import annotations

import argparse
import csv
import gzip
from collections import Counter
from pathlib import Path

FINE = ("0", "1", "2", "3", "4")
THREE = {"0": "negative", "1": "negative", "2": "neutral", "3": "positive",
         "4": "positive"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source")
    parser.add_argument("outdir")
    args = parser.parse_args()
    with gzip.open(args.source, "rt", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    sentences: dict[str, str] = {}
    clashes = 0
    for row in rows:
        label, sentence = row["label"].strip(), row["sentence"].strip()
        if label not in FINE:
            raise SystemExit(f"{args.source}: unexpected label {label!r} for {sentence!r}")
        clashes += sentences.setdefault(sentence, label) != label
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    _write(out / "sst5.tsv", [(label, s) for s, label in sentences.items()])
    _write(out / "sst3.tsv", [(THREE[label], s) for s, label in sentences.items()])
    print(f"{len(rows)} rows, {len(sentences)} distinct sentences kept "
          f"({len(rows) - len(sentences)} repeats dropped, {clashes} with another label)")
    five = Counter(label for label in sentences.values())
    three = Counter(THREE[label] for label in sentences.values())
    print("sst5.tsv: " + ", ".join(f"{k} {five[k]}" for k in FINE))
    print("sst3.tsv: " + ", ".join(f"{k} {three[k]}" for k in sorted(three)))


def _write(path: Path, rows: list[tuple[str, str]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(["label", "sentence"])
        writer.writerows(rows)


if __name__ == "__main__":
    main()
