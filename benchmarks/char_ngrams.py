"""Would character n-grams help with misspellings? A measurement, not a feature.

    python benchmarks/char_ngrams.py DATA [--seed 42]

On the split `rnncli train DATA --seed SEED` makes (two classes), fits rnncli's recurrent
network with its defaults, and two logistic regressions (scikit-learn) on the training
rows: word 1-2-gram TF-IDF, and the same plus character 2-5-grams within words
(`char_wb`, TF-IDF, the two blocks scaled to equal weight). Each chooses C on the
validation rows (lowest log loss) and is refit on training + validation rows; each is
blended with the network, the weight chosen on the validation rows (from the first fit's
scores) as rnncli chooses it. Prints one JSON line: the test accuracy of the network, of
each regression and of each blend. Needs scikit-learn.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

C_GRID = (1, 2, 4, 8, 16, 32, 64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    from rnncli.training.blend import accuracy, choose_blend

    train, val, test, rnn_val, rnn_test = _network(args.data, args.seed)
    out = {"data": Path(args.data).name, "seed": args.seed,
           "rnn": accuracy(test.labels, rnn_test)}
    for name, chars in (("words", False), ("words+chars", True)):
        c, first_val, served_test = _regression(train, val, test, chars)
        part = SimpleNamespace(ngrams=0, solver={}, val_scores=first_val,
                               test_scores=served_test)
        blend = choose_blend(part, val.labels, test.labels, rnn_val, rnn_test)
        out[name] = {"C": c, "lr": accuracy(test.labels, served_test),
                     "blend": accuracy(test.labels, blend.test_scores),
                     "rnn_weight": blend.rnn_weight}
    print(json.dumps(out))


def _network(path: str, seed: int):
    """(train, val, test, the network's validation and test scores), as rnncli trains it."""
    from rnncli.core.config import TrainConfig
    from rnncli.data.dataset import load_dataset, split_dataset
    from rnncli.network import counting
    from rnncli.network import model as M
    from rnncli.network.runtime import set_seed
    from rnncli.training import fitloop
    from rnncli.training.train import Reporter

    config = TrainConfig(seed=seed)
    data = load_dataset(path)
    train, val, test = split_dataset(data, val_split=config.val_split,
                                     test_split=config.test_split, seed=seed)
    config = config.replace(classes=len(data.label_names))
    set_seed(seed)
    derived = counting.derive_settings(config, train.texts)
    config = derived.config
    vectorizer = M.build_vectorizer(config, derived.vocab)
    x_train, x_val, x_test = (M.vectorize(vectorizer, part.texts, config.seq_len)
                              for part in (train, val, test))
    set_seed(seed)
    core = M.build_core(config)
    fitloop.fit(core, config, x_train, train.labels, x_val, val.labels, Reporter())
    return train, val, test, fitloop.scores(core, x_val), fitloop.scores(core, x_test)


def _clean(text: str) -> str:
    return re.sub(r"<[^<>]{0,200}>", " ", text.lower())


def _vectorizers(chars: bool) -> list:
    from sklearn.feature_extraction.text import TfidfVectorizer

    out = [TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True,
                           preprocessor=_clean)]
    if chars:
        out.append(TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2,
                                   sublinear_tf=True, preprocessor=_clean))
    return out


def _features(vectorizers: list, texts: list[str], fit: bool = False):
    import scipy.sparse as sp

    blocks = [v.fit_transform(texts) if fit else v.transform(texts) for v in vectorizers]
    return sp.hstack(blocks).tocsr() / np.sqrt(len(blocks))


def _regression(train, val, test, chars: bool):
    """(C, the first fit's validation scores, the refit's test scores)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    best = None
    for c in C_GRID:
        vectorizers = _vectorizers(chars)
        model = LogisticRegression(C=c, max_iter=3000).fit(
            _features(vectorizers, train.texts, fit=True), train.labels)
        scores = model.predict_proba(_features(vectorizers, val.texts))[:, 1]
        loss = log_loss(val.labels, scores, labels=[0, 1])
        if best is None or loss < best[0]:
            best = (loss, c, scores)
    _, c, first_val = best
    vectorizers = _vectorizers(chars)
    model = LogisticRegression(C=c, max_iter=3000).fit(
        _features(vectorizers, train.texts + val.texts, fit=True),
        np.concatenate([train.labels, val.labels]))
    return c, first_val, model.predict_proba(_features(vectorizers, test.texts))[:, 1]


if __name__ == "__main__":
    main()
