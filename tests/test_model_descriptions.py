"""How a model and its figures are described to a person (issue 25): the tokens in info
and report, evaluate's title, explain's words or characters, the report's path, class
names the plots cannot draw."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from conftest import TINY, ZH_SAMPLE, sample_rows, write_csv

from rnncli.cli.main import cli
from rnncli.modeldir import artifacts

slow = pytest.mark.slow


def invoke(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


def _manifest(tokenizer, share=None):
    return {"settings": {"tokenizer": tokenizer},
            "data": {} if share is None else {"character_share": share}}


def test_tokens_are_described_from_the_tokenizer_and_the_training_texts():
    assert artifacts.describe_tokens(_manifest("cjk-chars", 0.0)) == "words"  # English
    assert artifacts.describe_tokens(_manifest("cjk-chars", 0.004)) == "words"
    assert artifacts.describe_tokens(_manifest("cjk-chars", 0.93)) == (
        "Chinese and Japanese characters, one token each (93% of the training tokens); "
        "words in other scripts")
    assert artifacts.describe_tokens(_manifest("cjk-chars", 0.2)) == (
        "words, and Chinese and Japanese characters, one token each (20% of the training "
        "tokens)")
    assert artifacts.describe_tokens(_manifest("words")) == "words"  # format 2 and older
    assert artifacts.describe_tokens(_manifest("cjk-chars")) == (  # before character_share
        "words; a Chinese or Japanese character is a token of its own")
    assert artifacts.describe_tokens({"settings": {}}) == "words"


@pytest.fixture(scope="session")
def zh_model(tmp_path_factory):
    """A Chinese model whose classes are named 好 and 差 (unfitted network: fast)."""
    rows = [[review, "好" if label == "1" else "差"]
            for label, review in sample_rows(240, ZH_SAMPLE)]
    data = write_csv(tmp_path_factory.mktemp("zh") / "zh.csv", rows, ("review", "label"))
    out = tmp_path_factory.mktemp("models") / "zh"
    result = invoke("train", data, "-o", out, *TINY, "--positive-label", "好")
    assert result.exit_code == 0, result.output[-2000:]
    return out


@slow
def test_info_and_report_describe_the_tokens_alike(gru_model, zh_model, tmp_path):
    english = invoke("info", "-m", gru_model, "-f", "table", env={"COLUMNS": "300"}).output
    assert "tokens (words)" in english and "Chinese" not in english
    for model, want in ((gru_model, "words"), (zh_model, "Chinese and Japanese characters")):
        described = artifacts.describe_tokens(artifacts.read_manifest(model))
        assert described.startswith(want)
        info = invoke("info", "-m", model, "-f", "table", env={"COLUMNS": "300"})
        assert f"tokens ({described})" in info.output
        report = invoke("report", "-m", model, "-o", tmp_path / model.name, "--errors", "0")
        assert report.exit_code == 0, report.output
        page = (tmp_path / model.name / "index.html").read_text(encoding="utf-8")
        assert f"<th>tokenizer</th><td>{described}</td>" in page
        assert "cjk-chars" not in page


@slow
def test_report_shows_its_path_once_on_a_terminal(gru_model, tmp_path, monkeypatch):
    from rnncli.render import output

    piped = invoke("report", "-m", gru_model, "-o", tmp_path / "a", "--errors", "0")
    page = str(tmp_path / "a" / "index.html")
    assert piped.stdout == page + "\n" and f"wrote {page}" in piped.stderr  # a person sees it
    monkeypatch.setattr(output, "is_terminal", lambda stream: True)
    shown = invoke("report", "-m", gru_model, "-o", tmp_path / "b", "--errors", "0")
    assert shown.exit_code == 0, shown.output
    assert shown.output.count(str(tmp_path / "b")) == 1, shown.output


@slow
@pytest.mark.parametrize("model", ["gru_model", "zh_model"])
def test_evaluate_title_is_one_line_that_fits(request, model, tmp_path):
    long = tmp_path / ("a-directory-with-a-rather-long-name/" * 3) / "model"
    long.parent.mkdir(parents=True)
    long.symlink_to(request.getfixturevalue(model))
    result = invoke("evaluate", "-m", long, "-f", "table", env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("evaluation of /") and "…" in lines[0]
    assert lines[0].endswith("/model on the held-out test split")
    assert all(len(line) <= 80 for line in lines)
    short = invoke("evaluate", "-m", request.getfixturevalue(model), "-f", "table",
                   env={"COLUMNS": "200"})
    title = short.stdout.splitlines()[0]
    assert title == f"evaluation of {request.getfixturevalue(model)} on the held-out test split"


@slow
def test_explain_says_characters_for_a_character_model(zh_model, gru_model):
    zh = invoke("explain", "-m", zh_model, "房间干净，服务周到，下次还来！")
    assert zh.exit_code == 0, zh.output
    assert zh.stdout.startswith("[+character] counts towards the predicted label")
    assert "(characters that matter;" in zh.stdout and "words" not in zh.stdout
    en = invoke("explain", "-m", gru_model, "a fine film")
    assert en.stdout.startswith("[+word] counts") and "(words that matter;" in en.stdout


@slow
def test_chinese_class_names_are_drawn_or_named_without_missing_glyphs(zh_model, tmp_path):
    """No font on this machine has Chinese glyphs (matplotlib's DejaVu Sans has none):
    the plots name the classes "class 1", "class 2" and the page says which is which."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = invoke("report", "-m", zh_model, "-o", tmp_path / "r", "--errors", "2")
    assert result.exit_code == 0, result.output
    missing = [str(w.message) for w in caught if "missing from font" in str(w.message)]
    assert not missing, missing
    page = (tmp_path / "r" / "index.html").read_text(encoding="utf-8")
    from rnncli.report.fonts import plot_names

    if plot_names(["好", "差"]).stand_ins:  # no CJK font here
        assert ("<tr><td>class 1</td><td>差</td></tr><tr><td>class 2</td><td>好</td></tr>"
                in page)
        assert "the plots call them class 1, class 2" in result.stderr


def test_a_font_with_the_glyphs_is_chosen_and_placeholders_are_not():
    from matplotlib import get_data_path

    from rnncli.report.fonts import covering_font

    dejavu = f"{get_data_path()}/fonts/ttf/DejaVuSans.ttf"
    last_resort = [("Last Resort High-Efficiency", f"{get_data_path()}/fonts/ttf/"
                    "LastResortHE-Regular.ttf")]
    assert covering_font({ord("好")}, [("DejaVu Sans", dejavu)]) is None
    assert covering_font({ord("é")}, [("DejaVu Sans", dejavu)]) == "DejaVu Sans"
    assert covering_font({ord("好")}, last_resort) is None  # boxes are not the name
