import csv
import io
import json

from rnncli.inference.metrics import CLASS_KEYS, METRIC_KEYS, evaluate_scores, round_figures
from rnncli.render.output import RecordWriter
from rnncli.render.tables import render_figures

RECORDS = [
    {"text": "good, \"really\"", "label": "pos", "score": 0.9, "status": "ok"},
    {"text": "", "label": None, "score": None, "status": "empty"},
    {"text": "bad\tthing", "label": "neg", "score": 0.1, "status": "ok"},
]


def _render(fmt, batches):
    stream = io.StringIO()
    writer = RecordWriter(fmt, stream)
    for batch in batches:
        writer.write(batch)
    writer.close()
    return stream.getvalue()


def test_jsonl_one_line_per_record():
    lines = _render("jsonl", [RECORDS[:2], RECORDS[2:]]).splitlines()
    assert [json.loads(line) for line in lines] == RECORDS


def test_json_is_one_array_even_when_streamed():
    assert json.loads(_render("json", [RECORDS[:1], RECORDS[1:]])) == RECORDS
    assert json.loads(_render("json", [])) == []


def test_csv_round_trips():
    rows = list(csv.DictReader(io.StringIO(_render("csv", [RECORDS]))))
    assert [r["text"] for r in rows] == [r["text"] for r in RECORDS]
    assert rows[1]["label"] == "" and rows[1]["status"] == "empty"


def test_label_keeps_one_line_per_input():
    assert _render("label", [RECORDS]) == "pos\n\nneg\n"


def test_figures_json_has_exactly_the_documented_keys(capsys):
    render_figures(evaluate_scores([0, 1], [0.2, 0.7]), "json")
    out = json.loads(capsys.readouterr().out)
    assert list(out) == list(METRIC_KEYS + CLASS_KEYS)


def _cells(out: str) -> dict[str, list[str]]:
    """A Rich table's body rows by their first cell: {"accuracy": ["0.4000"], ...}."""
    rows = (line.split("│") for line in out.splitlines() if "│" in line)
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows}


def test_figures_table_for_people(capsys):
    # 2 of 5 right; the errors are not symmetric: 2 negatives called positive, 1 positive
    # called negative, so a transposed confusion matrix or swapped classes show
    figures = evaluate_scores([0, 0, 0, 1, 1], [0.2, 0.6, 0.7, 0.9, 0.4])
    render_figures(figures, "table")
    out = capsys.readouterr().out
    assert "confusion matrix" in out and "per class" in out
    cells = _cells(out)
    assert cells["accuracy"] == ["0.4000"] and cells["n"] == ["5"]
    assert cells["precision"] == ["0.3333"] and cells["recall"] == ["0.5000"]
    assert cells["roc_auc"] == [f"{figures['roc_auc']:.4f}"] == ["0.6667"]
    assert cells["actual negative"] == ["1", "2"] and cells["actual positive"] == ["1", "1"]
    assert cells["0"] == ["0.5000", "0.3333", "0.4000", "3"]  # precision, recall, F1, support
    assert cells["1"] == ["0.3333", "0.5000", "0.4000", "2"]


def test_multi_class_table_prints_class_names_literally(capsys):
    scores = [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.3, 0.5], [0.5, 0.4, 0.1]]
    figures = round_figures(evaluate_scores([0, 1, 2, 1], scores,
                                            class_names=["[red]x", "neutral", "[bold]"]))
    render_figures(figures, "table", title="eval [on] data")
    out = capsys.readouterr().out
    for text in ("[red]x", "neutral", "actual [red]x", "predicted [bold]", "actual neutral",
                 "macro F1", "weighted precision", "one-vs-rest", "per class",
                 "confusion matrix", "eval [on] data"):
        assert text in out, text
    assert "predicted positive" not in out
    cells = _cells(out)
    assert cells["accuracy"] == ["0.7500"] and cells["macro F1"] == ["0.7778"]
    assert cells["actual [red]x"] == ["1", "0", "0"]
    assert cells["actual neutral"] == ["1", "1", "0"]  # one neutral taken for [red]x
    assert cells["neutral"] == ["1.0000", "0.5000", "0.6667", "2"]


def test_table_prints_texts_literally_never_as_markup():
    records = [{"text": "closing [/] tag and [bold]x[/bold]", "label": "pos[/]", "score": 0.5,
                "status": "ok"}]
    out = _render("table", [records])
    assert "closing [/] tag and [bold]x[/bold]" in out and "pos[/]" in out


def test_table_is_written_batch_by_batch():
    stream = io.StringIO()
    writer = RecordWriter("table", stream)
    writer.write(RECORDS[:1])
    assert "good" in stream.getvalue()  # visible before the input ends
    writer.write(RECORDS[2:])
    writer.close()
    assert "bad" in stream.getvalue()


def test_epoch_line_survives_a_diverged_epoch(capsys):
    from rnncli.render.output import PlainReporter

    reporter = PlainReporter()
    reporter.train_begin(3, 10)
    reporter.epoch_end(2, {"loss": None, "accuracy": 0.5, "val_loss": None}, 1.0)
    err = capsys.readouterr().err
    assert "epoch 2/3  loss -  acc 0.5000  val_loss -" in err


def test_stdin_windows_close_at_their_line_or_byte_limit():
    from rnncli.inference.predict import _batched

    lines = [b"x" * 10] * 5
    assert [len(w) for w in _batched(lines, 100, max_bytes=25)] == [3, 2]
    assert [len(w) for w in _batched(lines, 2, max_bytes=1000)] == [2, 2, 1]
    assert [len(w) for w in _batched(lines, 2)] == [2, 2, 1]
