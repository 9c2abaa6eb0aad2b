"""Speed benchmark: where people wait, each figure against a reference timed in the same run.

    python benchmarks/speed.py DATA -m MODEL_DIR [--texts N] [--epochs 2] [--repeat 7]
    python benchmarks/speed.py --fresh [--keep DIR] [--sample] [DATA -m MODEL_DIR] ...
    python benchmarks/speed.py --venv DIR ...

Which rnncli is measured: by default the one on PATH, with this interpreter for the
references. ``--fresh`` clones this checkout's last commit (uncommitted changes are not
measured) and builds a new virtual environment from the clone exactly as the README's
first command does (``python -m venv``, then ``pip install '.[train]'``, so pip picks today's
release of every dependency), then measures the rnncli in it, with its own Python for the
references; ``--keep DIR`` builds it in DIR, for ``--venv DIR`` to reuse later. The
versions of the packages that decide these figures are printed first: a development
environment with older releases hides a newer dependency's cost (issue 10: ml_dtypes 0.7
made a cold predict 4x slower on a fresh install only).

DATA is the labelled file MODEL_DIR was trained on (its split and settings are reused);
``--sample`` instead trains on sample_data/imdb_sample.csv.gz with the README's command,
times it, and uses that file and model. Printed:
- install: seconds of ``pip install '.[train]'`` (with --fresh);
- sample: seconds and test accuracy of ``rnncli train sample_data/imdb_sample.csv.gz
  --cell gru`` (with --sample);
- help: ``rnncli --help`` against ``python -c "import click, rich"``;
- cold predict: ``rnncli predict -m MODEL "great movie"`` (the default engine, then
  --engine tf) against ``python -c "import tensorflow"``;
  (help and cold predict: medians of --repeat runs, ours and the reference in turns,
  after one discarded run of each)
- stream: N texts (the first N rows of DATA, one per line) piped through ``rnncli predict
  --format jsonl`` (the default engine, then --engine tf), against one Python process
  that loads the model exported with ``rnncli export`` and calls it on batches of 256
  texts in input order; start-up included in both;
- training: seconds per recurrent-network epoch of the ``rnncli train`` run that made
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


ROOT = HERE.parent.parent
SAMPLE = ROOT / "sample_data" / "imdb_sample.csv.gz"
# What decides the figures: the interpreter, what predict imports, what training runs on.
PACKAGES = ("tensorflow", "keras", "numpy", "onnxruntime", "onnx", "ml_dtypes", "tf2onnx",
            "protobuf", "click", "rich", "h5py", "pandas")
_VERSIONS = f"""
import importlib.metadata as m, platform
print("python", platform.python_version())
for name in {PACKAGES!r}:
    try:
        print(name, m.version(name))
    except m.PackageNotFoundError:
        print(name, "-")
"""


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_keras_reference":
        return _keras_reference(*sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "_rows":
        return _rows(*sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="?")
    parser.add_argument("-m", "--model")
    parser.add_argument("--fresh", action="store_true",
                        help="install a clone of this checkout into a new virtual environment")
    parser.add_argument("--keep", metavar="DIR",
                        help="with --fresh: build the environment in DIR (else a temporary one)")
    parser.add_argument("--venv", help="measure the rnncli of this virtual environment")
    parser.add_argument("--sample", action="store_true",
                        help="train on the bundled sample (timed) and measure that model")
    parser.add_argument("--texts", type=int, default=25000)
    parser.add_argument("--epochs", type=int, default=2, help="plain Keras epochs (>= 2)")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--skip", default="", help="comma-separated: help,cold,stream,train")
    args = parser.parse_args()
    if args.sample == bool(args.data or args.model) or bool(args.data) != bool(args.model):
        parser.error("give DATA and -m MODEL, or --sample")
    if args.fresh and args.venv:
        parser.error("--fresh builds a virtual environment, --venv reuses one: pick one")
    if args.keep and not args.fresh:
        parser.error("--keep goes with --fresh")
    skip = set(filter(None, args.skip.split(",")))
    work = Path(tempfile.mkdtemp(prefix="rnncli-speed-"))
    rows = _Rows()

    env = _Env(Path(args.venv) if args.venv else None)
    if args.fresh:
        env, seconds, commit = _Env.build(Path(args.keep) if args.keep else work / "venv",
                                          work / "clone")
        rows.note([f"install: pip install '.[train]' of commit {commit} into {env.root}: "
                   f"{seconds:.0f} s"])
    rows.note(env.versions())
    if args.sample:
        data, model = SAMPLE, work / "sample-model"
        seconds, _ = _timed(env.command("rnncli", "train", str(SAMPLE), "--cell", "gru",
                                        "-o", str(model), "--quiet"))
        test = json.loads((model / "rnncli.json").read_text())["test"]
        rows.note([f"sample: rnncli train sample_data/imdb_sample.csv.gz --cell gru: "
                   f"{seconds:.0f} s, test accuracy {test['accuracy']:.4f} (n={test['n']})"])
    else:
        data, model = Path(args.data), Path(args.model)
    manifest = json.loads((model / "rnncli.json").read_text())
    rows.note([_describe(manifest)])
    rows.header()

    if "help" not in skip:
        rows += _compare("help", env.command("rnncli", "--help"),
                         [env.python, "-c", "import click, rich"], args.repeat, 1.2)
    if "cold" not in skip:
        predict = env.command("rnncli", "predict", "-m", str(model), "great movie")
        rows += _compare("cold predict", predict, [env.python, "-c", "import tensorflow"],
                         args.repeat, 0.15)
        rows += _compare("cold predict", predict + ["--engine", "tf"], None, args.repeat, None)
    if "stream" not in skip:
        texts = work / "texts.txt"
        n = int(_run([env.python, str(HERE), "_rows", "texts", str(data), str(model),
                      str(texts), str(args.texts)]))
        exported = work / "exported"
        subprocess.run(env.command("rnncli", "export", "-m", str(model), "-o", str(exported)),
                       check=True, capture_output=True)
        predict = env.command("rnncli", "predict", "-m", str(model), "--format", "jsonl")
        ours = _timed(predict, texts)
        ref = _timed([env.python, "-c", _STREAM_REFERENCE, str(exported), str(texts),
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
        ref = _keras_epochs(env, data, model, args.epochs, work)
        rows.append({"what": "train: rnncli s/epoch (epochs 2+, from the manifest)",
                     "seconds": round(statistics.median(ours), 1)})
        rows.append({"what": "train: plain Keras s/epoch (padded to seq_len)",
                     "seconds": round(statistics.median(ref), 1)})
        rows.append({"what": "train ratio", "ratio": round(statistics.median(ours)
                                                           / statistics.median(ref), 2),
                     "target": "<= 1.1"})


class _Env:
    """The rnncli and the Python being measured: a virtual environment, or PATH and this
    interpreter."""

    def __init__(self, root: Path | None):
        self.root = root
        self.python = str(root / "bin" / "python") if root else sys.executable

    @classmethod
    def build(cls, root: Path, clone: Path) -> tuple[_Env, float, str]:
        """The README's install, timed: a fresh clone of this checkout's last commit, a new
        venv, then ``pip install '.[train]'`` of the clone."""
        if root.exists():
            sys.exit(f"{root}: exists; --fresh builds a new environment (--venv reuses one)")
        try:
            commit = _run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
            if _run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"]):
                print(f"note: uncommitted changes in {ROOT} are not measured", file=sys.stderr)
            _run(["git", "clone", "--quiet", str(ROOT), str(clone)])
        except (OSError, subprocess.CalledProcessError) as exc:
            sys.exit(f"--fresh installs a clone of this checkout and needs git and a git "
                     f"checkout: {exc}")
        subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
        env = cls(root)
        started = time.perf_counter()
        subprocess.run([env.python, "-m", "pip", "install", "--quiet", f"{clone}[train]"],
                       check=True)
        return env, time.perf_counter() - started, commit

    def command(self, name: str, *args: str) -> list[str]:
        return [str(self.root / "bin" / name) if self.root else name, *args]

    def versions(self) -> list[str]:
        lines = _run([self.python, "-c", _VERSIONS]).splitlines()
        where = f"{self.root}" if self.root else "rnncli on PATH, " + sys.executable
        return [f"measured: {where}", "versions: " + ", ".join(lines)]


def _run(command: list[str]) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


def _describe(manifest: dict) -> str:
    s = manifest["settings"]
    return (f"model: {s['cell']} x{s['layers']}, {s['units']} units, seq_len {s['seq_len']}, "
            f"vocab {s['max_tokens']}, n-grams {'on' if s.get('ngrams') else 'off'}; "
            f"trained on {manifest['training']['device']}")


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
    """Median times of ``ours`` and ``ref`` (None: the previous call's reference), run in
    turns after one discarded run of each, so both see the same machine."""
    commands = [ours] + ([ref] if ref is not None else [])
    for command in commands:
        _timed(command)  # page cache and .pyc files, for both alike
    runs: list[list[tuple[float, int]]] = [[] for _ in commands]
    for _ in range(repeat):
        for got, command in zip(runs, commands):
            got.append(_timed(command))
    mine = statistics.median(s for s, _ in runs[0])
    flags = " ".join(a for a in ours[2:] if a.startswith("--") or a in ("onnx", "tf"))
    shown = " ".join([Path(ours[0]).name, ours[1]])
    rows = [{"what": f"{name}: {shown} ... {flags}", "seconds": round(mine, 2),
             "peak_mb": max(p for _, p in runs[0])}]
    if ref is not None:
        _last_reference[name] = statistics.median(s for s, _ in runs[1])
        rows.append({"what": f"{name} reference: python {' '.join(ref[1:])}",
                     "seconds": round(_last_reference[name], 2),
                     "peak_mb": max(p for _, p in runs[1])})
    rows.append({"what": f"{name} ratio ({flags or 'default'})",
                 "ratio": round(mine / _last_reference[name], 2),
                 "target": f"<= {target}" if target else ""})
    return rows


def _row(what: str, timed: tuple[float, int], n_texts: int) -> dict:
    seconds, peak = timed
    return {"what": what, "seconds": round(seconds, 1), "peak_mb": peak,
            "texts_per_s": round(n_texts / seconds)}


def _rows(what: str, data: str, model: str, out: str, n: str = "0") -> None:
    """Run by the measured Python (``speed.py _rows``): write the first N texts of DATA, one
    per line ("texts"), or the model's training rows as JSON lines ("train")."""
    from rnncli.data.dataset import load_dataset, split_dataset

    manifest = json.loads((Path(model) / "rnncli.json").read_text())
    data_set = load_dataset(data, text_col=manifest["data"]["text_col"],
                            label_col=manifest["data"]["label_col"],
                            positive_label=manifest["labels"]["positive"])
    with open(out, "w", encoding="utf-8") as fh:
        if what == "texts":
            texts = [" ".join(t.split()) for t in data_set.texts[:int(n)]]
            fh.write("".join(t + "\n" for t in texts))
            print(len(texts))
            return
        s = manifest["settings"]
        train, _, _ = split_dataset(data_set, val_split=s["val_split"],
                                    test_split=s["test_split"], seed=s["seed"])
        for text, label in zip(train.texts, train.labels):
            fh.write(json.dumps({"text": text, "label": int(label)}) + "\n")


def _keras_epochs(env: _Env, data: Path, model: Path, epochs: int, work: Path) -> list[float]:
    rows = work / "train.jsonl"
    _run([env.python, str(HERE), "_rows", "train", str(data), str(model), str(rows)])
    settings = json.loads((model / "rnncli.json").read_text())["settings"]
    out = _run([env.python, str(HERE), "_keras_reference", str(rows), json.dumps(settings),
                str(max(2, epochs))])
    return json.loads(out.splitlines()[-1])[1:]  # epochs after the first


def _keras_reference(rows_path: str, settings_json: str, epochs: str) -> None:
    """A plain Keras script: TextVectorization padded to seq_len, the same network."""
    import keras
    import numpy as np
    import tensorflow as tf

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
    for _ in range(s["layers"]):
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

    def note(self, lines: list[str]) -> None:
        for line in lines:
            print(line, flush=True)

    def header(self) -> None:
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
