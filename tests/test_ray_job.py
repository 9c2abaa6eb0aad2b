"""The Ray job scores as predict does: its scorer on its own (no Ray needed), and the
whole job (read, ship the model, score on actors, write) in Ray's local mode."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import rnncli
from rnncli.cli.main import cli
from rnncli.core.errors import ModelError, UsageError
from rnncli.ray_job import SCORING_FILES, Scorer, model_files, output_columns

TEXTS = ["a wonderful, moving film", "", "dull and far too long", "一部好电影", "ok"]


def _expected(model_dir, texts):
    with rnncli.load(model_dir) as model:
        return model.predict(texts)


@pytest.mark.slow
def test_the_scorer_adds_predicts_fields(gru_model):
    files = model_files(gru_model)
    assert sorted(files) == sorted(SCORING_FILES)  # the test split stays behind
    scorer = Scorer(files, text_column="review", prefix="p_")
    assert not Path(scorer.model.model_dir).exists()  # loaded, then removed: nothing leaks
    assert scorer.model._predictor.engine.max_workers == 1  # one CPU per actor
    batch = {"id": np.arange(6), "review": np.array(TEXTS + [None], dtype=object)}
    out = scorer(batch)
    expected = _expected(gru_model, TEXTS + [""])
    labels = scorer.model.labels
    assert list(out) == ["id", "review", *output_columns(labels, "p_")]
    assert list(out["id"]) == list(range(6))
    assert list(out["p_label"]) == [r["label"] for r in expected]
    assert list(out["p_status"]) == [r["status"] for r in expected]
    for label in labels:
        got = out[f"p_score_{label}"]
        want = [np.nan if r["scores"] is None else r["scores"][label] for r in expected]
        np.testing.assert_array_equal(got, np.array(want, dtype=np.float64))
    assert np.isnan(out["p_score"][1]) and np.isnan(out["p_score"][5])  # blank, missing
    with pytest.raises(UsageError, match="no column 'review'"):
        scorer({"text": np.array(["fine"], dtype=object)})


@pytest.mark.slow
def test_a_broken_model_fails_before_any_work(tmp_path, gru_model):
    import shutil

    broken = tmp_path / "m"
    shutil.copytree(gru_model, broken)
    (broken / "core.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="core.onnx"):
        model_files(broken)


@pytest.mark.slow
def test_the_job_in_rays_local_mode_scores_as_predict(tmp_path, gru_model):
    pytest.importorskip("ray")
    rows = [{"id": i, "text": text} for i, text in enumerate(TEXTS * 8)]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                      encoding="utf-8")
    out = tmp_path / "out"
    job = subprocess.run(
        [sys.executable, "-m", "rnncli.ray_job", str(source), str(out), "-m", str(gru_model),
         "--format", "jsonl", "--num-cpus", "3", "--actors", "2", "--batch-size", "8"],
        capture_output=True, text=True, timeout=300)
    assert job.returncode == 0, job.stderr[-3000:]
    scored = sorted((json.loads(line) for part in sorted(out.glob("*.json*"))
                     for line in part.read_text(encoding="utf-8").splitlines()),
                    key=lambda r: r["id"])
    assert [r["id"] for r in scored] == list(range(len(rows)))  # every row, once
    result = CliRunner().invoke(cli, ["predict", "-m", str(gru_model), "-f", "jsonl"],
                                input="\n".join(r["text"] for r in rows) + "\n")
    predicted = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(predicted) == len(scored)
    wrong = subprocess.run(
        [sys.executable, "-m", "rnncli.ray_job", str(source), str(tmp_path / "o2"), "-m",
         str(gru_model), "--text-column", "review", "--num-cpus", "2"],
        capture_output=True, text=True, timeout=300)
    assert wrong.returncode == 2, wrong.stderr[-3000:]
    assert "Error: no column 'review' in the data (it has id, text)" in wrong.stderr
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet")
    failed = subprocess.run(
        [sys.executable, "-m", "rnncli.ray_job", str(broken), str(tmp_path / "o3"), "-m",
         str(gru_model), "--num-cpus", "2"], capture_output=True, text=True, timeout=300)
    assert failed.returncode == 1
    assert failed.stderr.splitlines()[-1].startswith("Error: the Ray job failed: ")
    for got, want in zip(scored, predicted):
        assert (got["label"], got["status"]) == (want["label"], want["status"])
        if want["score"] is None:
            assert got["score"] is None or got["score"] != got["score"]  # NaN in JSON
        else:
            assert got["score"] == pytest.approx(want["score"], abs=5e-7)


def test_the_job_says_which_extra_it_needs(monkeypatch, capsys, tmp_path):
    from rnncli import ray_job

    source = tmp_path / "in.csv"
    source.write_text("text\nfine\n")
    assert ray_job.main([str(tmp_path / "none.csv"), "out", "-m", "model"]) == 2
    assert "no such input file" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    code = ray_job.main([str(source), "out", "-m", "model"])
    assert code == 2
    assert "pip install 'rnncli[ray]'" in capsys.readouterr().err
