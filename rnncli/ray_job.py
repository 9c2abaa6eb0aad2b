"""Scoring a corpus too large for one machine on Ray Data (docs/distributed.md).

``score(dataset, model_dir)`` adds predict's fields to every row of a Ray dataset:
``label``, ``score`` (the label's probability), ``status`` and ``score_<class>`` for each
class, as ``rnncli predict --format csv`` names them. ``python -m rnncli.ray_job INPUT
OUTPUT -m MODEL`` reads CSV, JSON lines or Parquet files, scores them and writes Parquet,
JSON lines or CSV.

The model directory travels with the job: its four scoring files (a few MB) are read and
checked once, on the driver, and each of Ray's actors writes them to a temporary directory
of its own, checks their hashes and loads the model once (``rnncli.load``, the ONNX
engine). Workers need rnncli's plain install and Ray, not the model's path.
Needs ``pip install 'rnncli[ray]'``; ``ray`` is imported only when a job runs.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from rnncli.api import Model
from rnncli.core import jsontext
from rnncli.core.errors import EXIT_UNEXPECTED, ModelError, RnnCliError, UsageError, first_line
from rnncli.core.extras import require
from rnncli.core.terminal import visible
from rnncli.inference.predict import check_files
from rnncli.modeldir import artifacts

# What scoring reads; the held-out test split (test.jsonl.gz) stays behind
SCORING_FILES = (artifacts.MANIFEST, artifacts.MODEL_FILE, artifacts.ONNX_FILE,
                 artifacts.SERVING_FILE)
READERS = {".csv": "read_csv", ".jsonl": "read_json", ".json": "read_json",
           ".parquet": "read_parquet"}
WRITERS = {"parquet": "write_parquet", "jsonl": "write_json", "csv": "write_csv"}


def model_files(model_dir: str | Path) -> dict[str, bytes]:
    """The files a worker needs to score, checked here (hashes, archive, the ONNX engine's
    files) so that a broken model fails before any work is sent out."""
    model_dir = Path(model_dir)
    manifest = artifacts.read_manifest(model_dir)
    if not all(name in manifest["files"] for name in SCORING_FILES[2:]):
        raise ModelError(f"{model_dir}: has no ONNX files (it was trained by an older rnncli, "
                         "or their export failed), which the Ray job scores with; retrain it")
    check_files(model_dir, manifest, engine="onnx", device="cpu")
    return {name: (model_dir / name).read_bytes() for name in SCORING_FILES}


def output_columns(labels: tuple[str, ...], prefix: str = "") -> list[str]:
    """The columns :func:`score` adds, in order."""
    return [prefix + name for name in ("label", "score", "status",
                                       *(f"score_{label}" for label in labels))]


class Scorer:
    """Ray Data's callable class: one loaded model per actor, one call per batch (a dict
    of NumPy columns, ``batch_format="numpy"``)."""

    def __init__(self, files: dict[str, bytes], text_column: str = "text", prefix: str = ""):
        # The files are written, checked and loaded, then removed: the ONNX engine holds
        # what it needs in memory, and an actor Ray stops runs no clean-up of its own.
        folder = tempfile.mkdtemp(prefix="rnncli-model-")
        try:
            for name, data in files.items():
                Path(folder, name).write_bytes(data)
            # one thread: Ray gives each actor one CPU
            self.model = Model(folder, engine="onnx", workers=1)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        self.text_column, self.prefix = text_column, prefix

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.text_column not in batch:
            raise UsageError(f"no column {self.text_column!r} in the data (it has "
                             f"{', '.join(batch)}); name the texts' column with text_column "
                             "(--text-column)")
        records = self.model.predict([_text(value) for value in batch[self.text_column]])
        names = output_columns(self.model.labels, self.prefix)
        out = dict(batch)
        out[names[0]] = np.array([r["label"] for r in records], dtype=object)
        out[names[1]] = _probabilities(r["score"] for r in records)
        out[names[2]] = np.array([r["status"] for r in records], dtype=object)
        for name, label in zip(names[3:], self.model.labels):
            out[name] = _probabilities((r["scores"] or {}).get(label) for r in records)
        return out

def _text(value: Any) -> str | bytes:
    """A cell as predict's input: a missing value (None, NaN) is a blank text ("empty")."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value if isinstance(value, (str, bytes)) else str(value)


def _probabilities(values) -> np.ndarray:
    # NaN where a text has no score (status "empty")
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def score(dataset, model_dir: str | Path, *, text_column: str = "text", prefix: str = "",
          batch_size: int = 256, actors: int | tuple[int, int] | None = None):
    """``dataset`` (a ``ray.data.Dataset``) with predict's fields added to every row.

    ``actors``: Ray actors scoring at once, each with its own copy of the model and one
    CPU: a number, or (least, most) for a pool that grows with the work; by default 1 to
    the cluster's CPUs less one, which stays for reading and writing (a pool that takes
    every CPU starves them, and the job waits forever). ``prefix`` goes before the added
    columns' names, for data that already has a ``label`` or ``score`` column.
    """
    import ray

    files = model_files(model_dir)
    # the labels of the manifest that was checked and is shipped, not of a second read
    labels = artifacts.label_names(jsontext.loads(files[artifacts.MANIFEST]))
    added = output_columns(labels, prefix)
    columns = dataset.columns()
    if text_column not in columns:
        raise UsageError(f"no column {text_column!r} in the data (it has "
                         f"{', '.join(columns)}); name the texts' column with --text-column")
    taken = sorted(set(added) & set(columns))
    if taken:
        raise UsageError(f"the data already has column(s) {', '.join(taken)}; give a prefix "
                         "for the scores' columns (--prefix pred_)")
    if actors is None:
        cpus = int(ray.cluster_resources().get("CPU", 0))
        if cpus < 2:
            raise UsageError(f"Ray has {cpus} CPU(s): the actors need one and reading and "
                             "writing another; start it with more (--num-cpus 2)")
        actors = (1, cpus - 1)
    least, most = (actors, actors) if isinstance(actors, int) else actors
    return dataset.map_batches(
        Scorer, fn_constructor_kwargs={"files": files, "text_column": text_column,
                                       "prefix": prefix},
        batch_size=batch_size, batch_format="numpy", num_cpus=1,
        compute=ray.data.ActorPoolStrategy(min_size=least, max_size=most))


def read(ray_data, paths: list[str]):
    """A dataset of CSV, JSON-lines or Parquet files (one kind, by suffix)."""
    kinds = {Path(p).suffix.lower() for p in paths}
    if len(kinds) != 1 or next(iter(kinds)) not in READERS:
        raise UsageError(f"input files end in {', '.join(sorted(kinds)) or 'nothing'}; give "
                         "files of one kind: .csv, .jsonl (JSON lines) or .parquet")
    return getattr(ray_data, READERS[kinds.pop()])(paths)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def _check_inputs(paths: list[str]) -> None:
    """Local inputs must exist (Ray's own error is a long traceback); URLs are Ray's."""
    missing = [p for p in paths if "://" not in p and not Path(p).exists()]
    if missing:
        raise UsageError(f"no such input file: {missing[0]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rnncli.ray_job",
        description="Score files on Ray Data: predict's fields added to every row.")
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help=".csv, .jsonl or .parquet files (local paths, or any URL Ray "
                             "reads, such as s3://)")
    parser.add_argument("output", metavar="OUTPUT", help="directory Ray writes the files into")
    parser.add_argument("-m", "--model", required=True, help="the model directory")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--prefix", default="", help="before the added columns' names")
    parser.add_argument("--format", choices=sorted(WRITERS), default="parquet")
    parser.add_argument("--actors", type=positive_int, default=None,
                        help="actors scoring at once, one CPU each [default: 1 to the "
                             "cluster's CPUs less one, as the work needs]")
    parser.add_argument("--num-cpus", type=positive_int, default=None,
                        help="CPUs of the Ray started here when there is no --address "
                             "[default: this machine's]")
    parser.add_argument("--batch-size", type=positive_int, default=256)
    parser.add_argument("--address", default=None,
                        help="a Ray cluster [default: RAY_ADDRESS, else a local Ray]")
    args = parser.parse_args(argv)
    try:
        _check_inputs(args.inputs)
        require("ray")
        import ray

        local = not (args.address or os.environ.get("RAY_ADDRESS"))
        ray.init(address=args.address, num_cpus=args.num_cpus if local else None,
                 include_dashboard=False, log_to_driver=False)
        dataset = read(ray.data, args.inputs)
        scored = score(dataset, args.model, text_column=args.text_column,
                       prefix=args.prefix, batch_size=args.batch_size,
                       actors=args.actors)
        getattr(scored, WRITERS[args.format])(args.output)
    except RnnCliError as exc:
        print(f"Error: {visible(str(exc), lines=True)}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001  (Ray's own failures: reading, a lost worker)
        if os.environ.get("RNNCLI_DEBUG"):
            raise
        print(f"Error: the Ray job failed: {visible(first_line(exc, with_type=True))} (set "
              "RNNCLI_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_UNEXPECTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
