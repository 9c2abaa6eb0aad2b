"""What the plain reporter's progress line costs: seconds of one epoch of a tiny model
(many small batches, where a per-batch cost would show), with the reporter counting each
batch (now) and with the callback as it was before (no per-batch call), alternated in
one process. Synthetic token ids; no data file needed.

    PYTHONPATH=. python benchmarks/progress_cost.py --rows 20000 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    import numpy as np

    from rnncli.core.config import TrainConfig
    from rnncli.network import model as M
    from rnncli.network.runtime import set_seed
    from rnncli.render.output import PlainReporter
    from rnncli.training import fitloop

    config = TrainConfig(epochs=1, units=4, embed_dim=8, seq_len=32, max_tokens=2000,
                         batch_size=args.batch_size, classes=2, ngrams=False, bigram_dim=0)
    rng = np.random.default_rng(0)
    x = rng.integers(1, 2000, (args.rows, 32)).astype(np.int64)
    y = rng.integers(0, 2, args.rows)
    x_val, y_val = x[:500], y[:500]
    new_batch_end = fitloop.EpochProgress.on_train_batch_end

    def before(self, batch, logs=None):  # the callback before this change
        self.step += 1
        if self._reporter.wants_batches:
            self._reporter.batch_end(self.step, {k: float(v) for k, v in (logs or {}).items()})

    seconds = {"before": [], "after": []}
    for i in range(args.rounds * 2 + 1):
        variant = "before" if i % 2 else "after"
        fitloop.EpochProgress.on_train_batch_end = before if variant == "before" \
            else new_batch_end
        set_seed(0)
        core = M.build_core(config)
        history, _ = fitloop.fit(core, config, x, y, x_val, y_val, PlainReporter(quiet=True))
        if i:  # the first run builds the graphs
            seconds[variant].append(history[0]["seconds"])
    print(json.dumps({"rows": args.rows, "batch_size": args.batch_size,
                      "steps": -(-args.rows // args.batch_size),
                      **{f"{k}_median_s": round(statistics.median(v), 2)
                         for k, v in seconds.items()},
                      **{f"{k}_s": v for k, v in seconds.items()}}))


if __name__ == "__main__":
    main()
