"""Would averaging several recurrent networks help? A measurement, not a feature.

    python benchmarks/ensemble.py DATA [--seed 42] [--rnns 3]

Makes the split `rnncli train DATA --seed S` makes, fits the n-gram part as it does, then
fits RNNS recurrent networks on the same rows, the first from the seed training uses
(so it is the network `rnncli train` would give) and the others from other initial
weights. Prints, as one JSON line, each choice's test accuracy: the first network alone
and blended with the n-gram part (what `rnncli train` serves), and the average of all
the networks' probabilities, alone and blended (the weight chosen on validation rows,
as training chooses it). Nothing is tuned on the test rows. The cost is RNNS times the
recurrent network's training time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rnns", type=int, default=3)
    args = parser.parse_args()

    from rnncli.core.config import TrainConfig
    from rnncli.data.dataset import load_dataset, split_dataset
    from rnncli.network import counting
    from rnncli.network import model as M
    from rnncli.network.runtime import set_seed
    from rnncli.training import fitloop, ngrams
    from rnncli.training.blend import accuracy, choose_blend
    from rnncli.training.train import Reporter

    config = TrainConfig(seed=args.seed)
    data = load_dataset(args.data)
    train, val, test = split_dataset(data, val_split=config.val_split,
                                     test_split=config.test_split, seed=args.seed)
    config = config.replace(classes=len(data.label_names))
    set_seed(args.seed)
    derived = counting.derive_settings(config, train.texts)
    config = derived.config
    vectorizer = M.build_vectorizer(config, derived.vocab)
    x_train, x_val, x_test = (M.vectorize(vectorizer, part.texts, config.seq_len)
                              for part in (train, val, test))
    ngram = ngrams.fit_ngrams(config, train, val, test, Reporter())
    val_scores, test_scores = [], []
    started = time.perf_counter()
    for i in range(args.rnns):
        set_seed(args.seed if i == 0 else args.seed * 1000 + i)
        core = M.build_core(config)
        fitloop.fit(core, config, x_train, train.labels, x_val, val.labels, Reporter())
        val_scores.append(fitloop.scores(core, x_val))
        test_scores.append(fitloop.scores(core, x_test))
    out = {"data": Path(args.data).name, "seed": args.seed, "test_rows": len(test.texts),
           "rnn_seconds": round(time.perf_counter() - started)}
    for k in (1, args.rnns):
        v, t = np.mean(val_scores[:k], axis=0), np.mean(test_scores[:k], axis=0)
        out[f"rnn_x{k}"] = accuracy(test.labels, t)
        if ngram is not None:
            blend = choose_blend(ngram, val.labels, test.labels, v, t)
            out[f"blend_x{k}"] = accuracy(test.labels, blend.test_scores)
            out[f"rnn_weight_x{k}"] = blend.rnn_weight
    print(json.dumps(out))


if __name__ == "__main__":
    main()
