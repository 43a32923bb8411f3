"""Atomic output: nothing half-written survives a crash, a full disk or a signal.

Every file or folder a command writes is first built under a temporary name in the *same*
directory — ``.cascade-<pid>-<random>.tmp`` (a file) or the same name as a folder — and renamed
into place only when complete. An exception (including ``KeyboardInterrupt`` and the
:class:`bot.interrupts.Interrupted` raised on SIGTERM) removes the temporary. What a SIGKILL
leaves behind is removed by :func:`sweep_stale` the next time anything writes into that
directory: a temporary is stale when the process named in it is gone (same machine) or it is
older than ``max_age``.

OS errors become one-line :class:`bot.errors.UserError` messages (:func:`os_error`), so disk full,
read-only or missing locations exit 2 with the path and the fix instead of a traceback.

API::

    with atomic_path(path) as tmp:      # write the file at tmp; renamed to path on success
        frame.to_csv(tmp)
    atomic_write_bytes(path, data)      # / atomic_write_text(path, text)
    with atomic_dir(folder) as tmp:     # fill the folder tmp; replaces folder on success
        (tmp / "equity.parquet").write_bytes(...)
    sweep_stale(directory)              # remove leftovers of killed runs (called by the above)
    with user_errors(path, "writing"):  # OSError -> UserError one-liner
        ...
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bot.errors import UserError

TEMP_PREFIX = ".cascade-"
TEMP_SUFFIX = ".tmp"
DEFAULT_MAX_AGE = 6 * 3600.0  # seconds; a temp whose owner cannot be identified is stale after this
_OWNER = re.compile(r"^\.cascade-(?P<pid>\d+)-[0-9a-f]+\.tmp$")

_FIXES = {
    errno.ENOSPC: "free disk space and re-run",
    errno.EDQUOT: "free disk space (quota exceeded) and re-run",
    errno.EROFS: "the location is read-only; choose a writable location",
    errno.EACCES: "permission denied; choose a location you can write to or fix its permissions",
    errno.EPERM: "operation not permitted; choose a location you can write to",
    errno.ENOENT: "the path does not exist; create it or fix the path",
    errno.ENOTDIR: "a part of the path is a file, not a folder; fix the path",
    errno.EISDIR: "the path is a folder, not a file; fix the path",
}


def temp_name() -> str:
    """A fresh temporary name owned by this process: ``.cascade-<pid>-<random>.tmp``."""
    return f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}"


def os_error(err: OSError, path: Path | str, action: str = "writing") -> UserError:
    """A one-line :class:`UserError` for an OS error while ``action`` ``path``."""
    fix = _FIXES.get(err.errno or -1, "check the path and re-run")
    reason = os.strerror(err.errno) if err.errno else str(err)
    return UserError(f"{action} {path} failed: {reason}; {fix}")


@contextmanager
def user_errors(path: Path | str, action: str = "writing") -> Iterator[None]:
    """Turn an ``OSError`` raised inside the block into a one-line :class:`UserError`."""
    try:
        yield
    except OSError as err:
        raise os_error(err, path, action) from None


def _owner_alive(name: str) -> bool | None:
    """``True``/``False`` when the temp names a process of this machine, ``None`` when unknown."""
    match = _OWNER.match(name)
    if not match:
        return None
    pid = int(match.group("pid"))
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def is_stale(path: Path, max_age: float = DEFAULT_MAX_AGE) -> bool:
    """Whether a ``.cascade-*.tmp`` entry is a leftover: its process is gone, or it is old."""
    alive = _owner_alive(path.name)
    if alive is not None:
        return not alive
    try:
        return time.time() - path.lstat().st_mtime > max_age
    except FileNotFoundError:
        return False


def sweep_stale(directory: Path | str, max_age: float = DEFAULT_MAX_AGE) -> list[Path]:
    """Remove stale ``.cascade-*.tmp`` files and folders directly inside ``directory``."""
    folder = Path(directory)
    removed: list[Path] = []
    try:
        entries = list(folder.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"))
    except OSError:
        return removed
    for entry in entries:
        if not is_stale(entry, max_age):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
        except OSError:
            pass  # someone else removed it first
    return removed


def _prepare_parent(path: Path) -> None:
    with user_errors(path.parent, "creating"):
        if path.parent.exists() and not path.parent.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path.parent))
        path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(path.parent)


def _fsync_dir(folder: Path) -> None:
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


@contextmanager
def atomic_path(path: Path | str, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is fsynced and renamed to ``path``.

    On any exception (or signal) the temporary is removed and ``path`` is left as it was.
    ``OSError`` (disk full, read-only, missing folder) becomes a one-line :class:`UserError`.
    """
    target = Path(path)
    _prepare_parent(target)
    tmp = target.parent / temp_name()
    try:
        yield tmp
        with user_errors(target):
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.chmod(tmp, mode)
            os.replace(tmp, target)
        _fsync_dir(target.parent)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise os_error(err, target) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp, user_errors(path):
        tmp.write_bytes(data)


def atomic_write_text(path: Path | str, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    atomic_write_bytes(path, text.encode(encoding))


@contextmanager
def atomic_dir(path: Path | str) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; on success it replaces ``path`` whole.

    A previous ``path`` is moved aside under a temporary name and removed only after the new
    folder is in place, so a reader sees the old folder or the new one, never a mix.
    """
    target = Path(path)
    _prepare_parent(target)
    tmp = target.parent / temp_name()
    try:
        with user_errors(target):
            tmp.mkdir()
        yield tmp
        with user_errors(target):
            old = None
            if target.exists():
                old = target.parent / temp_name()
                os.replace(target, old)
            os.replace(tmp, target)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(target.parent)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise os_error(err, target) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
