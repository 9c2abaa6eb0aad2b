"""Do the two predict engines agree? ONNX Runtime + Python tokenization against the
reference Keras model in TensorFlow, on every text of real files and on random Unicode.

    python benchmarks/parity.py -m MODEL_DIR FILE [FILE ...] [--limit N] [--random N] [--cjk N]

FILE: .csv/.tsv/.jsonl (a text column is detected) or .txt (one text per line), .gz ok.
Printed for each file: texts, largest |score difference|, texts over 1e-4, texts whose
standardized form differs, and each engine's in-process scoring time. ``--random N``
adds N random strings drawn from all of Unicode (tags, quotes, marks, sigma, NUL, ...);
``--cjk N`` N Chinese, Japanese and mixed ones (kana, kanji, full-width forms, CJK
punctuation, Latin words).
Exit 1 when any score differs by more than 1e-4.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

import numpy as np

TOLERANCE = 1e-4
_PIECES = ["<br />", "<b>", "'", "''", "‘", "’", "`", "ʼ", "!", "?", "Σ", "ς", "İ", "\x00",
           " ", "  ", "\t", "\u0085", "\u2028", "-", "...", "😀", "a", "The", "NOT", "1/10",
           # newer than some Python's Unicode tables, and case-ignorable marks
           "\u0890", "\u1ac1", "\u2c2f", "\ua7c0", "\u0301", "\u00ad", "ΑΣ"]


# Random codepoints: ranges over all planes (surrogates are skipped), and over Han, kana
# and full-width forms.
_ALL_PLANES = ((32, 0x2FF), (0x300, 0x2FFF), (0x3000, 0xFFFF), (0x10000, 0x10FFFF))
_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3041, 0x30FF), (0xFF01, 0xFF9F))
# Chinese and Japanese pieces: words of both (kana, kanji, the prolonged sound marks ー and
# half-width ｰ), full-width forms, CJK punctuation and Latin words as mixed text has them.
_CJK_PIECES = ["酒店", "很好", "不错", "服务", "房间太小", "下次还来", "サポート", "ラーメン",
               "ホテル", "とても", "良かった", "最悪", "です", "ｻｰﾋﾞｽ", "ー", "ｰ", "々",
               "ＡＢＣ", "１２３", "！", "？", "，", "。", "、", "「", "」", "『", "』", "《",
               "》", "（", "）", "…", "：", "；", "\u3000", " ", "iPhone", "WIFI", "bad",
               "ok", "so-so", "5星", "don't", "!", "?", "<br />", "Σ"]


def random_texts(n: int, seed: int = 0, *, pieces=_PIECES, ranges=_ALL_PLANES,
                 share: float = 0.4, most: int = 30) -> list[str]:
    """Strings of up to ``most`` parts, each one of ``pieces`` (with probability ``share``)
    or a random codepoint from ``ranges``. The defaults mix all planes with the pieces
    standardization treats specially; ``cjk_texts`` makes Chinese, Japanese and mixed
    text."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(0, most)):
            if rng.random() < share:
                parts.append(rng.choice(pieces))
            else:
                cp = rng.randint(*rng.choice(ranges))
                if not 0xD800 <= cp <= 0xDFFF:
                    parts.append(chr(cp))
        out.append("".join(parts))
    return out


def cjk_texts(n: int, seed: int = 0) -> list[str]:
    return random_texts(n, seed, pieces=_CJK_PIECES, ranges=_CJK_RANGES, share=0.6, most=40)


def compare(name: str, texts: list[str], onnx, keras, tf, standardize) -> bool:
    if not texts:
        print(f"{name:<34} {0:>7}  (no texts)")
        return True
    started = time.perf_counter()
    a = onnx.scores(texts)
    onnx_s = time.perf_counter() - started
    started = time.perf_counter()
    b = keras.scores(texts)
    tf_s = time.perf_counter() - started
    diff = np.abs(a.astype(np.float64) - b)
    reference = []
    for i in range(0, len(texts), 2048):
        reference += [t.decode("utf-8") for t in
                      standardize(tf.constant(texts[i:i + 2048])).numpy()]
    ours = [" ".join(onnx.tokens(t)) for t in texts]
    differ = sum(r.split() != o.split() for r, o in zip(reference, ours))
    print(f"{name:<34} {len(texts):>7} {diff.max():>10.2e} {int((diff > TOLERANCE).sum()):>7} "
          f"{differ:>9} {onnx_s:>8.1f} {tf_s:>8.1f}", flush=True)
    return bool(diff.max() <= TOLERANCE)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*")
    parser.add_argument("-m", "--model", required=True)
    parser.add_argument("--limit", type=int, default=None, help="first N texts of each file")
    parser.add_argument("--random", type=int, default=0, help="also N random strings")
    parser.add_argument("--cjk", type=int, default=0,
                        help="also N Chinese, Japanese and mixed strings")
    args = parser.parse_args()

    from rnncli.data.dataset import read_texts
    from rnncli.inference.predict import Predictor

    onnx = Predictor.load(args.model, engine="onnx").engine
    keras = Predictor.load(args.model, engine="tf", device="cpu").engine
    import tensorflow as tf

    from rnncli.modeldir.artifacts import model_config, read_manifest
    from rnncli.network.model import STANDARDIZERS

    standardize = STANDARDIZERS[model_config(read_manifest(args.model)).tokenizer]

    print(f"{'texts from':<34} {'n':>7} {'max diff':>10} {'> 1e-4':>7} {'tokens≠':>9} "
          f"{'onnx s':>8} {'tf s':>8}")
    ok = True
    for path in args.files:
        if path.endswith((".txt", ".txt.gz")):
            import gzip
            opener = gzip.open if path.endswith(".gz") else open
            with opener(path, "rt", encoding="utf-8") as fh:
                texts = [line.rstrip("\n") for line in fh if line.strip()]
        else:
            texts, _ = read_texts(path)
        ok &= compare(path.split("/")[-1], texts[: args.limit], onnx, keras, tf, standardize)
    if args.random:
        ok &= compare("random Unicode (seed 0)", random_texts(args.random), onnx, keras, tf,
                      standardize)
    if args.cjk:
        ok &= compare("Chinese/Japanese/mixed (seed 0)", cjk_texts(args.cjk), onnx, keras, tf,
                      standardize)
    print("engines agree within 1e-4" if ok else "ENGINES DISAGREE (over 1e-4)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
