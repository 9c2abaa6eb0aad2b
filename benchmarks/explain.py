"""How long `rnncli explain` takes, and how faithful its contributions are, on a trained
model and its saved test split.

    python benchmarks/explain.py MODEL_DIR [--texts 200] [--words 100] [--k 5]

Prints: the time to explain one text of `--words` words and one as long as the model
reads (median and 95th percentile, ONNX engine, this machine), the cold start of
`rnncli explain` in a new process, and the deletion check the tests run, on real texts:
the mean fall of the predicted label's log-odds when a text's k highest-contribution
words are deleted, against k words at random (5 draws per text).
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from rnncli.inference.explain import explain_records, load_explainer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("--texts", type=int, default=200)
    parser.add_argument("--words", type=int, default=100)
    parser.add_argument("--k", type=int, default=5)
    args = parser.parse_args()
    with gzip.open(Path(args.model_dir) / "test.jsonl.gz", "rt", encoding="utf-8") as fh:
        texts = [json.loads(line)["text"] for line in fh][: args.texts]
    with load_explainer(args.model_dir) as predictor:
        engine = predictor.engine
        print(f"model {args.model_dir}: seq_len {engine.seq_len}, rnn weight "
              f"{engine.rnn_weight}, {len(texts)} test texts")
        cut = [" ".join(t.split()[: args.words]) for t in texts]
        report_times(predictor, [t for t in cut if len(t.split()) == args.words] or cut,
                     f"{args.words} words")
        report_times(predictor, texts, "whole test texts")
        faithfulness(predictor, cut, args.k)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rnncli", "explain", "-m", args.model_dir,
                    "-f", "json", cut[0]], check=True, capture_output=True)
    print(f"cold start, one text, new process: {time.perf_counter() - start:.2f} s")


def report_times(predictor, texts: list[str], what: str) -> None:
    explain_records(predictor, texts[:3])  # warm the threads
    seconds = []
    for text in texts:
        start = time.perf_counter()
        explain_records(predictor, [text])
        seconds.append(time.perf_counter() - start)
    ms = np.array(seconds) * 1000
    tokens = np.mean([len(predictor.engine.tokens(t)) - 1 for t in texts])
    print(f"{what} ({len(texts)} texts, {tokens:.0f} tokens on average): median "
          f"{np.median(ms):.0f} ms, p95 {np.percentile(ms, 95):.0f} ms, max {ms.max():.0f} ms")


def faithfulness(predictor, texts: list[str], k: int) -> None:
    rng = np.random.default_rng(0)
    names = predictor.label_names
    top, random = [], []
    for text in texts:
        record = explain_records(predictor, [text])[0]
        tokens = [t for t in record["tokens"] if t["start"] is not None]
        if record["label"] is None or len(tokens) <= k:
            continue
        target = names.index(record["label"])
        best = sorted(tokens, key=lambda t: -t["contribution"])[:k]
        draws = [[tokens[i] for i in rng.choice(len(tokens), k, replace=False)]
                 for _ in range(5)]
        variants = [text, without(text, best), *(without(text, d) for d in draws)]
        odds = log_odds(predictor.scores(variants), target)
        top.append(odds[0] - odds[1])
        random.append(np.mean(odds[0] - odds[2:]))
    top, random = np.array(top), np.array(random)
    print(f"deleting the {k} top words of {len(top)} texts: log-odds fall {top.mean():.2f} "
          f"on average, against {random.mean():.2f} for {k} random words; larger on "
          f"{np.mean(top > random):.0%} of the texts")


def without(text: str, tokens: list[dict]) -> str:
    for t in sorted(tokens, key=lambda t: -t["start"]):
        text = text[:t["start"]] + text[t["end"]:]
    return text


def log_odds(scores, target: int) -> np.ndarray:
    scores = np.clip(np.asarray(scores, np.float64), 1e-7, 1 - 1e-7)
    p = scores if scores.ndim == 1 else scores[:, target]
    odds = np.log(p) - np.log1p(-p)
    return odds if scores.ndim > 1 or target == 1 else -odds


if __name__ == "__main__":
    main()
