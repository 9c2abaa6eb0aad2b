"""rnncli.load: the Python API gives predict's records, stays light, is shared by threads
and travels to other processes as its directory."""

import json
import pickle
import subprocess
import sys
import threading

import pytest
from click.testing import CliRunner

import rnncli
from rnncli.cli.main import cli

TEXTS = ["a wonderful, moving film", "dull and far too long", "", "   ",
         b"caf\xe9 noir was fine", "一部好电影", "ok"]


def _cli_records(model_dir, texts) -> list[dict]:
    lines = b"\n".join(t if isinstance(t, bytes) else t.encode() for t in texts) + b"\n"
    result = CliRunner().invoke(cli, ["predict", "-m", str(model_dir), "-f", "jsonl"],
                                input=lines)
    assert result.exit_code in (0, 3), result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.mark.slow
def test_load_gives_predicts_records(gru_model):
    with rnncli.load(gru_model) as model:
        got = model.predict(TEXTS)
        assert model.engine == "onnx"
        labels = model.manifest["labels"]
        assert model.labels == (labels["negative"], labels["positive"])
    assert got == _cli_records(gru_model, TEXTS)
    assert [r["status"] for r in got] == ["ok", "ok", "empty", "empty", "invalid_utf8",
                                          "ok", "ok"]
    assert got[0]["scores"] != got[1]["scores"]  # scored, each text on its own


@pytest.mark.slow
def test_one_text_gives_one_record_and_non_texts_are_refused(gru_model):
    with rnncli.load(gru_model) as model:
        assert model.predict("a wonderful, moving film") == model.predict(TEXTS[:1])
        with pytest.raises(TypeError, match="not int"):
            model.predict(["fine", 3])
        with pytest.raises(TypeError, match="not int"):
            model.predict(3)
        for unordered in ({"a": 1}, {"fine"}, bytearray(b"fine")):
            with pytest.raises(TypeError, match="or a sequence of them"):
                model.predict(unordered)
        assert model.predict(t for t in TEXTS[:2]) == model.predict(TEXTS[:2])


@pytest.mark.parametrize("arguments, message", [
    ({"engine": "ONNX"}, "engine='ONNX': give one of auto, onnx, tf"),
    ({"threshold": 2.0}, r"threshold=2.0: give a number in \[0, 1\]"),
    ({"threshold": "0.5"}, "threshold='0.5'"),
    ({"threshold": float("nan")}, "threshold=nan"),
    ({"workers": 0}, "workers=0: give a whole number >= 1"),
])
def test_arguments_are_checked_as_the_command_line_checks_them(arguments, message):
    with pytest.raises(rnncli.UsageError, match=message):
        rnncli.load("no-such-model", **arguments)  # refused before the directory is read


@pytest.mark.slow
def test_workers_bound_the_engines_threads(gru_model):
    with rnncli.load(gru_model, workers=1) as one, rnncli.load(gru_model) as every:
        texts = [f"film {i}" for i in range(300)]
        assert one.predict(texts, batch_size=16) == every.predict(texts, batch_size=16)
        assert one._predictor.engine._executor._max_workers == 1
        assert pickle.loads(pickle.dumps(one))._args == one._args


@pytest.mark.slow
def test_a_model_pickles_as_its_directory(gru_model):
    with rnncli.load(gru_model) as model:
        data = pickle.dumps(model)
        assert len(data) < 1000  # the path and settings, not the engine
        with pickle.loads(data) as copy:
            assert copy.predict(TEXTS) == model.predict(TEXTS)
            assert copy.model_dir == model.model_dir


@pytest.mark.slow
def test_threads_share_one_model(gru_model):
    texts = [f"{word} film number {i}" for i in range(400)
             for word in ("wonderful", "awful")][:400]
    with rnncli.load(gru_model) as model:
        alone = model.predict(texts)
        got: dict[int, list] = {}

        def score(part: int) -> None:
            got[part] = model.predict(texts[part::4], batch_size=16)

        threads = [threading.Thread(target=score, args=(part,)) for part in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    for part in range(4):
        assert got[part] == alone[part::4]


@pytest.mark.slow
def test_the_api_never_imports_tensorflow(gru_model):
    code = ("import sys, rnncli\n"
            f"records = rnncli.load({str(gru_model)!r}).predict(['great film'])\n"
            "heavy = [m for m in ('tensorflow', 'keras', 'rnncli.network', 'rnncli.training')"
            " if m in sys.modules]\n"
            "print(records[0]['status'], heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "ok []"


def test_importing_rnncli_does_not_load_the_api():
    code = "import sys, rnncli; print('rnncli.api' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["False", "False"]
    assert callable(rnncli.load) and rnncli.Model.__name__ == "Model"
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        rnncli.nothing  # noqa: B018


def test_a_missing_model_is_the_cli_error(tmp_path):
    with pytest.raises(rnncli.ModelError, match=str(tmp_path / "none")):
        rnncli.load(tmp_path / "none")
