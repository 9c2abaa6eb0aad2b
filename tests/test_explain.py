"""rnncli explain: contributions that are what the model does (occlusion reruns equal
them, deleting the top words moves the score more than deleting random ones, the n-gram
shares add up), offsets into the original text, the renderings, bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import sample_rows

from rnncli.cli.main import cli
from rnncli.inference.explain import explain_records, load_explainer, token_spans
from rnncli.modeldir import artifacts
from rnncli.render.highlight import ExplanationWriter

slow = pytest.mark.slow


def invoke(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def log_odds(scores: np.ndarray, target: int) -> np.ndarray:
    """The predicted class's log-odds from predict's scores (two classes: a vector)."""
    scores = np.clip(np.asarray(scores, np.float64), 1e-7, 1 - 1e-7)
    p = scores if scores.ndim == 1 else scores[:, target]
    odds = np.log(p) - np.log1p(-p)
    return odds if scores.ndim > 1 or target == 1 else -odds


@pytest.fixture(scope="module")
def explainer(gru_model):
    with load_explainer(gru_model) as predictor:
        yield predictor


# Reviews the tiny model was not trained on (it saw the first 240).
HELD_OUT = [row[0] for row in sample_rows(340)[240:]]


def short(text: str, words: int = 60) -> str:
    return " ".join(text.split()[:words])


@slow
def test_contributions_are_what_predict_gives_with_the_word_replaced(explainer):
    """Occlusion is literal: replacing a token by a word the model has never seen and
    running predict moves the log-odds by exactly the contribution."""
    names = explainer.label_names
    for text in ["This movie was GREAT, I loved it! Not boring at all.", short(HELD_OUT[0], 25)]:
        record = explain_records(explainer, [text])[0]
        target = names.index(record["label"])
        edited = [text[:t["start"]] + " qqzxv " + text[t["end"]:] for t in record["tokens"]]
        base = log_odds(explainer.scores([text]), target)[0]
        moved = base - log_odds(explainer.scores(edited), target)
        got = np.array([t["contribution"] for t in record["tokens"]])
        np.testing.assert_allclose(got, moved, atol=2e-3)
        assert abs(record["log_odds"] - base) < 2e-3


@slow
def test_deleting_the_top_words_moves_the_score_more_than_random_words(explainer):
    rng = np.random.default_rng(0)
    names = explainer.label_names
    k, top_drops, random_drops = 3, [], []
    for text in map(short, HELD_OUT):
        record = explain_records(explainer, [text])[0]
        tokens = [t for t in record["tokens"] if t["start"] is not None]
        if len(tokens) <= k:
            continue
        target = names.index(record["label"])
        top = sorted(tokens, key=lambda t: -t["contribution"])[:k]
        picks = [[tokens[i] for i in rng.choice(len(tokens), k, replace=False)]
                 for _ in range(5)]
        texts = [text, _without(text, top), *(_without(text, p) for p in picks)]
        odds = log_odds(explainer.scores(texts), target)
        top_drops.append(odds[0] - odds[1])
        random_drops.append(np.mean(odds[0] - odds[2:]))
    assert len(top_drops) >= 80
    assert np.mean(top_drops) > np.mean(random_drops) + 0.05, (np.mean(top_drops),
                                                               np.mean(random_drops))
    assert np.mean(np.array(top_drops) > np.array(random_drops)) > 0.8


def _without(text: str, tokens: list[dict]) -> str:
    for t in sorted(tokens, key=lambda t: -t["start"]):
        text = text[:t["start"]] + text[t["end"]:]
    return text


@slow
def test_ngram_shares_add_up_to_the_ngram_models_log_odds(explainer):
    engine = explainer.engine
    names = explainer.label_names
    records = explain_records(explainer, [short(t, 80) for t in HELD_OUT[:30]])
    for record in records:
        total = record["ngram_base"] + sum(t["ngram"] for t in record["tokens"])
        assert abs(total - record["ngram_log_odds"]) < 1e-4
        target = names.index(record["label"])
        own = log_odds(engine.ngram_scores([engine.tokens(record["text"])]), target)[0]
        assert abs(own - record["ngram_log_odds"]) < 1e-4


@slow
def test_a_text_longer_than_the_network_reads(explainer):
    seq_len = explainer.engine.seq_len
    text = " ".join(["good", "bad", "film"] * 40)
    record = explain_records(explainer, [text])[0]
    assert len(record["tokens"]) == 120 and record["network_tokens"] == seq_len - 1
    assert all(t["rnn"] is None for t in record["tokens"][seq_len - 1:])
    assert all(t["rnn"] is not None for t in record["tokens"][:seq_len - 1])
    lines = _plain(record)
    assert f"read the first {seq_len - 1} of 120 words" in lines


@slow
def test_a_text_longer_than_the_model_reads(explainer):
    max_chars = explainer.engine.standardize.max_chars
    text = "fine " * (max_chars // 5 + 10)
    record = explain_records(explainer, [text])[0]
    assert record["read_chars"] == max_chars < len(text)
    assert record["tokens"][-1]["end"] <= max_chars
    assert f"first {max_chars:,} of {len(text):,} characters" in _plain(record)


def _plain(record) -> str:
    import io

    out = io.StringIO()
    writer = ExplanationWriter("text", stream=out, color=False)
    writer.write([record])
    return out.getvalue()


# --------------------------------------------------------------------------- offsets


@slow
def test_offsets_point_into_the_original_text(explainer):
    standardize = explainer.engine.standardize
    text = "The <b>İSTANBUL</b> hotel’s ＷＩＦＩ was GREAT!!! Don't go; ΣΑΣ \x00 end"
    tokens = explainer.engine.tokens(text)[1:]
    spans = token_spans(standardize, text, tokens)
    assert None not in spans
    shown = [text[a:b] for a, b in spans]
    assert shown[:3] == ["The", "İSTANBUL", "hotel’s"]
    assert "GREAT" in shown and "!" in shown and "ΣΑΣ" in shown and "Don't" in shown
    assert [standardize(s).split()[1:] for s in shown] == [[t] for t in tokens]
    starts = [a for a, _ in spans]
    assert starts == sorted(starts)


@slow
def test_tag_words_are_not_taken_for_the_texts(explainer):
    text = "a <b>b</b> b"
    tokens = explainer.engine.tokens(text)[1:]
    assert tokens == ["a", "b", "b"]
    assert token_spans(explainer.engine.standardize, text, tokens) == [(0, 1), (5, 6),
                                                                      (11, 12)]


# --------------------------------------------------------------------------- CLI


@slow
def test_plain_rendering_marks_words_with_their_sign(gru_model):
    result = invoke("explain", "-m", gru_model, "This movie was great. Boring and awful.")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "[+word]" in out.splitlines()[0]
    assert "\x1b[" not in out
    body = out.splitlines()[2]  # legend, label, then the text
    assert "[+" in body or "[-" in body
    assert "for: " in out or "against: " in out


@slow
def test_terminal_rendering_shades_words(explainer, monkeypatch):
    import io

    monkeypatch.setenv("TERM", "xterm-256color")
    record = explain_records(explainer, ["great film, boring plot"])[0]
    out = io.StringIO()
    ExplanationWriter("text", stream=out, color=True).write([record])
    shown = out.getvalue()
    plain = [re.sub("\x1b\\[[0-9;]*m", "", line) for line in shown.splitlines()]
    body = shown.splitlines()[plain.index("great film, boring plot")]
    assert "\x1b[" in body  # some word of it shaded
    assert "for the predicted label" in shown


@slow
def test_json_records_one_per_line_with_bad_lines(gru_model):
    lines = b"good film\n\nbad \xff acting\n\xe5\xa5\xbd\n"
    result = invoke("explain", "-m", gru_model, "-f", "jsonl", input=lines)
    assert result.exit_code == 3 and "not valid UTF-8" in result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["status"] for r in records] == ["ok", "empty", "invalid_utf8", "ok"]
    assert records[0]["tokens"][0] == {**records[0]["tokens"][0], "token": "good",
                                       "start": 0, "end": 4}
    assert records[2]["text"] == "bad \ufffd acting" and records[2]["tokens"]  # U+FFFD
    result = invoke("explain", "-m", gru_model, "-f", "json", "good", "bad")
    assert [r["text"] for r in json.loads(result.stdout)] == ["good", "bad"]
    predicted = json.loads(invoke("predict", "-m", gru_model, "-f", "json", "good",
                                  "bad").stdout)
    for mine, theirs in zip(json.loads(result.stdout), predicted):
        assert {k: mine[k] for k in theirs} == theirs


@slow
def test_a_model_without_onnx_files_is_refused_clearly(gru_model, tmp_path):
    import shutil

    out = tmp_path / "m"
    shutil.copytree(gru_model, out)
    for name in (artifacts.ONNX_FILE, artifacts.SERVING_FILE):
        (out / name).unlink()
    artifacts.write_manifest(out, json.loads((out / artifacts.MANIFEST).read_text()))
    result = invoke("explain", "-m", out, "good")
    assert result.exit_code == 4
    assert "explain runs on the ONNX engine" in result.stderr and "retrain" in result.stderr


@slow
def test_a_model_without_ngrams(tmp_path, tiny_csv, train_model):
    model = train_model(tmp_path / "m", tiny_csv, "--no-ngrams")
    with load_explainer(model) as predictor:
        text = " ".join(["good", "bad", "film"] * 20)
        record = explain_records(predictor, [text])[0]
        assert record["rnn_weight"] == 1.0 and record["ngram_log_odds"] is None
        assert all(t["ngram"] is None for t in record["tokens"])
        t = record["tokens"][0]
        edited = text[:t["start"]] + " qqzxv " + text[t["end"]:]
        p = predictor.scores([text, edited]).astype(float)
        odds = np.log(p / (1 - p)) * (1 if record["label"] == "positive" else -1)
        assert abs(odds[0] - odds[1] - t["contribution"]) < 2e-3
    assert "the rest are not read" in _plain(record)


def test_at_most_twenty_words_are_shaded_even_on_ties():
    from rnncli.render.highlight import shown_spans

    tokens = [{"start": 2 * i, "end": 2 * i + 1, "contribution": 1.0} for i in range(40)]
    assert len(shown_spans(tokens)) == 20


@slow
def test_control_characters_in_a_text_reach_the_terminal_escaped(explainer):
    import io

    record = explain_records(explainer, ["great \x1b[2J\x1b]0;pwned\x07 movie"])[0]
    for color in (True, False):
        out = io.StringIO()
        ExplanationWriter("text", stream=out, color=color).write([record])
        assert "\x1b[2J" not in out.getvalue() and "\x1b]0" not in out.getvalue()
        assert "\\x1b[2J" in out.getvalue()


@slow
def test_a_dumb_terminal_or_no_color_gets_signs_and_no_escape_codes(explainer, monkeypatch):
    import io

    record = explain_records(explainer, ["great film, boring plot"])[0]
    monkeypatch.setenv("TERM", "dumb")
    out = io.StringIO()
    ExplanationWriter("text", stream=out, color=True).write([record])
    assert "\x1b[" not in out.getvalue() and "[+word]" in out.getvalue()
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("FORCE_COLOR", "1")
    out = io.StringIO()
    ExplanationWriter("text", stream=out).write([record])
    assert "\x1b[" not in out.getvalue()


@slow
@pytest.mark.parametrize("command", ["explain", "predict -f table"])
def test_a_pipe_closed_early_ends_quietly(gru_model, command):
    lines = "\n".join(f"review number {i} was great" for i in range(3000))
    proc = subprocess.run(["bash", "-c", f"rnncli {command} -m '{gru_model}' | head -1; "
                           "exit ${PIPESTATUS[0]}"], input=lines, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "FORCE_COLOR": "1"})
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
