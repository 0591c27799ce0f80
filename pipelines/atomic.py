"""Atomic outputs: write under a temporary name in the same directory, then rename.

A file exists under its final name only when it is complete; a crash leaves at most a ``.tmp-*``
file that the next run removes or overwrites. The final file has the mode an ordinary ``open()``
would give it (``0o666`` less the process umask), not ``mkstemp``'s private ``0o600``, so colleagues
sharing a cluster can read features and results when the umask allows it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; on success fsync and rename it onto ``final``.

    On an exception the temporary file is removed and ``final`` is left untouched. An ``OSError`` about
    the temporary file (or about no file: a failed flush) is raised again naming ``final``, the file the
    user asked for (a full disk reports ``final``, never ``.tmp-final.XXXX``).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{final.name}.", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~current_umask())
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, final)
        _fsync_dir(final.parent)
    except OSError as err:
        if err.filename is not None and str(err.filename) != str(tmp_path):
            raise
        raise OSError(err.errno, _strerror(err), str(final)) from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _strerror(err: OSError) -> str:
    """The system's short text for ``err`` (HDF5 wraps it in a paragraph naming the temporary file)."""
    if err.errno:
        return os.strerror(err.errno)
    return (err.strerror or str(err)).splitlines()[0]


def current_umask() -> int:
    """The process umask, read without changing it where ``/proc`` allows (else set and restored)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def write_json_atomic(final: str | os.PathLike, obj: Any) -> None:
    """Serialise ``obj`` as indented JSON to ``final`` atomically."""
    with atomic_path(final) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")


class DirectoryInUseError(RuntimeError):
    """Another process holds the directory's lock (the message names the directory and what to do)."""


@contextlib.contextmanager
def directory_lock(
    directory: str | os.PathLike, name: str, *, message: str, error: type[Exception] = DirectoryInUseError
) -> Iterator[None]:
    """Hold an exclusive, non-blocking ``flock`` on ``directory/name`` (created) for the block.

    The kernel drops the lock when the process dies (even by SIGKILL), so a crash never leaves a stale
    lock behind. A second holder gets ``error(message)`` at once instead of waiting.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fh = open(directory / name, "a+")  # noqa: SIM115 - held for the whole block
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise error(message) from None
        yield
    finally:
        fh.close()


def directory_locked(directory: str | os.PathLike, name: str) -> bool:
    """Whether a process holds :func:`directory_lock` on ``directory/name`` now (the lock is not taken)."""
    try:
        fd = os.open(Path(directory) / name, os.O_RDONLY)
    except OSError:  # no lock file: nobody ever locked it (or it cannot be read: assume not)
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing the descriptor drops a lock taken here
    return False


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some filesystems do not allow opening directories; the rename still happened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
