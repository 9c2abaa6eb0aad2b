"""Progress during an epoch: the plain reporter's throttled line (rows, rows/s, time left)
and the Rich batch bar's rows/s and time left, on a fake clock."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from conftest import TINY
from rich.console import Console

from rnncli.render import output


@pytest.fixture
def clock(monkeypatch):
    """output.py's time.perf_counter, set by the test: ``clock.now = 82``."""
    fake = SimpleNamespace(now=0.0)
    monkeypatch.setattr(output, "time", SimpleNamespace(perf_counter=lambda: fake.now))
    return fake


def _steps(reporter, clock, *at):
    """Batches ``step`` done at ``seconds``, for each (step, seconds) pair."""
    for step, seconds in at:
        clock.now = seconds
        reporter.step_end(step)


def test_plain_progress_line_says_rows_rate_and_time_left_at_most_once_a_minute(
        clock, capsys):
    reporter = output.PlainReporter()
    reporter.train_begin(10, 100, 100_000, 1000)
    reporter.epoch_begin(2)
    _steps(reporter, clock, (10, 20.0), (30, 59.9))
    assert capsys.readouterr().err == ""  # under a minute: nothing yet
    _steps(reporter, clock, (41, 82.0))
    assert capsys.readouterr().err == (
        "epoch 2/10  41,000/100,000 rows (41%)  500 rows/s  about 1m 58s left\n")
    _steps(reporter, clock, (50, 100.0), (60, 141.9))  # within a minute of the last line
    assert capsys.readouterr().err == ""
    _steps(reporter, clock, (80, 142.0))
    assert capsys.readouterr().err == (
        "epoch 2/10  80,000/100,000 rows (80%)  563 rows/s  about 36s left\n")
    _steps(reporter, clock, (100, 300.0))  # the last batch: the epoch line follows
    assert capsys.readouterr().err == ""


def test_a_short_epoch_prints_only_its_epoch_line_and_quiet_prints_none(clock, capsys):
    reporter = output.PlainReporter()
    reporter.train_begin(3, 10, 320, 32)
    reporter.epoch_begin(1)
    _steps(reporter, clock, *((step, step * 5.9) for step in range(1, 11)))
    reporter.epoch_end(1, {"loss": 0.5, "accuracy": 0.75}, 59.0)
    assert capsys.readouterr().err == "epoch 1/3  loss 0.5000  acc 0.7500  59.0s\n"
    quiet = output.PlainReporter(quiet=True)
    quiet.train_begin(3, 10, 320, 32)
    quiet.epoch_begin(1)
    _steps(quiet, clock, (5, 1000.0))
    assert capsys.readouterr().err == ""


def test_the_interval_is_the_module_constant(clock, capsys, monkeypatch):
    monkeypatch.setattr(output, "PROGRESS_EVERY", 5.0)
    reporter = output.PlainReporter()
    reporter.train_begin(1, 4, 100, 32)  # the last batch has 4 rows
    reporter.epoch_begin(1)
    _steps(reporter, clock, (1, 4.0), (2, 5.0), (3, 8.0))
    assert capsys.readouterr().err == "epoch 1/1  64/100 rows (64%)  13 rows/s  about 3s left\n"


def test_an_epoch_resumed_inside_counts_its_pace_from_the_resume(clock, capsys, monkeypatch):
    """Resumed at step 50 of 100: the rate is of the batches since, the rows done and
    left are of the whole epoch."""
    monkeypatch.setattr(output, "PROGRESS_EVERY", 5.0)
    reporter = output.PlainReporter()
    reporter.train_begin(3, 100, 1000, 10)
    reporter.epoch_begin(2, 50)
    _steps(reporter, clock, (60, 10.0))
    assert capsys.readouterr().err == ("epoch 2/3  600/1,000 rows (60%)  10 rows/s  about "
                                       "40s left\n")


def test_time_left_reads_in_seconds_minutes_or_hours():
    assert [output._duration(s) for s in (0.4, 32, 59.6, 250, 3599, 7500)] == [
        "0s", "32s", "1m 00s", "4m 10s", "59m 59s", "2h 05m"]
    assert output._pace(4, 2.0, 100, 32) == (100, 50.0, 0.0)  # capped at the epoch's rows


def _rich_reporter() -> output.RichReporter:
    reporter = output.RichReporter()
    reporter.console = Console(file=io.StringIO(), width=200)
    return reporter


def _shown(reporter: output.RichReporter) -> str:
    """The progress bars' rows as the terminal shows them."""
    progress = reporter._progress
    console = Console(file=io.StringIO(), width=200, record=True)
    console.print(progress.make_tasks_table(progress.tasks))
    return console.export_text()


def test_the_rich_batch_bar_shows_rows_per_second_and_time_left(clock):
    reporter = _rich_reporter()
    reporter.train_begin(10, 100, 99_950, 1000)
    try:
        reporter.epoch_begin(1)
        clock.now = 20.0
        reporter.batch_end(25, {"loss": 0.6931, "accuracy": 0.5})
        batch = next(line for line in _shown(reporter).splitlines() if "batch" in line)
        assert re.search(r"25/100 +loss 0\.6931  acc 0\.5000 +1,250 rows/s  1m 00s left",
                         batch), batch
        clock.now = 50.0
        reporter.batch_end(100, {"loss": 0.5})  # the last batch is short: 99,950 rows
        assert reporter._progress.tasks[1].fields["pace"] == "1,999 rows/s  0s left"
        reporter.epoch_end(1, {"loss": 0.5}, 50.0)
        assert "rows/s" not in _shown(reporter)  # the next epoch starts afresh
    finally:
        reporter.train_end()


class _Logs(dict):
    """Batch figures that fail when read: the plain path must not read them."""

    def items(self):
        raise AssertionError("the batch's figures were read")


@pytest.mark.slow
def test_the_fit_loop_tells_the_plain_reporter_rows_and_steps_without_reading_figures():
    from rnncli.training import fitloop

    calls = []
    reporter = SimpleNamespace(
        wants_batches=False, train_begin=lambda *a: calls.append(("train_begin", *a)),
        epoch_begin=lambda e, first: calls.append(("epoch_begin", e, first)),
        step_end=lambda s: calls.append(("step_end", s)),
        batch_end=lambda s, logs: calls.append(("batch_end", s)))
    callback = fitloop.progress_callback(reporter, 3, 4, rows=100, batch_size=32)
    callback.on_train_begin()
    callback.on_epoch_begin(1)
    callback.on_train_batch_end(0, _Logs(loss=0.5))
    callback.on_train_batch_end(1, _Logs(loss=0.5))
    assert calls == [("train_begin", 3, 4, 100, 32), ("epoch_begin", 2, 0), ("step_end", 1),
                     ("step_end", 2)]
    # resumed at step 3 of epoch 2: that epoch counts on from there, the next from 0
    calls.clear()
    callback = fitloop.progress_callback(reporter, 3, 5, rows=100, batch_size=32,
                                         cut={"epoch": 2, "step": 3})
    callback.on_epoch_begin(1)
    callback.on_train_batch_end(0, _Logs(loss=0.5))
    callback.on_epoch_begin(2)
    assert calls == [("epoch_begin", 2, 3), ("step_end", 4), ("epoch_begin", 3, 0)]


@pytest.mark.slow
def test_train_prints_progress_lines_with_the_training_rows(tmp_path, tiny_csv, monkeypatch,
                                                            no_onnx):
    from rnncli.cli.main import cli

    monkeypatch.setattr(output, "PROGRESS_EVERY", 0.0)  # a line after every batch
    loud = [a for a in TINY if a != "--quiet"]
    result = CliRunner().invoke(cli, ["train", str(tiny_csv), "-o", str(tmp_path / "m"), *loud,
                                      "--no-ngrams"])
    assert result.exit_code == 0, result.output
    # "about 1m 05s left" on a loaded machine, where the first batch (tracing) is slow
    lines = re.findall(r"^epoch 1/1  (\d+)/(\d+) rows \(\d+%\)  [\d,]+ rows/s  about \d+[hms]"
                       r"( \d+[ms])? left$", result.output, re.M)
    train_rows = int(re.search(r"train/validation/test = (\d+)/", result.output)[1])
    assert lines and {int(total) for _, total, _ in lines} == {train_rows}
    assert [int(done) for done, _, _ in lines] == [32 * (i + 1) for i in range(len(lines))]
    assert len(lines) == -(-train_rows // 32) - 1  # every batch but the last
