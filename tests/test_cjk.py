"""Chinese and Japanese text end to end: tokens, derived settings, warnings, both engines,
export, word vectors and the terminal table, on the bundled Chinese hotel reviews."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import ZH_SAMPLE, positive_probability, sample_rows, write_csv

from rnncli.cli.main import cli
from rnncli.core import scripts

slow = pytest.mark.slow
JAPANESE = ["サポートがbad", "このホテルは最高でした！", "部屋が狭くてうるさい。",
            "ラーメンー美味しい",
            "ｻｰﾋﾞｽ最悪", "スタッフの対応がとても良かった", "二度と泊まりません…"]
MIXED = ["这款iPhone很好用", "ＷＩＦＩ很慢！！", "房间ok，早餐so-so", "服务good，价格贵了点？",
         "５星级？不值！", "＜ｂｒ＞标签"]


def invoke(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def zh_texts(n: int) -> list[str]:
    return [review for _, review in sample_rows(n, ZH_SAMPLE)]


# --------------------------------------------------------------------------- fast


def test_warnings_for_scripts_rnncli_does_not_split():
    thai = ["ภาษาไทยดีมาก", "โรงแรมนี้ดีมาก"] * 10
    assert any("Thai" in w for w in scripts.segmentation_warnings(thai, 0.0))
    assert any("Khmer" in w for w in scripts.segmentation_warnings(["សណ្ឋាគារល្អ"], 0.0))
    assert any("look unsegmented" in w for w in scripts.segmentation_warnings(["x"], 0.8))
    assert scripts.segmentation_warnings(zh_texts(200) + ["great film"], 0.01) == []


# --------------------------------------------------------------------------- slow


@slow
def test_settings_derived_from_characters():
    """A review of n Chinese characters is about n tokens; the vocabulary is characters;
    the same texts split at spaces only would be mostly long "words", which is warned of."""
    from rnncli.core.config import TrainConfig
    from rnncli.network import counting

    texts = zh_texts(400)
    derived = counting.derive_settings(TrainConfig(), texts)
    chars = np.array([len(t) for t in texts])
    assert 0.6 * np.percentile(chars, 95) <= derived.config.seq_len <= 800
    assert sum(len(t) == 1 for t in derived.vocab[:500]) > 450
    assert derived.long_share < 0.05
    assert counting.derive_settings(TrainConfig(tokenizer="words"), texts).long_share > \
        scripts.UNSEGMENTED_SHARE


@pytest.fixture(scope="module")
def zh_model(tmp_path_factory, train_model):
    """A tiny model on 240 Chinese reviews, its embedding started from a file of character
    vectors (as Chinese collections ship them) that also holds a Latin word."""
    tmp = tmp_path_factory.mktemp("zh")
    rows = [[review, label] for label, review in sample_rows(240, ZH_SAMPLE)]
    data = write_csv(tmp / "zh.csv", rows, header=("评论", "标签"))
    vectors = tmp / "chars.txt.gz"
    rng = np.random.default_rng(0)
    lines = ["5 8"] + [f"{w} " + " ".join(f"{v:.4f}" for v in rng.normal(size=8))
                       for w in ["好", "差", "酒店", "iphone", "房"]]
    with gzip.open(vectors, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    out = tmp / "model"
    result = CliRunner().invoke(cli, ["train", str(data), "-o", str(out), "--epochs", "1",
                                      "--units", "4", "--batch-size", "32", "--seq-len", "96",
                                      "--embeddings", str(vectors)])
    assert result.exit_code == 0, result.output
    return out, result.output


@slow
def test_character_vectors_apply(zh_model):
    out, output = zh_model
    manifest = json.loads((out / "rnncli.json").read_text())
    assert manifest["settings"]["tokenizer"] == "cjk-chars"
    assert manifest["settings"]["bigram_dim"] == 32  # auto: the tokens are characters
    assert manifest["settings"]["ngram_order"] == 3  # auto: character 1-3-grams
    assert manifest["settings"]["ngram_solver"] == "lbfgs"  # auto, for characters
    assert manifest["blend"]["ngram_c"] == 16  # too few validation rows to choose C on
    info = invoke("info", "-m", out, "-f", "table")
    assert "embedding 8 + 32 for token pairs" in " ".join(info.output.split())
    assert manifest["data"]["text_col"] == "评论" and manifest["data"]["label_col"] == "标签"
    # 好, 差 and 房 are characters of the texts; 酒店 is a word, never a token; iphone is
    # not in these texts.
    assert "chars.txt.gz: vectors for 3 of" in output
    # no warning about the text (the small splits of this tiny data are warned about)
    assert [line for line in output.splitlines() if "warning" in line
            and " split has only " not in line] == []


@slow
def test_engines_agree_on_chinese_japanese_and_mixed_text(zh_model):
    from rnncli.inference.predict import Predictor

    out, _ = zh_model
    texts = zh_texts(2000)[240:] + JAPANESE + MIXED
    onnx = Predictor.load(out, engine="onnx")
    reference = Predictor.load(out, engine="tf", device="cpu")
    assert [onnx.engine.name, reference.engine.name] == ["onnx", "tf"]
    np.testing.assert_allclose(onnx.scores(texts), reference.scores(texts), atol=1e-4, rtol=0)
    assert any(gram.count(" ") == 2 for gram in onnx.engine._ngrams)  # 3-grams are served
    assert onnx.engine.tokens("这款ＩＰＨＯＮＥ很好用！") == [
        "xxbos", "这", "款", "iphone", "很", "好", "用", "!"]


@slow
def test_export_serves_raw_chinese_strings_with_predict_scores(zh_model, tmp_path):
    import tensorflow as tf

    out, _ = zh_model
    assert invoke("export", "-m", out, "-o", tmp_path / "served").exit_code == 0
    texts = zh_texts(300)[240:] + JAPANESE + MIXED
    loaded = tf.saved_model.load(str(tmp_path / "served"))  # kept: serve needs its variables
    served = np.asarray(loaded.serve(tf.constant(texts))).reshape(-1)
    predicted = [positive_probability(r) for r in jsonl(invoke("predict", "-m", out, "-f",
                                                                "jsonl", *texts).stdout)]
    np.testing.assert_allclose(served, predicted, atol=1e-4)


@slow
def test_predict_from_a_pipe_and_a_table_of_double_width_text(zh_model):
    from rich.cells import cell_len

    out, _ = zh_model
    lines = ["酒店很好，服务周到", "", "ＷＩＦＩ很慢！！", "サポートがbad"]
    piped = invoke("predict", "-m", out, "-f", "jsonl", input="\n".join(lines) + "\n")
    assert piped.exit_code == 0
    assert [r["text"] for r in jsonl(piped.stdout)] == lines  # one result per input line
    table = invoke("predict", "-m", out, "-f", "table", *[t for t in lines if t])
    rows = [line for line in table.stdout.splitlines() if "│" in line]
    assert len(rows) == 3
    # Double-width characters count twice: every row's columns line up.
    assert len({cell_len(row[:row.index("│")]) for row in rows}) == 1
    assert len({cell_len(row) for row in rows}) == 1


@slow
def test_unlabelled_texts_teach_character_vectors(tmp_path, no_fit, no_onnx):
    """--word-vectors with --unlabelled (and --pretrain-epochs 0: no pretraining) learns
    vectors for the model's tokens from both: here Chinese characters."""
    rows = sample_rows(400, ZH_SAMPLE)
    data = write_csv(tmp_path / "zh.csv", [[review, label] for label, review in rows[:200]])
    unlabelled = tmp_path / "more.txt"
    unlabelled.write_text("\n".join(review for _, review in rows[200:]) + "\n", encoding="utf-8")
    out = tmp_path / "m"
    result = invoke("train", data, "-o", out, "--unlabelled", unlabelled, "--no-ngrams",
                    "--epochs", "1", "--units", "4", "--embed-dim", "8", "--word-vectors",
                    "--pretrain-epochs", "0")
    assert result.exit_code == 0, result.output
    # 200 unlabelled texts and the 160 training rows, read as the model's tokens
    assert "learned word vectors from 360 texts" in result.output
    predicted = jsonl(invoke("predict", "-m", out, "-f", "jsonl", "房间很干净").stdout)
    assert predicted[0]["status"] == "ok"


@slow
def test_training_says_thai_is_not_split(tmp_path, no_fit, no_onnx):
    words = ["โรงแรม", "ดีมาก", "สะอาด", "แย่", "เสียงดัง", "พนักงาน", "ใจดี", "ห้อง"]
    rng = np.random.default_rng(0)
    rows = [["".join(rng.choice(words, 4)), "positive" if i % 2 else "negative"]
            for i in range(60)]
    data = write_csv(tmp_path / "th.csv", rows)
    result = invoke("train", data, "-o", tmp_path / "m", "--epochs", "1", "--units", "4",
                    "--embed-dim", "8", "--no-ngrams", "--quiet")
    assert result.exit_code == 0, result.output
    assert "texts in Thai are not split into words" in result.output
    assert "look unsegmented" in result.output  # 24-character "words"


@slow
def test_explain_chinese_and_japanese_character_by_character(zh_model):
    from rnncli.inference.explain import explain_records, load_explainer

    out, _ = zh_model
    texts = ["酒店很好，服务不错！下次还来。", "サポートが最悪でした。ｉＰｈｏｎｅは好き",
             "房间太差了"]
    with load_explainer(out) as predictor:
        records = explain_records(predictor, texts)
        standardize = predictor.engine.standardize
    for text, record in zip(texts, records):
        tokens = record["tokens"]
        assert tokens and all(t["start"] is not None for t in tokens)
        for t in tokens:  # each span of the original text is that token
            assert standardize(text[t["start"]:t["end"]]).split()[1:] == [t["token"]]
        total = record["ngram_base"] + sum(t["ngram"] for t in tokens)
        assert abs(total - record["ngram_log_odds"]) < 1e-4
    assert [t["token"] for t in records[0]["tokens"][:4]] == ["酒", "店", "很", "好"]
    full_width = [t for t in records[1]["tokens"] if t["token"] == "iphone"]
    assert full_width and records[1]["text"][full_width[0]["start"]:full_width[0]["end"]] == \
        "ｉＰｈｏｎｅ"
    result = invoke("explain", "-m", out, texts[2])
    assert result.exit_code == 0 and "房" in result.stdout and "[" in result.stdout
