"""Make a leak-free sentence-level test split from GLUE SST-2 *train*.

    python benchmarks/prepare_sst2.py ../shared/data/sst2_train.tsv.gz OUTDIR [--n 1000]

SST-2's training file holds every phrase of every parse tree, so a random split puts
sub-phrases of a test sentence (with their labels) in the training rows. The official dev
set is whole sentences from other reviews. To imitate it, this holds out N whole
sentences (phrases of 8+ tokens ending in '.', '!' or '?', chosen with a fixed seed) and
drops from training every phrase of 4+ tokens that is part of a held-out sentence, and
every phrase that contains one. Phrases of 1-3 tokens stay: they are mostly words and
short expressions that other sentences' trees hold too.
Writes OUTDIR/train.tsv and OUTDIR/test.tsv (columns label, sentence).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import random
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source")
    parser.add_argument("outdir")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    with gzip.open(args.source, "rt", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    phrases = {}
    for row in rows:
        phrases.setdefault(row["sentence"].strip(), row["label"])
    sentences = [p for p in phrases if len(p.split()) >= 8 and p.endswith((" .", " !", " ?"))]
    held = set(random.Random(args.seed).sample(sorted(sentences), args.n))
    joined = "\n".join(f" {h} " for h in held)
    shortest = min(len(h) for h in held)
    train = []
    for phrase, label in phrases.items():
        if phrase in held or (len(phrase.split()) >= 4 and f" {phrase} " in joined):
            continue  # a held-out sentence, or a part of one (token boundaries)
        if len(phrase) >= shortest and any(h in phrase for h in held):
            continue  # contains a held-out sentence
        train.append((label, phrase))
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in (("train", train), ("test", [(phrases[h], h) for h in sorted(held)])):
        with open(out / f"{name}.tsv", "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
            writer.writerow(["label", "sentence"])
            writer.writerows(data)
    print(f"{len(phrases)} distinct phrases; held out {len(held)} sentences; "
          f"{len(train)} training phrases kept ({len(phrases) - len(held) - len(train)} dropped "
          "as parts of held-out sentences)")


if __name__ == "__main__":
    main()
