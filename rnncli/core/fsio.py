"""Filesystem transactions for everything rnncli writes: output paths, the lock beside a
target, staging directories, the atomic swap (renameat2 RENAME_EXCHANGE, or two renames
with the old directory kept aside), fsync and free space.

Light: standard library only. What a model directory holds is modeldir/artifacts.py's business;
this module only moves directories into place, the old one or the new, never a mix.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import re
import secrets
import shutil
from collections.abc import Callable
from glob import escape as glob_escape
from pathlib import Path

from rnncli.core.errors import UsageError

STAGING_HEX = 12  # a staging directory is .<target>.tmp-<this many hex digits>
_STAGING = re.compile(rf"\.tmp-[0-9a-f]{{{STAGING_HEX}}}")


def resolve_output(path: str | Path) -> Path:
    """An output path, made absolute: the lock, the staging directories and the resume
    state live beside the target, in its parent, so ``-o .`` must name the current
    directory by its name (``Path(".").parent`` is ``.`` itself, which would put them
    inside the target). A symlink is followed, so the link stays and its target is
    replaced."""
    path = Path(path)
    if path.is_symlink():
        try:
            path = path.resolve(strict=False)
        except (RuntimeError, OSError) as exc:  # a symlink loop
            raise UsageError(f"{path}: cannot follow this symlink ({exc}); choose another "
                             "output location") from exc
    absolute = Path(os.path.abspath(path))  # "m/.." is m's parent, as the shell reads it
    if absolute == absolute.parent:
        raise UsageError(f"{path}: the filesystem root cannot be replaced; choose another "
                         "output location")
    return absolute


def replaces_cwd(target: Path) -> bool:
    """Whether the current directory is ``target`` or inside it (``-o .``). Publishing
    swaps the directory itself, so a shell sitting there is left in the old, deleted one:
    the command then tells the person to ``cd .``."""
    try:
        cwd = Path.cwd()
    except FileNotFoundError:
        return False
    return cwd == target or target in cwd.parents


CWD_NOTE = "your shell is still in the directory it replaced: run 'cd .' to see the new one"


def check_parent(target: Path) -> None:
    """The nearest existing parent of ``target`` must be a directory we may write in."""
    for parent in target.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{target}: {parent} is a file, not a directory; choose "
                                 "another --out")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise UsageError(f"{target}: cannot write in {parent} (permission denied); "
                                 "choose another --out")
            return


@contextlib.contextmanager
def writable(target: Path):
    """OS errors while preparing an output location are the user's to fix: exit 2."""
    try:
        yield
    except OSError as exc:
        raise UsageError(f"{target}: cannot write there ({exc.strerror or exc}); choose "
                         "another output location") from exc


@contextlib.contextmanager
def lock(target: Path):
    """Hold an exclusive lock on ``target`` while a command writes it (a whole training
    run, an export). The lock file beside it is removed on release: unlinked while still
    locked, and a waiter checks that it locked the file now at the path (filelock keeps
    its Unix lock files for this reason; rnncli leaves nothing beside a model)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; publishing is still atomic
        yield
        return
    with writable(target):
        target.parent.mkdir(parents=True, exist_ok=True)
    path = target.parent / f".{target.name}.lock"
    while True:
        with writable(target):
            fh = open(path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            fh.close()
            raise UsageError(f"{target}: another rnncli command is writing "
                             "there; wait for it or choose another --out") from exc
        # The holder before us unlinks the file on release; make sure we locked the file
        # that is at the path now, not one that was just removed.
        try:
            if os.fstat(fh.fileno()).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        fh.close()
    try:
        _remove_leftovers(target)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # leave no litter beside the model directory
        fh.close()  # releases the lock


def free_bytes(directory: Path) -> int | None:
    """Free space where ``directory`` is (or would be created); None if unknown."""
    for path in (directory, *directory.absolute().parents):
        if path.exists():
            try:
                return shutil.disk_usage(path).free
            except OSError:
                return None
    return None


def _remove_leftovers(target: Path) -> None:
    """Staging directories of a run that was killed (SIGKILL, power loss) before it could
    clean up; safe under the lock, since no other run writes beside ``target``."""
    for stale in target.parent.glob(f".{glob_escape(target.name)}.tmp-*"):
        if _STAGING.fullmatch(stale.name[len(target.name) + 1:]):  # not ".m.tmp-x"'s own
            shutil.rmtree(stale, ignore_errors=True)
    for stale in target.parent.glob(f".{glob_escape(target.name)}.old-*"):
        if target.is_dir():  # the swap finished; the old model is no longer needed
            shutil.rmtree(stale, ignore_errors=True)
        elif not target.exists():  # killed between the two renames: put the old one back
            os.rename(stale, target)


@contextlib.contextmanager
def staging(target: Path):
    """A fresh directory beside ``target``; removed again unless it was published.

    Made with mode 0777 less the umask, as a published model should be (mkdtemp's 0700
    would make it private); the kernel applies the umask, so it is never changed here.
    """
    with writable(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        while True:
            tmp = target.parent / f".{target.name}.tmp-{secrets.token_hex(STAGING_HEX // 2)}"
            try:
                os.mkdir(tmp, 0o777)
                break
            except FileExistsError:
                continue
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish(staged: Path, target: Path, check: Callable[[Path], None]) -> None:
    """Swap a verified staged directory into place: the old model or the new, never a mix.

    ``check(target)`` runs just before the swap (``artifacts.check_target`` for a model): the
    target may have changed since the run began (someone put a directory there), and the
    caller holds the lock, so nothing changes between this check and the swap.
    """
    _fsync_tree(staged)
    check(target)
    was_cwd = replaces_cwd(target)
    if not target.exists():
        os.rename(staged, target)
    elif _exchange(staged, target):
        shutil.rmtree(staged, ignore_errors=True)  # now holds the old model
    else:  # no renameat2: two renames, the old model kept aside until the new one is in
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.rename(target, old)
        try:
            os.rename(staged, target)
        except OSError:
            os.rename(old, target)  # put the old model back before reporting the failure
            raise
        shutil.rmtree(old, ignore_errors=True)
    # The new directory is in place and the old one gone: from here a failure must not be
    # reported as one that left the old model. Flushing the rename is best effort.
    with contextlib.suppress(OSError):
        _fsync(target.parent, directory=True)
    if was_cwd:  # this process too was left in the deleted directory
        with contextlib.suppress(OSError):
            os.chdir(target)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with Linux renameat2(RENAME_EXCHANGE); False if unsupported."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    if not hasattr(libc, "renameat2"):
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _fsync_tree(root: Path) -> None:
    """Flush every file and directory under ``root`` (innermost first) to the disk."""
    for dirpath, _, filenames in os.walk(root, topdown=False):
        for name in filenames:
            _fsync(Path(dirpath) / name, directory=False)
        _fsync(Path(dirpath), directory=True)


def _fsync(path: Path, *, directory: bool) -> None:
    """fsync one path. A failure on a file (EIO: the data may not be on the disk) raises;
    a directory that cannot be fsynced (Windows, where directories cannot be opened at
    all; some filesystems: EINVAL, ENOTSUP) is let go, since its entries are as safe as
    that filesystem makes them."""
    if directory and os.name == "nt":
        return
    if directory:
        flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    else:  # Windows flushes (FlushFileBuffers) only through a handle open for writing
        flags = os.O_RDWR if os.name == "nt" else os.O_RDONLY
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    except OSError as exc:
        if not (directory and exc.errno in (errno.EINVAL, errno.ENOTSUP, errno.EBADF)):
            raise
    finally:
        os.close(fd)
