"""rnncli report: the curves (checked against scikit-learn), the files, the page (escaped
text, embedded plots, explained errors) and its failures."""

from __future__ import annotations

import base64
import json
import re
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import sample_rows, write_csv

from rnncli.cli.main import cli
from rnncli.report.build import pr_curve, roc_curve

slow = pytest.mark.slow
PNG = b"\x89PNG\r\n\x1a\n"
PLOTS = ("roc", "pr", "reliability", "confusion", "scores", "learning")


def invoke(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


@pytest.mark.parametrize("seed", range(4))
def test_curves_match_scikit_learn(seed):
    from sklearn.metrics import precision_recall_curve, roc_auc_score
    from sklearn.metrics import roc_curve as sk_roc

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.random(300) * 0.7 + 0.3 * y, 2)  # ties included
    fpr, tpr = roc_curve(y, s)
    sk_fpr, sk_tpr, _ = sk_roc(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    assert abs(np.trapezoid(tpr, fpr) - roc_auc_score(y, s)) < 1e-12
    recall, precision = pr_curve(y, s)
    sk_precision, sk_recall, _ = precision_recall_curve(y, s)
    np.testing.assert_allclose(recall, sk_recall[::-1])
    np.testing.assert_allclose(precision, sk_precision[::-1])


@slow
def test_report_writes_the_plots_and_one_self_contained_page(gru_model, tmp_path):
    out = tmp_path / "report"
    result = invoke("report", "-m", gru_model, "-o", out, "--errors", "5")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out / "index.html")
    for name in PLOTS:
        assert (out / f"{name}.png").read_bytes().startswith(PNG)
    page = (out / "index.html").read_text(encoding="utf-8")
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == len(PLOTS)
    assert all(base64.b64decode(i).startswith(PNG) for i in images)
    assert "src=\"http" not in page and "<script" not in page  # nothing fetched or run
    figures = json.loads(invoke("evaluate", "-m", gru_model, "-f", "json", "--errors",
                                "5").stdout)
    assert f"<th>accuracy</th><td>{figures['accuracy']:.4f}</td>" in page
    assert f"<th>ece</th><td>{figures['ece']:.4f}</td>" in page
    assert page.count("<tr><td class='text'>") == len(figures["errors"]) > 0
    cells = re.findall(r"<td class='text'>(.*?)</td>", page, re.S)
    assert any('<span class="for' in c or '<span class="against' in c for c in cells)
    again = invoke("report", "-m", gru_model, "-o", out)  # an earlier report is replaced
    assert again.exit_code == 0 and not list(out.glob(".*.tmp"))


@slow
def test_report_on_a_file_escapes_its_texts(gru_model, tmp_path):
    rows = [["<script>alert(1)</script> a great & moving film", "negative"],
            ["dull <b>boring</b> \"awful\"", "positive"], ["great", "positive"],
            ["bad", "negative"]]
    data = write_csv(tmp_path / "odd.csv", rows)
    result = invoke("report", str(data), "-m", gru_model, "-o", tmp_path / "r")
    assert result.exit_code == 0, result.output
    page = (tmp_path / "r" / "index.html").read_text(encoding="utf-8")
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<b>boring</b>" not in page and "odd.csv" in page


@slow
def test_class_names_are_text_not_mathtext(tmp_path, train_model, no_fit):
    odd = {"negative": "$\\badcmd$", "positive": "_good <b>"}
    data = write_csv(tmp_path / "odd.csv", [[text, odd[label]]
                                            for text, label in sample_rows(240)])
    model = train_model(tmp_path / "m", data, "--positive-label", "_good <b>")
    result = invoke("report", "-m", model, "-o", tmp_path / "r", "--errors", "0")
    assert result.exit_code == 0, result.output
    page = (tmp_path / "r" / "index.html").read_text(encoding="utf-8")
    assert "_good &lt;b&gt;" in page and "<b>" not in page
    assert "Not listed" in page


@slow
def test_report_failures_are_clear(gru_model, tmp_path, monkeypatch):
    target = tmp_path / "file"
    target.write_text("x")
    result = invoke("report", "-m", gru_model, "-o", target)
    assert result.exit_code == 2 and "not a directory" in result.output
    result = invoke("report", "-m", tmp_path / "none", "-o", tmp_path / "r")
    assert result.exit_code == 4
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    result = invoke("report", "-m", gru_model, "-o", tmp_path / "r")
    assert result.exit_code == 2 and "pip install 'rnncli[report]'" in result.output
    assert not (tmp_path / "r").exists()


@slow
def test_one_class_and_odd_targets(gru_model, tmp_path):
    data = write_csv(tmp_path / "one.csv", [["great film", "positive"], ["fine", "positive"]])
    result = invoke("report", str(data), "-m", gru_model, "-o", tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert "they are empty" in result.stderr
    result = invoke("report", "-m", gru_model, "-o", "")
    assert result.exit_code == 2 and "-o is empty" in result.output
    (tmp_path / "d" / "index.html").mkdir(parents=True)
    result = invoke("report", "-m", gru_model, "-o", tmp_path / "d")
    assert result.exit_code == 2 and "index.html: is a directory" in result.output
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["index.html"]
