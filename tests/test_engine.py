"""The TensorFlow-free predict engine (ONNX Runtime + Python tokenization) against the
reference Keras model: same tokens, same scores (1e-4), no TensorFlow import, and the
same refusals for a bad or tampered model directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import sample_rows, secret_table
from hypothesis import given, settings
from hypothesis import strategies as st

from rnncli.cli.main import cli
from rnncli.core.errors import ModelError, UsageError
from rnncli.inference.predict import Predictor, choose_engine
from rnncli.inference.standardize import Standardizer
from rnncli.modeldir import artifacts, serving

# Texts where a re-implementation of the standardization would most likely slip.
TRICKY = [
    "", " ", "!!!", "???!", "'", "''", "' '", "a' 'b", "a'  'b", "'quoted'", "rock'n'roll",
    "don't", "it’s ‘fine’ `really`", "ʼtwas", "NOT BAD?!", "1/10", "10/10!!!", "x" * 3000,
    "<br /><br />tags<b>bold</b> <i", "<" + "a" * 250 + ">", "a<>b", "ΟΔΥΣΣΕΥΣ ΚΑΙ ΣΥ",
    "ΣΑΣ.", "Σ", "aΣb", "İSTANBUL ıi", "Ⱟ ꟀꟐ 𐕰", "ﬀ ß ẞ", "naïve café — 東京 😀", "nul\x00after",
    "\x00", "tab\tand\u0085nel\u2028line\u2029", "\u00a0nbsp\u3000ideographic", "e\u0301",
    "١٢٣ ٤٥", "𝐁𝐨𝐥𝐝 𝟏𝟐", "Ⅻ ⅻ", "ǅ ǈ", "a\u200bb\u200d", "\ufeffbom", "😀👍🏽",
    # Chinese, Japanese, mixed, full-width forms and CJK punctuation
    "这款iPhone很好用", "サポートがbad", "ＡＢＣ１２３！？", "ｈｔｔｐ：／／ｘ．ｃｏｍ",
    "酒店不错，服务很好。下次还来！", "「すごい」『最高』《好》（棒）…、；：", "ラーメンー",
    "ｻﾎﾟｰﾄ", "ｰｰ", "々〇〆ヶ", "𠀀𪚥", "＜ｂｒ／＞标签", "Ｄｏｎ＇ｔ很好", "不是很好？！",
    "Σ很好", "好Σ", "가나다 좋아요", "ภาษาไทยดีมาก", "東京\x00大阪", "テスト\u3000テスト",
]
# Characters for property tests of Chinese and Japanese text: letters of both, the
# prolonged sound marks, full-width forms, CJK punctuation and the ASCII neighbours.
CJK_ALPHABET = list("这款很好用不错酒店サポートがーｰｻﾟﾞ々〇〆ＡＢｚ１！？＇＜＞，。、「」…　a9 '!?<>Σ"
                    "\u3099\ufe0f\U000E0100")


def invoke(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


# --------------------------------------------------------------------------- fast


def test_choose_engine():
    both = {"files": {"model.keras": "x", "core.onnx": "y", "serving.npz": "z"}}
    keras_only = {"files": {"model.keras": "x"}}
    assert choose_engine(both) == "onnx"
    assert choose_engine(both, "auto", "cpu") == "onnx"
    assert choose_engine(both, "auto", "gpu:1") == "tf"
    assert choose_engine(both, "tf") == "tf"
    assert choose_engine(keras_only) == "tf"
    with pytest.raises(ModelError, match="no ONNX files"):
        choose_engine(keras_only, "onnx")
    with pytest.raises(UsageError, match="runs on the CPU"):
        choose_engine(both, "onnx", "gpu")


def _tables():
    return {"keep": [[48, 57], [97, 122]], "lower_from": [65], "lower_to": ["a"],
            "cased": [[65, 90], [97, 122]], "ignorable": [[39, 39]], "split": [[0x4E00, 0x9FFF]],
            "max_chars": 100, "start_token": "xxbos"}


def _write(path, **changes):
    arguments = dict(tokens=["", "[UNK]", "xxbos", "good"], seq_len=8, rnn_weight=0.25,
                     tokenizer="cjk-chars", tables=_tables(), ngrams=["[UNK]", "good"],
                     idf=[0.0, 1.5],
                     kernel=[[0.0], [2.0]], bias=[0.5])
    serving.write_serving(path, **{**arguments, **changes})
    return path


def test_serving_file_round_trip(tmp_path):
    read = serving.read_serving(_write(tmp_path / "serving.npz"))
    assert read["tokens"] == ["", "[UNK]", "xxbos", "good"]
    assert read["ngrams"] == ["[UNK]", "good"]
    assert read["rnn_weight"] == 0.25 and read["seq_len"] == 8
    np.testing.assert_array_equal(read["ngram_kernel"], [[0.0], [2.0]])
    assert read["outputs"] == 1
    assert read["tokenizer"] == "cjk-chars"
    np.testing.assert_array_equal(read["split"], [[0x4E00, 0x9FFF]])
    words = serving.read_serving(_write(tmp_path / "words.npz", tokenizer="words"))
    assert words["tokenizer"] == "words" and words["split"] is None


def test_serving_file_of_a_three_class_model(tmp_path):
    """One kernel column and one bias per class, read back as (n-grams, classes)."""
    read = serving.read_serving(_write(tmp_path / "serving.npz", outputs=3,
                                       kernel=[[0, 0, 0], [1, 2, 3]], bias=[0.1, 0.2, 0.3]))
    assert read["outputs"] == 3
    np.testing.assert_array_equal(read["ngram_kernel"], [[0, 0, 0], [1, 2, 3]])
    np.testing.assert_allclose(read["ngram_bias"], [0.1, 0.2, 0.3])


def test_serving_file_of_version_1_reads_as_words(tmp_path):
    """Models written before the tokenizer existed have a version 1 file without it."""
    path = _write(tmp_path / "serving.npz", tokenizer="words")
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    text = json.loads(arrays["text"].tobytes())
    del text["tokenizer"]
    arrays["text"] = serving._encode(json.dumps({**text, "version": 1}))
    np.savez(path, **arrays)
    read = serving.read_serving(path)
    assert read["tokenizer"] == "words" and read["split"] is None


def test_serving_file_with_pickled_objects_is_refused(tmp_path):
    canary = tmp_path / "canary"

    class Smuggled:
        def __reduce__(self):
            return (open, (str(canary), "w"))

    path = tmp_path / "serving.npz"
    np.savez(path, text=np.array([Smuggled()], dtype=object))
    with pytest.raises(ModelError, match="unreadable"):
        serving.read_serving(path)
    assert not canary.exists()


def _edit_text(arrays, **changes):
    text = json.loads(arrays["text"].tobytes())
    arrays["text"] = serving._encode(json.dumps({**text, **changes}))


@pytest.mark.parametrize("change", [
    lambda a: _edit_text(a, version=99),
    lambda a: _edit_text(a, ngram_order=0),
    lambda a: _edit_text(a, ngram_order=4),
    lambda a: _edit_text(a, ngram_order=True),
    lambda a: _edit_text(a, ngram_order="3"),
    lambda a: _edit_text(a, ngram_order=None),
    lambda a: _edit_text(a, outputs=2),  # two classes are one output
    lambda a: _edit_text(a, outputs=0),
    lambda a: _edit_text(a, outputs="3"),
    lambda a: _edit_text(a, outputs=None),
    lambda a: _edit_text(a, outputs=3),  # the kernel holds one column
    lambda a: _edit_text(a, tokenizer="bpe"),
    lambda a: _edit_text(a, tokenizer=None),
    lambda a: a.pop("split"),
    lambda a: a.update(split=np.zeros((0, 2), np.int32)),
    lambda a: a.update(split=np.array([[0x9FFF, 0x4E00]], np.int32)),
    lambda a: a.update(text=serving._encode("[1, 2]")),
    lambda a: a.update(text=serving._encode("[" * 100000 + "]" * 100000)),
    lambda a: _edit_text(a, seq_len=0),
    lambda a: _edit_text(a, seq_len="x"),
    lambda a: _edit_text(a, rnn_weight=2.0),
    lambda a: _edit_text(a, rnn_weight=float("nan")),
    lambda a: _edit_text(a, start_token=5),
    lambda a: _edit_text(a, lower_to=[["a"]]),
    lambda a: a.update(ngram_idf=np.zeros(5, np.float32)),
    lambda a: a.update(ngram_idf=np.zeros((2, 1), np.float32)),
    lambda a: a.update(keep=np.array([[57, 48]], np.int32)),
    lambda a: a.update(keep=np.array([[0.5, 3.0]])),
    lambda a: a.update(keep=np.zeros((0, 2), np.int32)),
    lambda a: a.update(cased=np.array([[-1, 3]], np.int32)),
    lambda a: a.update(lower_from=np.array([[65]], np.int32)),
    lambda a: a.update(extra=np.zeros(3)),
    lambda a: a.clear(),
])
def test_malformed_serving_file_is_a_model_error(tmp_path, change):
    path = _write(tmp_path / "serving.npz")
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    change(arrays)
    np.savez(path, **arrays)
    with pytest.raises(ModelError, match="serving.npz: unreadable"):
        serving.read_serving(path)


@pytest.mark.parametrize("content", [b"not a zip at all", b""])
def test_serving_file_that_is_not_a_zip(tmp_path, content):
    path = tmp_path / "serving.npz"
    path.write_bytes(content)
    with pytest.raises(ModelError, match="serving.npz: unreadable"):
        serving.read_serving(path)


# --------------------------------------------------------------------------- slow

slow = pytest.mark.slow


@pytest.fixture(scope="module", params=["words", "cjk-chars"])
def standardizers(request):
    """(Python Standardizer from TensorFlow's tables, TensorFlow's own standardize), for
    each tokenizer."""
    from rnncli.network import model as M

    tables = M.standardize_tables()
    split = tables["split"] if request.param == "cjk-chars" else None
    python = Standardizer(keep=tables["keep"], cased=tables["cased"],
                          ignorable=tables["ignorable"],
                          lower_from=np.asarray(tables["lower_from"]),
                          lower_to=tables["lower_to"], max_chars=tables["max_chars"],
                          start_token=tables["start_token"], split=split)
    function = M.STANDARDIZERS[request.param]

    def reference(texts):
        return [t.decode("utf-8") for t in function(M.tf.constant(texts)).numpy()]

    return python, reference


@slow
def test_standardization_matches_tensorflow_on_tricky_texts(standardizers):
    python, reference = standardizers
    assert [python(t) for t in TRICKY] == reference(TRICKY)


@slow
@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(exclude_categories=("Cs",))), min_size=1,
                max_size=20),
       st.lists(st.text(alphabet=st.sampled_from(list("aZ9 '!?`<>/\u2019\u03a3\x00\t.-"
                                                      "\u0301\u00ad\u0890\u2c2f\ua7c0")),
                        max_size=40), min_size=1, max_size=20))
def test_standardization_matches_tensorflow_on_any_text(standardizers, anything, ascii_like):
    python, reference = standardizers
    texts = anything + ascii_like
    assert [python(t) for t in texts] == reference(texts)


@slow
@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from(CJK_ALPHABET), max_size=60), min_size=1,
                max_size=20))
def test_standardization_matches_tensorflow_on_cjk_text(standardizers, texts):
    python, reference = standardizers
    assert [python(t) for t in texts] == reference(texts)


@slow
def test_cjk_tokens():
    """Chinese and Japanese characters are tokens, other scripts' words stay whole,
    full-width forms read as ASCII and CJK punctuation separates."""
    from rnncli.network import model as M

    def tokens(text):
        return M.standardize_cjk(M.tf.constant([text])).numpy()[0].decode().split()[1:]

    assert tokens("这款iPhone很好用") == ["这", "款", "iphone", "很", "好", "用"]
    assert tokens("サポートがbad") == ["サ", "ポ", "ー", "ト", "が", "bad"]
    assert tokens("ＡＢＣ１２３！？") == ["abc123", "!", "?"]
    assert tokens("好！不，「棒」。") == ["好", "!", "不", "棒"]
    assert tokens("＜很好＞不错") == ["很", "好", "不", "错"]  # brackets, not an HTML tag
    # Voiced sound marks and variation selectors stay with their character.
    assert tokens("ｶﾞｲﾄﾞ") == ["ｶﾞ", "ｲ", "ﾄﾞ"]
    assert tokens("カ\u3099ラ") == ["カ\u3099", "ラ"]
    assert tokens("葛\U000E0100城") == ["葛\U000E0100", "城"]
    assert tokens("가나다 좋아요 ภาษาไทย") == ["가나다", "좋아요", "ภาษาไทย"]
    # The old tokenizer, which models of format 2 keep: a clause is one token.
    assert M.standardize(M.tf.constant(["这款iPhone很好用"])).numpy()[0].decode() == \
        "xxbos 这款iphone很好用"


@slow
@pytest.mark.parametrize("fixture", ["gru_model", "lstm_model"])
def test_engines_agree_on_a_fixed_sample(request, fixture):
    model_dir = request.getfixturevalue(fixture)
    texts = [row[0] for row in sample_rows(400)[240:]] + TRICKY
    onnx = Predictor.load(model_dir, engine="onnx")
    reference = Predictor.load(model_dir, engine="tf", device="cpu")
    assert onnx.engine.name == "onnx" and reference.engine.name == "tf"
    np.testing.assert_allclose(onnx.scores(texts), reference.scores(texts), atol=1e-4, rtol=0)
    # one text at a time, and in parallel batches, give the same scores
    np.testing.assert_allclose(onnx.scores(texts[:5], batch_size=1),
                               onnx.scores(texts)[:5], atol=1e-6, rtol=0)


@slow
@pytest.mark.parametrize("command", ["predict", "explain"])
def test_predict_and_explain_do_not_import_tensorflow(gru_model, command):
    code = ("import sys; from rnncli.cli.main import cli\n"
            f"try: cli.main([{command!r}, '-m', {str(gru_model)!r}, '-f', 'jsonl', 'good film'])\n"
            "except SystemExit as e: assert not e.code, e.code\n"
            "heavy = [m for m in ('tensorflow', 'keras') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "ok" and proc.stderr == ""


def _copy(model_dir, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(model_dir, out)
    return out


@slow
def test_model_without_onnx_files_falls_back_to_tensorflow(gru_model, tmp_path):
    out = _copy(gru_model, tmp_path)
    for name in (artifacts.ONNX_FILE, artifacts.SERVING_FILE):
        (out / name).unlink()
    manifest = json.loads((out / "rnncli.json").read_text())
    artifacts.write_manifest(out, manifest)
    result = invoke("predict", "-m", out, "-f", "jsonl", "good film")
    assert result.exit_code == 0, result.output
    result = invoke("predict", "-m", out, "--engine", "onnx", "good film")
    assert result.exit_code == 4 and "no ONNX files" in result.output
    assert "tf only" in invoke("info", "-m", out, "-f", "table").output


@slow
def test_tampered_onnx_files_are_refused(gru_model, tmp_path):
    out = _copy(gru_model, tmp_path)
    with open(out / artifacts.ONNX_FILE, "ab") as fh:
        fh.write(b"\0")
    result = invoke("predict", "-m", out, "good film")
    assert result.exit_code == 4 and "core.onnx" in result.output and "sha256" in result.output
    # A graph that is not ONNX at all, with the manifest rewritten to match it.
    (out / artifacts.ONNX_FILE).write_bytes(b"\x08\x07garbage")
    artifacts.write_manifest(out, json.loads((out / "rnncli.json").read_text()))
    result = invoke("predict", "-m", out, "good film")
    assert result.exit_code == 4 and "core.onnx" in result.output
    assert "Traceback" not in result.output


def _replace_graph(model_dir, tmp_path, graph):
    import onnx

    out = _copy(model_dir, tmp_path)
    onnx.save(graph, out / artifacts.ONNX_FILE)
    artifacts.write_manifest(out, json.loads((out / "rnncli.json").read_text()))
    return out


@slow
def test_graph_reading_outside_data_is_refused(gru_model, tmp_path, monkeypatch):
    """ONNX "external data" is read relative to the current directory: a crafted graph
    could read a file there (a key, a password) into its scores. Refused before loading."""
    from onnx import TensorProto, helper

    secret = tmp_path / "cwd" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("hunter2 " * 8)  # 64 bytes; the graph reads the first 32
    # score = mean of the secret's bytes at the token ids / 256
    graph = helper.make_graph(
        [helper.make_node("Mod", ["ids", "n"], ["at"]),
         helper.make_node("Gather", ["table", "at"], ["bytes"]),
         helper.make_node("Cast", ["bytes"], ["f"], to=TensorProto.FLOAT),
         helper.make_node("Div", ["f", "k"], ["p"]),
         helper.make_node("ReduceMean", ["p"], ["prob"], axes=[1], keepdims=1)],
        "evil", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "t"])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["b", 1])],
        [secret_table(), helper.make_tensor("k", TensorProto.FLOAT, [], [256.0]),
         helper.make_tensor("n", TensorProto.INT64, [], [32])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    out = _replace_graph(gru_model, tmp_path, model)
    monkeypatch.chdir(secret.parent)
    result = invoke("predict", "-m", out, "-f", "jsonl", "good film")
    assert result.exit_code == 4 and "refers to data outside the file" in result.output


@slow
def test_graph_of_another_shape_is_refused(gru_model, tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "other",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4])])
    out = _replace_graph(gru_model, tmp_path, helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)]))
    result = invoke("predict", "-m", out, "good film")
    assert result.exit_code == 4 and "not the network rnncli exports" in result.output


@slow
def test_tensorflow_lower_cases_the_same_under_a_turkish_locale(gru_model):
    """ICU inside TensorFlow would lower-case "I" to "ı" under tr_TR; rnncli keeps the
    root mapping, so both engines (and every machine) tokenize alike."""
    code = ("from rnncli.network import model as M\n"
            "print(M.standardize(M.tf.constant(['TITANIC IS GREAT'])).numpy()[0].decode())")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LC_")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**env, "LANG": "tr_TR.UTF-8"}, timeout=120)
    assert proc.stdout.strip() == "xxbos titanic is great", proc.stderr[-2000:]


@slow
def test_engine_option_errors(gru_model):
    result = invoke("predict", "-m", gru_model, "--engine", "onnx", "--device", "gpu", "x")
    assert result.exit_code == 2 and "runs on the CPU" in result.output
    result = invoke("evaluate", "-m", gru_model, "--engine", "onnx", "-f", "json")
    assert result.exit_code == 0, result.output
    onnx = json.loads(result.stdout)
    tf = json.loads(invoke("evaluate", "-m", gru_model, "--engine", "tf", "-f", "json").stdout)
    assert onnx["accuracy"] == tf["accuracy"] and abs(onnx["loss"] - tf["loss"]) < 1e-4


@slow
def test_failed_onnx_export_still_publishes_the_keras_model(tmp_path, tiny_csv, train_model,
                                                            monkeypatch, no_fit):
    from rnncli.training import export

    def broken(*args, **kwargs):
        raise RuntimeError("converter exploded")

    monkeypatch.setattr(export, "write_onnx", broken)
    out = train_model(tmp_path / "m", tiny_csv, "--no-ngrams")
    assert sorted(p.name for p in out.iterdir()) == ["model.keras", "rnncli.json",
                                                     "test.jsonl.gz"]
    assert invoke("predict", "-m", out, "good film").exit_code == 0


@pytest.fixture(scope="module")
def onnx_predictor(gru_model):
    return Predictor.load(gru_model, engine="onnx")


@slow
@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")) | st.sampled_from(
           [b"", b" ", b"\t\r", b"\x00", b"caf\xc3\xa9", b"\xff\xfe", b"\xe2\x82", b"ok\r",
            b"\x85", "\u2028".encode()]), max_size=30),
       st.booleans(), st.sampled_from([1, 3, 256]))
def test_predict_input_one_record_per_line_in_order(onnx_predictor, lines, final_newline,
                                                    batch_size):
    """Any bytes on stdin: one record per line, in order, with the status the line
    deserves; all but blank lines are scored (not UTF-8: with U+FFFD)."""
    import io

    raw = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    records = [r for window in onnx_predictor.stream(io.BytesIO(raw), batch_size=batch_size)
               for r in window]
    expected_lines = raw.split(b"\n")
    if raw.endswith(b"\n") or not raw:
        expected_lines = expected_lines[:-1]
    assert len(records) == len(expected_lines)
    for line, record in zip(expected_lines, records):
        line = line[:-1] if line.endswith(b"\r") else line
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            assert record["status"] == "invalid_utf8" and record["score"] is not None
            assert record["text"] == line.decode("utf-8", "replace")
            continue
        assert record["text"] == text
        if text.strip():
            assert record["status"] == "ok" and 0 <= record["score"] <= 1
            assert record["label"] in onnx_predictor.label_names
        else:
            assert record["status"] == "empty" and record["score"] is None


@slow
@pytest.mark.parametrize("redirect, code, words", [
    ("> /dev/full", 2, "cannot write the output (No space left on device)"),
    (">&-", 2, "stdout is closed"),
    ("<&- > /dev/null", 0, ""),  # closed stdin: no input lines
])
def test_unwritable_or_closed_streams(gru_model, redirect, code, words):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    texts = "" if "<&-" in redirect else "'great movie'"
    proc = subprocess.run(["bash", "-c", f"rnncli predict -m '{gru_model}' {texts} {redirect}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == code, proc.stderr
    assert words in proc.stderr and "Traceback" not in proc.stderr
