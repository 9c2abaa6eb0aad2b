"""Training on a streamed file (data/spool.py, training/streamed.py): memory that does not
grow with the rows. Tiny files with --stream stand in for millions of rows."""

from __future__ import annotations

import gzip
import json
import re

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY, sample_rows, write_csv

from rnncli.cli.main import cli
from rnncli.core.config import TrainConfig
from rnncli.data import spool
from rnncli.data.stream import open_labelled


def invoke(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


@pytest.fixture(scope="module")
def sorted_csv(tmp_path_factory):
    """300 reviews sorted by label (all negatives first), one with a line break."""
    rows = sorted(sample_rows(300), key=lambda r: r[1])
    rows[5][0] = "first line\nsecond line, " + rows[5][0]
    return write_csv(tmp_path_factory.mktemp("stream") / "sorted.csv", rows)


@pytest.fixture(scope="module")
def streamed_model(tmp_path_factory, sorted_csv):
    out = tmp_path_factory.mktemp("models") / "streamed"
    result = invoke("train", sorted_csv, "-o", out, *TINY, "--stream")
    assert result.exit_code == 0, result.output + str(result.exception)
    return out


def test_a_streamed_model_is_a_model(streamed_model, sorted_csv):
    manifest = json.loads((streamed_model / "rnncli.json").read_text())
    data = manifest["data"]
    assert data["streamed"] is True
    assert sum(data["split"].values()) == data["rows_used"] == 300
    from collections import Counter

    assert data["class_counts"] == dict(sorted(Counter(r[1] for r in sample_rows(300)).items()))
    assert manifest["test"]["n"] == data["split"]["test"]
    assert manifest["blend"]["streamed"] is True  # the n-gram part was fitted on the stream
    # nothing left beside the model
    assert [p.name for p in streamed_model.parent.iterdir()] == ["streamed"]
    result = invoke("predict", "-m", streamed_model, "a wonderful, moving film")
    assert result.exit_code == 0, result.output
    evaluated = invoke("evaluate", "-m", streamed_model, "-f", "json")
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["accuracy"] == pytest.approx(
        manifest["test"]["accuracy"], abs=1e-6)


def test_the_held_out_split_keeps_the_texts_exactly(streamed_model, sorted_csv):
    with gzip.open(streamed_model / "test.jsonl.gz", "rt", encoding="utf-8") as fh:
        held_out = [json.loads(line) for line in fh]
    rows = {text: label for text, label in sample_rows(300)}
    rows["first line\nsecond line, " + sorted(sample_rows(300), key=lambda r: r[1])[5][0]] = \
        "negative"
    assert held_out and all(rows[r["text"]] == r["label"] for r in held_out)


def test_the_split_is_decided_per_row_by_the_seed(tmp_path, sorted_csv):
    def parts(seed):
        work = tmp_path / f"w{seed}"
        work.mkdir(exist_ok=True)
        spooled = spool.spool(open_labelled(sorted_csv), work, val_split=0.1, test_split=0.1,
                              seed=seed)
        return [spooled.rows(p) for p in ("train", "validation", "test")], \
            (work / "test-exact.jsonl").read_text()

    first, again, other = parts(1), parts(1), parts(2)
    assert first == again and first[1] != other[1]
    assert sum(first[0]) == 300 and 15 <= first[0][2] <= 45  # about 10% each


def test_training_batches_mix_a_sorted_file(tmp_path, sorted_csv):
    from rnncli.training import stream_data

    spooled = spool.spool(open_labelled(sorted_csv), tmp_path, val_split=0.1,
                          test_split=0.1, seed=3)
    labels, _ = next(iter(stream_data.texts(spooled, "train", batch=32, seed=3)))
    assert 0 < int(np.sum(labels.numpy())) < 32  # both classes in the first batch


def test_workers_write_and_train_on_their_own_shards(tmp_path, sorted_csv):
    """On several machines each worker tokenizes only its own training rows (numbered
    across the bucket files): the shards are disjoint, together they are the training
    rows, and every worker gets as many full batches an epoch."""
    from rnncli.network import model as M
    from rnncli.training import stream_data

    spooled = spool.spool(open_labelled(sorted_csv), tmp_path, val_split=0.1,
                          test_split=0.1, seed=3)
    config = TrainConfig(max_tokens=500, seq_len=16)
    texts = [t for batch in stream_data.text_batches(spooled, "train")
             for t in batch.numpy().tolist()]
    vectorizer = M.build_vectorizer(config, sorted({w for t in texts
                                                   for w in t.decode().lower().split()})[:400])
    def rows(ids):
        return sorted(tuple(ids_.numpy().tolist()) + (int(y),)
                      for y, ids_ in ids.records("train"))

    whole = stream_data.IdFiles(spooled, vectorizer, 16)
    everything = rows(whole)
    assert len(everything) == spooled.rows("train") == whole.rows["train"]
    mine = []  # each written in turn: the id files are written where the texts are
    for rank in range(3):
        ids = stream_data.IdFiles(spooled, vectorizer, 16, shard=(rank, 3))
        mine.append(rows(ids))
        assert len(mine[-1]) == ids.rows["train"]
        assert all(ids.rows[part] == spooled.rows(part) for part in ("validation", "test"))
    assert sorted(sum(mine, [])) == everything  # disjoint, and all of them
    assert max(map(len, mine)) - min(map(len, mine)) <= 1
    steps, per_device, local = stream_data.shard_plan(spooled.rows("train"), 16, 3, 3)
    assert (per_device, local) == (5, 1) and steps == (spooled.rows("train") // 3) // 5
    one_epoch, got = stream_data.ids_epochs(ids, "train", per_device, seed=3,
                                            plan=(steps, local))
    batches = list(one_epoch(1))
    assert got == steps == len(batches) and all(len(x) == per_device for x, _ in batches)


def test_too_few_rows_of_a_class_is_refused(tmp_path):
    rows = sample_rows(60) + [["a rare one", "neutral"]]
    path = write_csv(tmp_path / "rare.csv", rows)
    result = invoke("train", path, "-o", tmp_path / "m", *TINY, "--stream")
    assert result.exit_code != 0
    assert "too few rows to split" in result.output and "'neutral'" in result.output
    assert not any(p.name.startswith(".m.stream") for p in tmp_path.iterdir())


def test_auto_streams_only_large_files(tmp_path, sorted_csv, monkeypatch):
    assert spool.should_stream(sorted_csv, None) is None
    assert spool.should_stream(sorted_csv, True) is not None
    monkeypatch.setattr(spool, "STREAM_LINES", 100)
    assert spool.should_stream(sorted_csv, None) is not None
    assert spool.should_stream(sorted_csv, False) is None


def test_counting_batches_equals_counting_a_list():
    from rnncli.network import counting
    from rnncli.network import model as M

    texts = [text for text, _ in sample_rows(200)]
    whole = counting.derive_settings(TrainConfig(), texts)
    batched = counting.derive_settings(
        TrainConfig(), batches=(texts[i:i + 7] for i in range(0, len(texts), 7)))
    assert whole == batched
    vocab, idf = counting.count_ngrams((texts[i:i + 9] for i in range(0, len(texts), 9)),
                                       "words", 2)
    expected_vocab, expected_idf = M.derive_ngrams(texts, "words", 2)
    assert dict(zip(vocab, idf[1:])) == pytest.approx(
        dict(zip(expected_vocab, expected_idf[1:])))


def test_counting_is_pruned_to_a_bound(monkeypatch):
    from rnncli.network import counting

    monkeypatch.setattr(counting, "PRUNE_AT", 40)
    counter = counting._Counter()
    for start in range(0, 500, 50):
        tokens = [b"common"] * 5 + [f"word{i}".encode() for i in range(start, start + 50)]
        values, _, counts = counting.tf.unique_with_counts(tokens)
        counter.add(values, counts)
        assert len(counter.counts) <= 40
    assert counter.ranked()[0] == (b"common", 50)


def test_a_streamed_model_learns(tmp_path):
    """Scores and labels stay aligned through the parts: a word that decides the label is
    learnt (a swapped or shifted label would score about 0.5)."""
    import random

    rng = random.Random(0)
    filler = [f"w{i}" for i in range(50)]
    rows = [[" ".join(rng.sample(filler, 6) + [word]), label]
            for word, label in [("good", "positive"), ("bad", "negative")] * 200]
    rng.shuffle(rows)
    path = write_csv(tmp_path / "words.csv", rows)
    out = tmp_path / "m"
    result = invoke("train", path, "-o", out, *TINY, "--stream")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "rnncli.json").read_text())
    assert manifest["test"]["accuracy"] >= 0.85  # misaligned labels: about 0.5
    assert manifest["blend"]["parts"]["ngram"]["validation_accuracy"] >= 0.85


def test_three_classes_stream(tmp_path):
    from conftest import SAMPLE

    out = tmp_path / "m"
    result = invoke("train", SAMPLE.parent / "sst3_sample.tsv.gz", "-o", out, *TINY, "--stream",
                    "--class-weight", "balanced")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "rnncli.json").read_text())
    assert len(manifest["labels"]["classes"]) == 3 and manifest["data"]["streamed"]
    assert manifest["test"]["n"] == manifest["data"]["split"]["test"]
    predicted = invoke("predict", "-m", out, "-f", "jsonl", "a fine film")
    assert predicted.exit_code == 0 and len(json.loads(predicted.stdout)["scores"]) == 3


def test_the_lbfgs_solver_is_replaced_and_said(tmp_path, sorted_csv):
    out = tmp_path / "m"
    result = invoke("train", sorted_csv, "-o", out, *TINY[:-1], "--stream",
                    "--ngram-solver", "lbfgs")
    assert result.exit_code == 0, result.output
    assert "Adam, not L-BFGS" in result.output
    manifest = json.loads((out / "rnncli.json").read_text())
    assert manifest["settings"]["ngram_solver"] == "adam"


def test_two_machines_train_a_streamed_file(tmp_path, sorted_csv):
    """TF_CONFIG with a streamed file: each worker reads the file into parts of its own
    and trains on its own shard of the training rows, in as many steps; only the chief
    writes the model."""
    from conftest import two_workers

    chief, worker = two_workers(lambda index: [
        "rnncli", "train", str(sorted_csv), *TINY[:-1], "--epochs", "2", "--stream",
        "--no-ngrams", "-o", str(tmp_path / f"out{index}")])
    assert "read as a stream" in chief and "read as a stream" in worker
    assert "worker 1 of 2 processes: training finished; the chief writes" in worker
    shards = [re.search(r"trains on its own shard of (\d+) of (\d+) training rows, (\d+) "
                        r"steps an epoch of (\d+) rows on each of 2 devices", log)
              for log in (chief, worker)]
    assert all(shards), chief[-2000:]
    (mine, rows, steps, per_device), (theirs, rows_, steps_, _) = (
        [int(g) for g in m.groups()] for m in shards)
    assert mine + theirs == rows == rows_ and steps == steps_ == (rows // 2) // per_device
    assert not (tmp_path / "out1").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out0"]  # no parts left
    manifest = json.loads((tmp_path / "out0" / "rnncli.json").read_text())
    assert manifest["training"]["workers"] == 2 and manifest["data"]["streamed"]

    def epochs(log):  # "epoch 1/2  loss ...  val_acc ...  8.1s", without the seconds
        return [line.rsplit("  ", 1)[0] for line in log.splitlines() if line.startswith("epoch ")]

    assert len(epochs(chief)) == 2 and epochs(chief) == epochs(worker)


def test_too_little_room_for_the_parts_is_refused_before_reading(tmp_path, sorted_csv,
                                                                  monkeypatch):
    from rnncli.core import fsio

    monkeypatch.setattr(fsio, "free_bytes", lambda directory: 1000)
    result = invoke("train", sorted_csv, "-o", tmp_path / "m", *TINY, "--stream")
    assert result.exit_code == 2, result.output
    assert "not enough free space" in result.output and "-o" in result.output
    assert list(tmp_path.iterdir()) == []
