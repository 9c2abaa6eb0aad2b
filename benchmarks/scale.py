"""Training at scale: peak memory and time against the number of rows.

    python benchmarks/scale.py SOURCE --rows 100000 --rows 1000000 [--short] [--epochs 1]
                               [--whole-up-to ROWS] [--rnncli PATH] [--keep DIR]

SOURCE is any labelled file rnncli reads (the IMDB training file, say). Synthetic rows are
made from its sentences, recombined within a label: each row takes the label and the
sentence count of a random source row, and that many sentences drawn from the rows of the
same label (``--short``: one or two sentences a row). So the vocabulary, lengths and label
balance stay those of the source while the row count grows; the rows are not meant to be
learned well, only to cost what real ones cost.

For each size, ``rnncli train`` runs with defaults (and ``--epochs``) in a process of its
own; the table gives its peak resident memory (the kernel's maxrss of that process),
the wall time, the seconds of the recurrent network's first epoch (from the manifest's
history), and the ratios against the smallest size. ``--rnncli`` picks the rnncli to run
(the console script of another virtual environment: today's code beside a change).
Sizes up to ``--whole-up-to`` rows (default 100,000) are also trained with
``--no-stream`` (the file read whole, as rnncli did before it streamed large files), in
the same run; "mode" says which.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SENTENCE = re.compile(r"(?<=[.!?。！？])\s+|<br\s*/?>\s*(?:<br\s*/?>\s*)*")


def sentences_by_label(source: Path) -> tuple[dict[str, list[str]], list[tuple[str, int]]]:
    """Each label's sentences, and (label, sentence count) of every source row."""
    from rnncli.data.dataset import load_dataset

    data = load_dataset(source)
    pools: dict[str, list[str]] = {}
    shapes = []
    for text, label in zip(data.texts, data.labels):
        name = data.label_names[int(label)]
        parts = [s.strip() for s in SENTENCE.split(text) if s.strip()]
        pools.setdefault(name, []).extend(parts)
        shapes.append((name, max(1, len(parts))))
    return pools, shapes


def write_rows(path: Path, rows: int, pools, shapes, *, short: bool, seed: int = 0) -> float:
    """``rows`` synthetic rows as CSV (review, sentiment); returns the mean words a row."""
    rng = random.Random(seed)
    words = 0
    with path.open("w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["review", "sentiment"])
        for _ in range(rows):
            label, count = rng.choice(shapes)
            count = rng.randint(1, 2) if short else count
            pool = pools[label]
            text = " ".join(pool[rng.randrange(len(pool))] for _ in range(count))
            words += text.count(" ") + 1
            out.writerow([text, label])
    return words / max(1, rows)


def train(rnncli: str, data: Path, out: Path, epochs: int, *extra: str) -> dict:
    """One ``rnncli train`` in a process of its own: peak RSS (MB), seconds, epoch seconds."""
    started = time.perf_counter()
    proc = subprocess.Popen([rnncli, "train", str(data), "-o", str(out), "--epochs",
                             str(epochs), "--quiet", *extra], stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    stderr = proc.stderr.read().decode(errors="replace")
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"rnncli train failed ({proc.returncode}): {stderr[-2000:]}")
    manifest = json.loads((out / "rnncli.json").read_text(encoding="utf-8"))
    history = manifest["training"]["history"]
    return {"peak_mb": usage.ru_maxrss / 1024, "seconds": seconds,
            "epoch_seconds": history[0]["seconds"] if history else float("nan"),
            "test_accuracy": manifest["test"]["accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source")
    parser.add_argument("--rows", type=int, action="append", required=True)
    parser.add_argument("--short", action="store_true", help="one or two sentences a row")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rnncli", default=str(Path(sys.executable).parent / "rnncli"))
    parser.add_argument("--keep", help="write the synthetic files and models here")
    parser.add_argument("--whole-up-to", type=int, default=100_000,
                        help="also train sizes up to this many rows with --no-stream")
    args = parser.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="rnncli-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    pools, shapes = sentences_by_label(Path(args.source))
    print(f"source: {args.source}: {len(shapes)} rows, "
          f"{sum(len(p) for p in pools.values())} sentences; rnncli: {args.rnncli}; "
          f"{os.cpu_count()} CPUs", flush=True)
    print(f"{'rows':>10} {'mode':>7} {'words/row':>9} {'peak MB':>8} {'seconds':>8} "
          f"{'epoch s':>8} {'test acc':>8} {'mem x':>6} {'epoch x':>7}", flush=True)
    first = {}
    for rows in sorted(args.rows):
        data = work / f"rows{rows}{'-short' if args.short else ''}.csv"
        words = write_rows(data, rows, pools, shapes, short=args.short)
        modes = [("default", ())] + ([("whole", ("--no-stream",))]
                                     if rows <= args.whole_up_to else [])
        for mode, extra in modes:
            got = train(args.rnncli, data, work / f"model{rows}-{mode}", args.epochs, *extra)
            base = first.setdefault(mode, got)
            print(f"{rows:>10} {mode:>7} {words:>9.0f} {got['peak_mb']:>8.0f} "
                  f"{got['seconds']:>8.0f} {got['epoch_seconds']:>8.1f} "
                  f"{got['test_accuracy']:>8.4f} {got['peak_mb'] / base['peak_mb']:>6.2f} "
                  f"{got['epoch_seconds'] / base['epoch_seconds']:>7.2f}", flush=True)
        if not args.keep:
            data.unlink()


if __name__ == "__main__":
    main()
