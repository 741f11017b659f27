"""Writing files safely: one atomic-write helper for checkpoints, caches, dumps and chat saves.

A file is written to a temporary name in its own folder, fsynced, then renamed over the target,
so a reader (or a crash at any moment) only ever sees the old file or the whole new one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bookgen.errors import BookgenError


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that `path` is either the old file or the whole new one."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise BookgenError(f"cannot write to {path.parent}: {err.strerror or err}") from err
    try:
        with os.fdopen(fd, "wb") as f:
            _chmod_like_open(f.fileno())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise BookgenError(f"cannot write {path}: {err.strerror or err}") from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)  # e.g. a second Ctrl-C: leave no temporary file
        raise
    _fsync_dir(path.parent)


def _read_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


_UMASK = _read_umask()  # read once: os.umask can only be read by setting it


def _chmod_like_open(fd: int) -> None:
    # mkstemp makes files only the owner can read (0600); give the permissions a plain open()
    # would, so a checkpoint can be shared like any other file.
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
    except (AttributeError, OSError):  # no fchmod on Windows
        pass


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable on power loss (POSIX); not possible on every platform.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """Fill a temporary folder beside `path`, then rename it to `path` in one step.

    For what is too large for `atomic_write`'s bytes (a token cache written in chunks): a
    crash leaves only a hidden `.name.*.tmp` folder that no reader looks at, never a partial
    `path`. If `path` appeared meanwhile (another process finished first), it is kept and
    the new folder dropped. Files written inside should be fsynced by the writer.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    except OSError as err:
        raise BookgenError(f"cannot write to {path.parent}: {err.strerror or err}") from err
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)
        try:
            os.rename(tmp, path)
        except OSError:
            if not path.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another writer won: theirs is as good
        _fsync_dir(path.parent)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BookgenError(f"cannot write {path}: {err.strerror or err}") from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
