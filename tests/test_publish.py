"""Publishing a directory (fsio.publish) and checking an archive, on fake directories and
direct calls: the target checked again just before the swap, fsync failures, staging
permissions, a malformed config.json. The few tests that need a real model say so."""

from __future__ import annotations

import errno
import json
import os
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from rnncli.cli.main import cli
from rnncli.core import fsio
from rnncli.core.errors import ModelError, UsageError
from rnncli.modeldir import artifacts


def _model_dir(path: Path, marker: str) -> Path:
    path.mkdir()
    (path / artifacts.MANIFEST).write_text("{}")
    (path / "weights").write_text(marker)
    return path


def _staged(tmp_path: Path, target: Path, marker: str = "new") -> Path:
    staged = tmp_path / f".{target.name}.tmp-test"
    _model_dir(staged, marker)
    (staged / "variables").mkdir()
    (staged / "variables" / "data").write_text("w")
    return staged


def test_publish_swaps_in_the_new_directory(tmp_path):
    target = _model_dir(tmp_path / "m", "old")
    fsio.publish(_staged(tmp_path, target), target, artifacts.check_target)
    assert (target / "weights").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_a_directory_put_at_the_target_meanwhile_is_not_destroyed(tmp_path):
    """check_target ran when training began; someone then put their own files there."""
    target = tmp_path / "m"
    artifacts.check_target(target)  # nothing there yet: fine
    target.mkdir()
    (target / "thesis.tex").write_text("years of work")
    staged = _staged(tmp_path, target)
    with pytest.raises(UsageError, match="not an rnncli model directory"):
        fsio.publish(staged, target, artifacts.check_target)
    assert (target / "thesis.tex").read_text() == "years of work"


def test_a_model_put_at_the_target_meanwhile_is_replaced(tmp_path):
    target = tmp_path / "m"
    staged = _staged(tmp_path, target)
    _model_dir(target, "other run")
    fsio.publish(staged, target, artifacts.check_target)
    assert (target / "weights").read_text() == "new"


@pytest.fixture
def fsynced(monkeypatch):
    """Every path fsync is called on, in order."""
    paths: list[str] = []
    real_open, real_fsync = os.open, os.fsync
    names: dict[int, str] = {}

    def tracking_open(path, flags, *args, **kwargs):
        fd = real_open(path, flags, *args, **kwargs)
        names[fd] = str(path)
        return fd

    def tracking_fsync(fd):
        paths.append(names.get(fd, "?"))
        return real_fsync(fd)

    monkeypatch.setattr(os, "open", tracking_open)
    monkeypatch.setattr(os, "fsync", tracking_fsync)
    return paths


def test_every_file_and_subdirectory_is_fsynced(tmp_path, fsynced):
    target = tmp_path / "m"
    staged = _staged(tmp_path, target)
    fsio.publish(staged, target, artifacts.check_target)
    done = [Path(p).relative_to(tmp_path).as_posix() for p in fsynced]
    inner = ".m.tmp-test/variables"
    assert done.index(f"{inner}/data") < done.index(inner) < done.index(".m.tmp-test")
    assert ".m.tmp-test/weights" in done
    assert done[-1] == "."  # the parent, after the rename


def test_eio_from_fsync_on_a_file_stops_the_publish(tmp_path, monkeypatch):
    target = _model_dir(tmp_path / "m", "old")
    staged = _staged(tmp_path, target)
    real_fsync = os.fsync

    def failing(fd):
        if not os.path.isdir(f"/proc/self/fd/{fd}"):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(OSError) as caught:
        fsio.publish(staged, target, artifacts.check_target)
    assert caught.value.errno == errno.EIO
    assert (target / "weights").read_text() == "old"


def test_a_directory_that_cannot_be_fsynced_is_let_go(tmp_path, monkeypatch):
    target = tmp_path / "m"
    staged = _staged(tmp_path, target)
    real_fsync = os.fsync

    def no_dir_fsync(fd):
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", no_dir_fsync)
    fsio.publish(staged, target, artifacts.check_target)
    assert (target / "weights").read_text() == "new"


def test_staging_never_touches_the_process_umask(tmp_path, monkeypatch):
    mask = os.umask(0o027)
    try:
        def forbidden(*args):
            raise AssertionError("os.umask called while other threads may be creating files")

        monkeypatch.setattr(os, "umask", forbidden)
        with fsio.staging(tmp_path / "m") as staged:
            assert staged.stat().st_mode & 0o777 == 0o750
        assert not staged.exists()
    finally:
        monkeypatch.undo()
        os.umask(mask)


def _archive(path: Path, config) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("metadata.json", "{}")
    return path


@pytest.mark.parametrize("layer_config", ["a string", ["a", "list"], 7])
def test_a_layer_config_of_the_wrong_type_is_a_model_error(tmp_path, layer_config):
    config = {"module": "keras.src.models.functional", "class_name": "Functional",
              "config": {"layers": [{"module": "keras.layers",
                                     "class_name": "TextVectorization",
                                     "config": layer_config}]}}
    with pytest.raises(ModelError, match="malformed"):
        artifacts.check_archive(_archive(tmp_path / "model.keras", config))


@pytest.mark.slow
def test_a_directory_made_at_out_during_training_survives(tmp_path, tiny_csv, monkeypatch,
                                                          no_fit, no_onnx):
    """End to end: the --out directory appears (someone else's files) while the network
    trains; training ends with exit 2 and leaves those files as they were."""
    from conftest import TINY

    from rnncli.training import fitloop

    out = tmp_path / "m"
    real_fit = fitloop.fit  # no_fit's: the directory appears where fitting would be

    def fit_while_someone_writes(*args, **kwargs):
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(fitloop, "fit", fit_while_someone_writes)
    result = CliRunner().invoke(cli, ["train", str(tiny_csv), "-o", str(out), *TINY,
                                      "--no-ngrams"])
    assert result.exit_code == 2, result.output
    assert "not an rnncli model directory" in result.output
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


@pytest.mark.slow
def test_export_force_rechecks_and_reports_a_full_disk(gru_model, tmp_path, monkeypatch):
    """export --force: a directory that became something else during the export is left
    alone (exit 2); a full disk is reported as such, not as a problem with stdout."""
    import keras

    dest = tmp_path / "served"
    real_export = keras.Model.export

    def export_while_someone_writes(self, path, *args, **kwargs):
        real_export(self, path, *args, **kwargs)
        dest.mkdir(exist_ok=True)
        (dest / "notes.txt").write_text("mine")

    monkeypatch.setattr(keras.Model, "export", export_while_someone_writes)
    result = CliRunner().invoke(cli, ["export", "-m", str(gru_model), "-o", str(dest),
                                      "--force"])
    assert result.exit_code == 2 and "not a SavedModel directory" in result.output
    assert [p.name for p in dest.iterdir()] == ["notes.txt"]

    def full_disk(self, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(keras.Model, "export", full_disk)
    result = CliRunner().invoke(cli, ["export", "-m", str(gru_model), "-o",
                                      str(tmp_path / "new")])
    assert result.exit_code == 2, result.output
    assert "cannot write the SavedModel (No space left on device)" in result.output
    assert not (tmp_path / "new").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_without_renameat2_two_renames_swap_and_a_failure_puts_the_old_back(tmp_path,
                                                                            monkeypatch):
    """Where RENAME_EXCHANGE is missing (other kernels, filesystems, macOS) the old model
    is renamed aside, the new one put in its place, then the old one removed; if the
    second rename fails the old model goes back."""
    monkeypatch.setattr(fsio, "_exchange", lambda a, b: False)
    target = _model_dir(tmp_path / "m", "old")
    fsio.publish(_staged(tmp_path, target), target, artifacts.check_target)
    assert (target / "weights").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]

    staged = _staged(tmp_path, target, "newer")
    real_rename = os.rename

    def second_rename_fails(src, dst):
        if Path(src) == staged:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", second_rename_fails)
    with pytest.raises(OSError):
        fsio.publish(staged, target, artifacts.check_target)
    assert (target / "weights").read_text() == "new"
    assert not list(tmp_path.glob(".m.old-*"))


def test_a_failed_flush_after_the_swap_is_not_reported_as_a_failed_publish(tmp_path,
                                                                           monkeypatch):
    """Once the new directory is in place the old one is gone: saying "the old model was
    left as it was" would be false. The parent's fsync after the rename is best effort."""
    target = _model_dir(tmp_path / "m", "old")
    staged = _staged(tmp_path, target)
    real_fsync = os.fsync

    def parent_fails(fd):
        if os.path.samefile(f"/proc/self/fd/{fd}", tmp_path):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", parent_fails)
    fsio.publish(staged, target, artifacts.check_target)
    assert (target / "weights").read_text() == "new"


def test_leftovers_of_another_target_are_not_touched(tmp_path):
    """A killed run's staging directory is cleared under the lock; one of a target whose
    name merely starts like this one's (m.tmp-x) belongs to another lock."""
    mine = tmp_path / f".m.tmp-{'a1' * (fsio.STAGING_HEX // 2)}"
    theirs = tmp_path / f".m.tmp-x.tmp-{'b2' * (fsio.STAGING_HEX // 2)}"
    mine.mkdir()
    theirs.mkdir()
    with fsio.lock(tmp_path / "m"):
        pass
    assert not mine.exists() and theirs.exists()


@pytest.mark.parametrize("given", [".", "./", "m/..", "m/../."])
def test_output_paths_are_made_absolute(tmp_path, monkeypatch, given):
    """``-o .``: what rnncli keeps beside a target (lock, staging, resume state) goes in
    its parent, which ``Path(".").parent`` is not: it is "." itself, inside the target."""
    (tmp_path / "m").mkdir()
    monkeypatch.chdir(tmp_path)
    assert fsio.resolve_output(given) == tmp_path


def test_the_root_is_never_an_output(monkeypatch):
    monkeypatch.chdir("/")
    with pytest.raises(UsageError, match="root cannot be replaced"):
        fsio.resolve_output(".")


@pytest.mark.slow
def test_train_into_the_current_directory(tmp_path, tiny_csv, monkeypatch, no_fit, no_onnx):
    """``cd m && rnncli train ... -o .``: a non-empty directory that is no model is refused
    before training; an empty one (and then the model it holds) is replaced, nothing is
    left inside or beside it, and the person is told that the shell must ``cd .``."""
    from conftest import TINY

    from rnncli.training import fitloop

    here = tmp_path / "m"
    here.mkdir()
    (here / "thesis.tex").write_text("mine")
    monkeypatch.chdir(here)
    fits = []
    real_fit = fitloop.fit
    monkeypatch.setattr(fitloop, "fit", lambda *a, **k: fits.append(1) or real_fit(*a, **k))
    args = ["train", str(tiny_csv), *[a for a in TINY if a != "--quiet"], "--no-ngrams"]
    result = CliRunner().invoke(cli, [*args, "-o", "."])
    assert result.exit_code == 2 and "not an rnncli model directory" in result.output
    assert fits == [] and [p.name for p in here.iterdir()] == ["thesis.tex"]

    (here / "thesis.tex").unlink()
    for given in (".", "./"):  # into the empty directory, then over the model it holds
        monkeypatch.chdir(here)
        result = CliRunner().invoke(cli, [*args, "-o", given])
        assert result.exit_code == 0, result.output
        assert f"saved model to {here}" in result.output and "'cd .'" in result.output
        assert (here / artifacts.MANIFEST).is_file()
        assert not [p for p in here.iterdir() if p.name.startswith(".")]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no lock, no staging
    assert len(fits) == 2
