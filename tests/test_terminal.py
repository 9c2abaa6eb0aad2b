"""Text from data reaches a terminal escaped, whichever command renders it: a review, a
class name, a column or file name holding ESC[2J (clear the screen) or an OSC sequence
(retitle the window) is shown as \\x1b..., never sent raw, and never read as Rich
markup. One function (terminal.visible) does it; these tests hold each renderer to it."""

from __future__ import annotations

import io
import json

import pytest
from click.testing import CliRunner
from conftest import sample_rows, write_csv
from rich.console import Console

from rnncli.cli.main import cli
from rnncli.core.terminal import visible
from rnncli.render import output

NASTY = "\x1b[2J\x1b]0;pwned\x07[bold]x[/]"


def _clean(shown: str) -> None:
    assert "\x1b" not in shown and "\x07" not in shown, repr(shown)
    assert "\\x1b[2J" in shown and "\\x1b]0;pwned\\x07" in shown, repr(shown)
    assert "[bold]x[/]" in shown  # literal, not markup


def test_visible_escapes_controls_and_keeps_line_breaks_only_when_asked():
    assert visible("a\x1b[2Jb\nc\td\x85") == "a\\x1b[2Jb\\x0ac\td\\x85"
    assert visible("a\x1b\nb", lines=True) == "a\\x1b\nb"


def test_cells_and_notes_go_through_it():
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=True, width=200)
    output.tell(console, f"note {NASTY}")
    console.print(output.cell(NASTY))
    _clean(stream.getvalue().replace("\x1b[0m", "").replace("\x1b[1m", ""))


def test_error_messages_are_escaped(tmp_path):
    """A column name from the file, in the error that lists the columns."""
    data = write_csv(tmp_path / "d.csv", [["a", "1"]], header=(f"review{NASTY}", "label"))
    result = CliRunner().invoke(cli, ["train", str(data), "--text-col", "nope", "-o",
                                      str(tmp_path / "m")])
    assert result.exit_code == 3, result.output
    _clean(result.output)


def test_report_notes_are_escaped(monkeypatch, tmp_path):
    pytest.importorskip("matplotlib")
    from rnncli.report import build as report

    monkeypatch.setattr(report, "write_report",
                        lambda *a, **k: (tmp_path / "index.html", [f"skipped {NASTY}"]))
    result = CliRunner().invoke(cli, ["report", "-o", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    _clean(result.output)


@pytest.mark.slow
def test_evaluate_errors_table_and_info_are_escaped(old_model, tmp_path):
    rows = [[f"{NASTY} {text}", {"positive": "negative", "negative": "positive"}[label]]
            for text, label in sample_rows(40)]  # labels swapped: most texts are errors
    data = write_csv(tmp_path / "wrong.csv", rows)
    result = CliRunner().invoke(cli, ["evaluate", str(data), "-m", str(old_model),
                                      "--errors", "3", "-f", "table"])
    assert result.exit_code == 0, result.output
    assert "most confidently wrong" in result.output
    _clean(result.output)

    manifest_path = old_model / "rnncli.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["data"]["file"] = f"reviews{NASTY}.csv"
    manifest_path.write_text(json.dumps(manifest))
    result = CliRunner().invoke(cli, ["info", "-m", str(old_model), "-f", "table"])
    assert result.exit_code == 0, result.output
    _clean(result.output)
