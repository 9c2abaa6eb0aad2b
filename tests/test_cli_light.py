"""The CLI paths that must stay light and fast: help, version, usage errors, bad input
that is caught before TensorFlow is imported. Each import check runs in a fresh
interpreter, because the test process may already hold TensorFlow."""

import json
import os
import re
import subprocess
import sys
import zipfile

import pytest
from click.testing import CliRunner

from rnncli import __version__
from rnncli.cli.main import cli
from rnncli.core.config import TrainConfig
from rnncli.modeldir.artifacts import FORMAT_VERSION, MANIFEST, MODEL_FILE, sha256_file

# The light paths are pinned by what they import, not by how long they take: timing on a
# warm development machine hid a dependency upgrade that made a cold predict 4x slower
# (ml_dtypes 0.7 under onnx, issue 10). Beyond the standard library and what the
# interpreter loaded before rnncli (site hooks), a light path may import these top-level
# packages and no others, so a new or upgraded dependency that pulls in more fails here.
LIGHT = {"click", "rnncli"}
# Reading data, and rendering with Rich, add these (rich.pretty imports attrs whenever it is
# installed; hypothesis 6.100 brings it).
DATA = LIGHT | {"numpy", "rich", "attr"}
# Scoring with the TensorFlow-free engine adds ONNX Runtime (which imports nothing more).
SCORING = DATA | {"onnxruntime"}
# Never on a light path (the issue that added this test lists them).
HEAVY = {"onnx", "ml_dtypes", "tf2onnx", "tensorflow", "keras", "pandas", "scipy", "sklearn",
         "matplotlib"}

# The console entry point, as `rnncli ARGS` runs it, in a fresh interpreter.
PROBE = """
import json, sys
before = set(sys.modules)
args, out = json.loads(sys.argv[1]), sys.argv[2]
sys.argv = ["rnncli", *args]
from rnncli.cli.main import main
try:
    main()
    code = 0
except SystemExit as exc:
    code = exc.code
with open(out, "w") as fh:
    json.dump([code, sorted(set(sys.modules) - before)], fh)
"""


def _imported(args, tmp_path, stdin: bytes = b"") -> tuple[int, set[str]]:
    """(exit code, modules imported) of ``rnncli ARGS`` in a fresh interpreter."""
    out = tmp_path / "imported.json"
    subprocess.run([sys.executable, "-c", PROBE, json.dumps([str(a) for a in args]), str(out)],
                   input=stdin, capture_output=True, check=True, timeout=120)
    code, modules = json.loads(out.read_text())
    return code, set(modules)


def _packages(args, tmp_path, stdin: bytes = b"") -> tuple[int, set[str]]:
    """(exit code, top-level packages outside the standard library) of ``rnncli ARGS``."""
    code, modules = _imported(args, tmp_path, stdin)
    top = {name.partition(".")[0] for name in modules
           if not name.startswith(("cython_runtime", "_cython_"))}  # Cython's, not packages
    return code, top - set(sys.stdlib_module_names)


@pytest.mark.parametrize("args, code, allowed", [
    (["--help"], 0, LIGHT),
    (["--version"], 0, LIGHT),
    (["train", "--help"], 0, LIGHT),
    (["predict", "--help"], 0, LIGHT),
    (["train", "x.csv", "--cell", "rnn"], 2, LIGHT),
    (["train", "x.csv", "--device", "tpu"], 2, LIGHT),
    (["predict", "-m", "x", "--device", "gpu:all", "hi"], 2, LIGHT),
    (["train", "no-such-file.csv"], 3, DATA),
    (["predict", "-m", "no-such-dir", "hi"], 4, SCORING),
    (["info", "-m", "no-such-dir"], 4, DATA),
    (["explain", "--help"], 0, LIGHT),
    (["report", "--help"], 0, LIGHT),
    (["serve", "--help"], 0, LIGHT),
    (["explain", "-m", "no-such-dir", "hi"], 4, DATA),
    (["report", "-m", "no-such-dir", "-o", "r"], 4, DATA),
])
def test_light_paths_import_only_what_they_need(tmp_path, args, code, allowed):
    got_code, packages = _packages(args, tmp_path)
    assert got_code == code
    assert packages <= allowed, f"also imported: {sorted(packages - allowed)}"


@pytest.mark.parametrize("args", [["--help"], ["--version"]])
def test_the_groups_help_imports_no_command(tmp_path, args):
    """`rnncli --help` lists the commands from cli.main.COMMANDS: no command's module, nor
    the settings they are built from, is imported (what kept --help within 1.2x of
    `import click, rich`)."""
    code, modules = _imported(args, tmp_path)
    assert code == 0
    mine = sorted(m for m in modules if m.startswith("rnncli."))
    assert not {"rnncli.core.config", "rnncli.cli.options", "rnncli.cli.train",
                "rnncli.cli.score"} & set(mine), mine


def test_the_groups_list_is_each_commands_own_help():
    import importlib

    from rnncli.cli.main import COMMANDS

    for name, (module, summary) in COMMANDS.items():
        command = getattr(importlib.import_module(f"rnncli.cli.{module}"), name)
        assert command.name == name
        assert " ".join(command.help.split("\n\n")[0].split()) == summary, name
    listed = CliRunner().invoke(cli, ["--help"]).output
    assert "  predict   Label TEXTs, or lines from stdin when no TEXT (or '-') is given." \
        in listed
    for name in COMMANDS:  # each listed command runs
        assert CliRunner().invoke(cli, [name, "--help"]).exit_code == 0, name
    assert CliRunner().invoke(cli, ["nosuch"]).exit_code == 2
    typo = CliRunner().invoke(cli, ["trian"])  # suggestions, though no command is loaded
    assert typo.exit_code == 2 and re.search(r"Did you mean .*'train'", typo.output)


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["train"]])
def test_help_and_usage_errors_skip_shutil(tmp_path, args):
    """Click imports shutil (with bz2, lzma, zlib) for the terminal's width alone; the
    formatter asks os instead (cli/context.py's RnnCliContext)."""
    assert "shutil" not in _imported(args, tmp_path)[1]


@pytest.mark.parametrize("columns, widest", [
    ("60", 58), ("", 78), ("500", 98), (" 70", 68), ("+70", 68),
    ("0", 78), ("-5", 78), ("wide", 78), ("\u00b2", 78),  # "²".isdigit(), not int()
])
def test_help_fits_the_terminal_width(columns, widest):
    """Click's own rule: $COLUMNS as shutil reads it (else the terminal's, else 80) less
    2, at most max_content_width 100, at least 50."""
    env = {**os.environ, "COLUMNS": columns}
    out = subprocess.run([sys.executable, "-m", "rnncli", "train", "--help"], env=env,
                         capture_output=True, text=True, check=True).stdout
    assert max(map(len, out.splitlines())) == widest


@pytest.mark.slow
@pytest.mark.parametrize("how", ["arguments", "stdin", "table"])
def test_cold_predict_imports_only_what_scoring_needs(gru_model, tmp_path, how):
    """A real (tiny) model scored by the default engine: ONNX Runtime and NumPy, never
    onnx, TensorFlow or anything else heavy."""
    args = ["predict", "-m", gru_model, "--format", "jsonl"]
    stdin = b""
    if how == "arguments":
        args.append("great movie")
    elif how == "stdin":
        stdin = "great movie\n\nawful\n这部电影很好看\n".encode()
    else:
        args = ["predict", "-m", gru_model, "--format", "table", "great movie"]
    code, packages = _packages(args, tmp_path, stdin)
    assert code == 0
    assert "onnxruntime" in packages  # it really scored
    assert not packages & HEAVY, sorted(packages & HEAVY)
    assert packages <= SCORING, f"also imported: {sorted(packages - SCORING)}"


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_usage_error_is_exit_2_with_hint():
    result = CliRunner().invoke(cli, ["predict", "--threshold", "3"])
    assert result.exit_code == 2 and "--threshold" in result.output


def _manifest(**overrides):
    manifest = {"format_version": FORMAT_VERSION,
                "settings": TrainConfig(max_tokens=10, seq_len=8).to_dict(),
                "labels": {"negative": "neg", "positive": "pos"}, "threshold": 0.5,
                "files": {MODEL_FILE: "0" * 64}}
    manifest.update(overrides)
    return manifest


def _model_dir(tmp_path, manifest=None, keras_bytes=None, raw_manifest=None):
    d = tmp_path / "model"
    d.mkdir()
    if keras_bytes is not None:
        (d / MODEL_FILE).write_bytes(keras_bytes)
    manifest = manifest or _manifest()
    if keras_bytes is not None:
        manifest["files"] = {MODEL_FILE: sha256_file(d / MODEL_FILE)}
    (d / MANIFEST).write_text(raw_manifest if raw_manifest is not None else json.dumps(manifest))
    return d


def _zip_bytes(tmp_path, config):
    path = tmp_path / "evil.keras"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", config if isinstance(config, str) else json.dumps(config))
        z.writestr("metadata.json", "{}")
        z.writestr("model.weights.h5", b"")
    return path.read_bytes()


LAMBDA_CONFIG = {"module": "keras.src.models.functional", "class_name": "Functional",
                 "config": {"layers": [{"module": "keras.layers", "class_name": "Lambda",
                                        "config": {"function": "evil"}}]}}


FOREIGN_CONFIG = {"module": "keras.src.models.functional", "class_name": "Functional",
                  "config": {"layers": [{"module": "os", "class_name": "system",
                                         "config": {"command": "touch canary"}}]}}
VOCABULARY_PATH_CONFIG = {
    "module": "keras.src.models.functional", "class_name": "Functional",
    "config": {"layers": [{"module": "keras.layers", "class_name": "TextVectorization",
                           "config": {"vocabulary": "/etc/passwd"}}]}}


NESTED_CONFIG = '{"a": ' * 5000 + "null" + "}" * 5000  # deeper than Python's recursion limit


THREE_CLASSES = {"settings": {"cell": "gru", "classes": 3},
                 "labels": {"classes": ["neg", "neutral", "pos"]}, "threshold": None}
MANIFEST_CASES = [
    (lambda t: t / "absent", "no model directory"),
    (lambda t: t / ("x" * 300), "cannot be read"),  # a name too long for the filesystem
    (lambda t: _model_dir(t, raw_manifest="[" * 200000), "not valid JSON"),
    (lambda t: _model_dir(t, manifest=_manifest(threshold="nan")), "threshold"),
    (lambda t: _model_dir(t, manifest=_manifest(threshold=7)), "threshold"),
    (lambda t: _model_dir(t, manifest=_manifest(validation=[1, 2])), "validation"),
    (lambda t: (t / "empty").mkdir() or t / "empty", "not an rnncli model directory"),
    (lambda t: _model_dir(t, raw_manifest="{not json"), "not valid JSON"),
    # more than 4,300 digits: Python's int() limit, a plain ValueError inside json.loads
    (lambda t: _model_dir(t, raw_manifest='{"format_version": ' + "9" * 5000 + "}"),
     "a number too long to read"),
    (lambda t: _model_dir(t, raw_manifest="[]"), "not a JSON object"),
    (lambda t: _model_dir(t, manifest=_manifest(format_version=FORMAT_VERSION + 1)),
     "newer than this rnncli"),
    (lambda t: _model_dir(t, manifest=_manifest(settings={"cell": "gru", "x": 1})),
     "incomplete"),
    # hand-edited classes: a threshold on three, counts that disagree, odd names
    (lambda t: _model_dir(t, manifest=_manifest(**{**THREE_CLASSES, "threshold": 0.5})),
     "a model of 3 classes has no threshold, but it says 0.5; set \"threshold\" to null"),
    (lambda t: _model_dir(t, manifest=_manifest(**{**THREE_CLASSES, "settings": {
        "cell": "gru", "classes": 4}})), "names 3 classes but settings.classes is 4"),
    (lambda t: _model_dir(t, manifest=_manifest(
        **{**THREE_CLASSES, "labels": {"classes": ["a", "b"]}})), "labels.classes"),
    (lambda t: _model_dir(t, manifest=_manifest(
        **{**THREE_CLASSES, "labels": {"classes": ["Pos", "pos", "neg"]}})), "labels.classes"),
    (lambda t: _model_dir(t, manifest=_manifest(
        **{**THREE_CLASSES, "labels": {"classes": ["a", 1, "b"]}})), "labels.classes"),
    (lambda t: _model_dir(t, manifest=_manifest(labels="classes")), "labels"),
    (lambda t: _model_dir(t, manifest=_manifest(threshold=None)), "threshold"),
]
ARCHIVE_CASES = [
    (lambda t: _model_dir(t), "missing from the model directory"),
    (lambda t: _model_dir(t, keras_bytes=b"PK\x03\x04truncated"), "not a valid .keras"),
    (lambda t: _model_dir(t, keras_bytes=_zip_bytes(t, LAMBDA_CONFIG)), "Lambda"),
    (lambda t: _model_dir(t, keras_bytes=_zip_bytes(t, FOREIGN_CONFIG)), "os.system"),
    (lambda t: _model_dir(t, keras_bytes=_zip_bytes(t, VOCABULARY_PATH_CONFIG)),
     "outside vocabulary"),
    (lambda t: _model_dir(t, keras_bytes=_zip_bytes(t, {"module": ["x"], "class_name": "y"})),
     "malformed"),
    (lambda t: _model_dir(t, keras_bytes=_zip_bytes(t, NESTED_CONFIG)), "config.json"),
]
COMMANDS = ["predict", "info", "evaluate", "export"]


@pytest.mark.parametrize("make, words, command",
                         [(m, w, c) for m, w in MANIFEST_CASES for c in COMMANDS]
                         + [(m, w, c) for m, w in ARCHIVE_CASES for c in COMMANDS])
def test_bad_model_directories_exit_4(tmp_path, make, words, command):
    model_dir = make(tmp_path)
    args = {"predict": ["predict", "-m", str(model_dir), "hi"],
            "info": ["info", "-m", str(model_dir)],
            "evaluate": ["evaluate", "-m", str(model_dir)],
            "export": ["export", "-m", str(model_dir), "-o", str(tmp_path / "out")]}[command]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 4, result.output
    assert result.output.startswith("Error: ") and words in result.output
    assert "Traceback" not in result.output


def test_manifest_too_large(tmp_path):
    d = _model_dir(tmp_path)
    with open(d / MANIFEST, "ab") as fh:
        fh.truncate(17 * 2**20)
    result = CliRunner().invoke(cli, ["info", "-m", str(d)])
    assert result.exit_code == 4 and "limit" in result.output


def test_train_refuses_to_replace_a_foreign_directory(tmp_path, tiny_csv):
    precious = tmp_path / "docs"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    result = CliRunner().invoke(cli, ["train", str(tiny_csv), "-o", str(precious)])
    assert result.exit_code == 2 and "not an rnncli model directory" in result.output
    assert (precious / "thesis.txt").read_text() == "years of work"


def test_bad_data_exit_3_before_tensorflow(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("review,sentiment\ngood,positive\nbad,negative,extra\n")
    result = CliRunner().invoke(cli, ["train", str(bad), "-o", str(tmp_path / "m")])
    assert result.exit_code == 3
    assert "line 3" in result.output and "3 fields" in result.output


def test_second_training_into_the_same_directory_stops_at_once(tmp_path, tiny_csv):
    from rnncli.core.fsio import lock

    out = tmp_path / "model"
    with lock(out):
        result = CliRunner().invoke(cli, ["train", str(tiny_csv), "-o", str(out)])
    assert result.exit_code == 2 and "another rnncli command is writing there" in result.output
    assert not (tmp_path / ".model.lock").exists()  # released and removed


@pytest.mark.parametrize("args", [
    ["predict", "--threshold", "nan", "x"],
    ["evaluate", "--threshold", "nan"],
    ["train", "x.csv", "--clipnorm", "nan"],
    ["train", "x.csv", "--lr", "inf"],
])
def test_nan_and_inf_are_usage_errors(args):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output


def test_evaluate_data_options_need_data():
    result = CliRunner().invoke(cli, ["evaluate", "--text-col", "body"])
    assert result.exit_code == 2 and "apply to a DATA file" in result.output


def test_unusable_output_locations_are_usage_errors(tmp_path, tiny_csv):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out in (afile, afile / "m"):
        result = CliRunner().invoke(cli, ["train", str(tiny_csv), "-o", str(out)])
        assert result.exit_code == 2, result.output
        assert "choose another" in result.output and "Traceback" not in result.output


def test_bad_data_leaves_no_directories_behind(tmp_path):
    result = CliRunner().invoke(cli, ["train", str(tmp_path / "nope.csv"),
                                      "-o", str(tmp_path / "deep" / "er" / "m")])
    assert result.exit_code == 3 and not (tmp_path / "deep").exists()


@pytest.mark.parametrize("spec, parsed", [
    ("auto", ("auto", None)), ("cpu", ("cpu", None)), ("GPU", ("gpu", None)),
    ("gpu:1", ("gpu", (1,))), ("gpu:0,1", ("gpu", (0, 1))), ("gpu:all", ("gpu", "all")),
    ("cpu:0,1", ("cpu", (0, 1))),
])
def test_device_specs(spec, parsed):
    from rnncli.core.device_spec import parse_device

    assert parse_device(spec) == parsed


@pytest.mark.parametrize("spec", ["tpu", "auto:1", "gpu:", "gpu:0,0", "gpu:-1", "gpu:1,all"])
def test_bad_device_specs(spec):
    from rnncli.core.device_spec import parse_device
    from rnncli.core.errors import DeviceError

    with pytest.raises(DeviceError):
        parse_device(spec)


def _tf_config(cluster, task_type="worker", index=0):
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


@pytest.mark.parametrize("config, role", [
    ("", None),
    (_tf_config({"worker": ["a:1"]}), None),  # one process: nothing to distribute
    (_tf_config({"worker": ["a:1", "b:1"]}, index=0), ("worker", 0, 2, True, 0)),
    (_tf_config({"worker": ["a:1", "b:1"]}, index=1), ("worker", 1, 2, False, 1)),
    (_tf_config({"chief": ["c:1"], "worker": ["a:1", "b:1"]}, index=0),
     ("worker", 0, 3, False, 1)),
    (_tf_config({"chief": ["c:1"], "worker": ["a:1", "b:1"]}, index=1),
     ("worker", 1, 3, False, 2)),
    (_tf_config({"chief": ["c:1"], "worker": ["a:1"]}, "chief", 0), ("chief", 0, 2, True, 0)),
])
def test_multi_worker_role_from_tf_config(monkeypatch, config, role):
    from rnncli.network.multi_worker import multi_worker_role

    monkeypatch.setenv("TF_CONFIG", config)
    got = multi_worker_role()
    assert (got and (got.task, got.index, got.workers, got.chief, got.rank)) == role


@pytest.mark.parametrize("config, words", [
    ("{not json", "not a cluster description"),
    (json.dumps({"cluster": {"worker": ["a:1", "b:1"]}}), "not a cluster description"),
    (_tf_config({"worker": ["a:1", "b:1"]}, index=5), "not in its cluster"),
    (_tf_config({"worker": ["a:1"], "ps": ["p:1"]}), "only 'chief' and 'worker'"),
])
def test_bad_tf_config_is_a_usage_error_before_tensorflow(tmp_path, tiny_csv, monkeypatch,
                                                          config, words):
    monkeypatch.setenv("TF_CONFIG", config)
    code, packages = _packages(["train", tiny_csv, "-o", tmp_path / "m"], tmp_path)
    assert code == 2 and packages <= DATA
    result = CliRunner().invoke(cli, ["train", str(tiny_csv), "-o", str(tmp_path / "m")])
    assert result.exit_code == 2 and words in result.output and "TF_CONFIG" in result.output
