"""Speed benchmark: where people wait, each figure against a reference timed in the same run.

    python benchmarks/speed.py DATA -m MODEL_DIR [--texts N] [--epochs 2] [--repeat 5]

DATA is the labelled file MODEL_DIR was trained on (its split and settings are reused);
MODEL_DIR is a model from 'rnncli train DATA' with the installed command. Printed:
- help: 'rnncli --help' against 'python -c "import click, rich"' (median of --repeat runs);
- cold predict: 'rnncli predict -m MODEL "great movie"' with each engine (onnx, tf)
  against 'python -c "import tensorflow"' (median of --repeat runs);
- stream: N texts (the first N rows of DATA, one per line) piped through 'rnncli predict
  --format jsonl' (the default engine, then --engine tf), against one Python process that loads the model exported with 'rnncli
  export' and calls it on batches of 256 texts in input order; start-up included in both;
- training: seconds per recurrent-network epoch of the 'rnncli train' run that made
  MODEL_DIR (from its manifest; epoch 1 left out, it includes tracing) against a plain
  Keras script with the same network and settings on the same training rows, padded to
  the model's sequence length (its epochs after the first);
- peak memory (RSS) of every command.

Speed targets are ratios because these machines are noisy; run it on an otherwise idle
machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()

# Runs a command and records its wall time and peak RSS (RUSAGE_CHILDREN of this wrapper).
_WRAPPER = """
import resource, subprocess, sys, time
stdin = open(sys.argv[2], "rb") if sys.argv[2] != "-" else subprocess.DEVNULL
started = time.perf_counter()
proc = subprocess.run(sys.argv[3:], stdin=stdin, stdout=subprocess.DEVNULL,
                      stderr=subprocess.PIPE)
code = proc.returncode
if code:
    sys.stderr.write(proc.stderr.decode("utf-8", "replace")[-3000:])
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
open(sys.argv[1], "w").write(f"{seconds} {peak} {code}")
"""

# The in-process streaming reference: load the exported SavedModel, score batches of 256
# lines in input order, write one JSON line per input.
_STREAM_REFERENCE = """
import json, sys
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])  # keep it: .serve alone loses its variables
serve = loaded.serve
lines = [line.rstrip("\\n") for line in open(sys.argv[2], encoding="utf-8")]
out = open(sys.argv[3], "w", encoding="utf-8")
for i in range(0, len(lines), 256):
    batch = lines[i:i + 256]
    scores = serve(tf.constant(batch)).numpy().reshape(-1)
    for text, score in zip(batch, scores):
        out.write(json.dumps({"text": text, "score": round(float(score), 6)}) + "\\n")
"""


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_keras_reference":
        return _keras_reference(*sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data")
    parser.add_argument("-m", "--model", required=True)
    parser.add_argument("--texts", type=int, default=25000)
    parser.add_argument("--epochs", type=int, default=2, help="plain Keras epochs (>= 2)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip", default="", help="comma-separated: help,cold,stream,train")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    model = Path(args.model)
    manifest = json.loads((model / "rnncli.json").read_text())
    work = Path(tempfile.mkdtemp(prefix="rnncli-speed-"))
    rows = _Rows(manifest)

    if "help" not in skip:
        rows += _compare("help", ["rnncli", "--help"],
                         [sys.executable, "-c", "import click, rich"], args.repeat, 1.5)
    if "cold" not in skip:
        predict = ["rnncli", "predict", "-m", str(model), "great movie", "--engine"]
        rows += _compare("cold predict", predict + ["onnx"],
                         [sys.executable, "-c", "import tensorflow"], args.repeat, 0.3)
        rows += _compare("cold predict", predict + ["tf"], None, args.repeat, None)
    if "stream" not in skip:
        texts = work / "texts.txt"
        n = _write_texts(args.data, manifest, texts, args.texts)
        exported = work / "exported"
        subprocess.run(["rnncli", "export", "-m", str(model), "-o", str(exported)],
                       check=True, capture_output=True)
        predict = ["rnncli", "predict", "-m", str(model), "--format", "jsonl"]
        ours = _timed(predict, texts)
        ref = _timed([sys.executable, "-c", _STREAM_REFERENCE, str(exported), str(texts),
                      str(work / "reference.jsonl")])
        tf_engine = _timed(predict + ["--engine", "tf"], texts)
        rows.append(_row("stream: rnncli predict (default engine: onnx)", ours, n_texts=n))
        rows.append(_row("stream: in-process SavedModel, batches of 256", ref, n_texts=n))
        rows.append(_row("stream: rnncli predict --engine tf", tf_engine, n_texts=n))
        rows.append({"what": "stream ratio (default engine)", "ratio": round(ours[0] / ref[0], 2),
                     "target": "<= 1.1"})
        rows.append({"what": "stream ratio (--engine tf)",
                     "ratio": round(tf_engine[0] / ref[0], 2)})
    if "train" not in skip:
        history = manifest["training"]["history"]
        ours = [h["seconds"] for h in history[1:]] or [history[0]["seconds"]]
        ref = _keras_epochs(args.data, manifest, args.epochs, work)
        rows.append({"what": "train: rnncli s/epoch (epochs 2+, from the manifest)",
                     "seconds": round(statistics.median(ours), 1)})
        rows.append({"what": "train: plain Keras s/epoch (padded to seq_len)",
                     "seconds": round(statistics.median(ref), 1)})
        rows.append({"what": "train ratio", "ratio": round(statistics.median(ours)
                                                           / statistics.median(ref), 2),
                     "target": "<= 1.1"})


def _timed(command: list[str], stdin: Path | None = None) -> tuple[float, int]:
    with tempfile.NamedTemporaryFile(suffix=".time") as record:
        subprocess.run([sys.executable, "-c", _WRAPPER, record.name,
                        str(stdin) if stdin else "-", *command], check=True)
        seconds, peak, code = Path(record.name).read_text().split()
    if code != "0":
        sys.exit(f"{' '.join(command)} exited {code}")
    return float(seconds), int(peak) // 1024  # MB


_last_reference: dict[str, float] = {}


def _compare(name: str, ours: list[str], ref: list[str] | None, repeat: int,
             target: float | None):
    """Median times of ``ours`` and ``ref`` (None: the previous call's reference)."""
    ours_runs = [_timed(ours) for _ in range(repeat)]
    mine = statistics.median(s for s, _ in ours_runs)
    flags = " ".join(a for a in ours[2:] if a.startswith("--") or a in ("onnx", "tf"))
    rows = [{"what": f"{name}: {' '.join(ours[:2])} ... {flags}", "seconds": round(mine, 2),
             "peak_mb": max(p for _, p in ours_runs)}]
    if ref is not None:
        ref_runs = [_timed(ref) for _ in range(repeat)]
        _last_reference[name] = statistics.median(s for s, _ in ref_runs)
        rows.append({"what": f"{name} reference: {' '.join(ref[1:])}",
                     "seconds": round(_last_reference[name], 2),
                     "peak_mb": max(p for _, p in ref_runs)})
    rows.append({"what": f"{name} ratio ({flags or 'default'})",
                 "ratio": round(mine / _last_reference[name], 2),
                 "target": f"<= {target}" if target else ""})
    return rows


def _row(what: str, timed: tuple[float, int], n_texts: int) -> dict:
    seconds, peak = timed
    return {"what": what, "seconds": round(seconds, 1), "peak_mb": peak,
            "texts_per_s": round(n_texts / seconds)}


def _dataset(data: str, manifest: dict):
    sys.path.insert(0, str(HERE.parent.parent))
    from rnncli.data import load_dataset, split_dataset

    data_set = load_dataset(data, text_col=manifest["data"]["text_col"],
                            label_col=manifest["data"]["label_col"],
                            positive_label=manifest["labels"]["positive"])
    s = manifest["settings"]
    return data_set, split_dataset(data_set, val_split=s["val_split"],
                                   test_split=s["test_split"], seed=s["seed"])


def _write_texts(data: str, manifest: dict, path: Path, n: int) -> int:
    data_set, _ = _dataset(data, manifest)
    texts = [" ".join(t.split()) for t in data_set.texts[:n]]
    path.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    return len(texts)


def _keras_epochs(data: str, manifest: dict, epochs: int, work: Path) -> list[float]:
    _, (train, _, _) = _dataset(data, manifest)
    rows = work / "train.jsonl"
    with open(rows, "w", encoding="utf-8") as fh:
        for text, label in zip(train.texts, train.labels):
            fh.write(json.dumps({"text": text, "label": int(label)}) + "\n")
    out = subprocess.run([sys.executable, str(HERE), "_keras_reference", str(rows),
                          json.dumps(manifest["settings"]), str(max(2, epochs))],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])[1:]  # epochs after the first


def _keras_reference(rows_path: str, settings_json: str, epochs: str) -> None:
    """A plain Keras script: TextVectorization padded to seq_len, the same network."""
    import numpy as np
    import tensorflow as tf
    import keras

    s = json.loads(settings_json)
    rows = [json.loads(line) for line in open(rows_path, encoding="utf-8")]
    texts = [r["text"] for r in rows]
    labels = np.array([r["label"] for r in rows], np.float32)
    vectorize = keras.layers.TextVectorization(max_tokens=s["max_tokens"],
                                               output_sequence_length=s["seq_len"])
    vectorize.adapt(texts)
    ids = vectorize(tf.constant(texts)).numpy()
    cell = {"gru": keras.layers.GRU, "lstm": keras.layers.LSTM}[s["cell"]]
    inputs = keras.Input(shape=(s["seq_len"],), dtype="int64")
    x = keras.layers.Embedding(s["max_tokens"], s["embed_dim"], mask_zero=True)(inputs)
    x = keras.layers.SpatialDropout1D(s["dropout"])(x)
    for i in range(s["layers"]):
        x = keras.layers.Bidirectional(cell(s["units"], return_sequences=True))(x)
    x = keras.layers.GlobalMaxPooling1D()(x)
    x = keras.layers.Dropout(s["dropout"])(x)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    model.compile(optimizer=keras.optimizers.Adam(s["lr"], clipnorm=s["clipnorm"] or None),
                  loss="binary_crossentropy", metrics=["accuracy"])
    seconds = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.started)

    model.fit(ids, labels, batch_size=s["batch_size"], epochs=int(epochs), shuffle=True,
              callbacks=[Clock()], verbose=0)
    print(json.dumps(seconds))


class _Rows:
    """Prints each figure as soon as it is measured (a long run loses nothing)."""

    def __init__(self, manifest: dict):
        s = manifest["settings"]
        print(f"model: {s['cell']} x{s['layers']}, {s['units']} units, seq_len {s['seq_len']}, "
              f"vocab {s['max_tokens']}, n-grams {'on' if s.get('ngrams') else 'off'}; "
              f"trained on {manifest['training']['device']}")
        print(f"{'what':58s} {'seconds':>8s} {'peak MB':>8s} {'texts/s':>8s} {'ratio':>6s} "
              "target", flush=True)

    def append(self, r: dict) -> None:
        print(f"{r['what'][:58]:58s} {r.get('seconds', ''):>8} {r.get('peak_mb', ''):>8} "
              f"{r.get('texts_per_s', ''):>8} {r.get('ratio', ''):>6} {r.get('target', '')}",
              flush=True)

    def __iadd__(self, new: list[dict]):
        for r in new:
            self.append(r)
        return self


if __name__ == "__main__":
    main()
