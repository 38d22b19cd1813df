"""Writing a file so that it is always either the old one or the whole new one.

A long run is killed at any moment (a pre-empted job, an out-of-memory kill, ``kill -9``), and a
truncated ``last.ckpt`` or ``encoder.safetensors`` would cost the run. So the bytes go to a
temporary file beside the target (same file system, so the rename is atomic), are flushed to disk,
and only then replace the target by ``os.replace``. A kill leaves at worst a stray temporary file,
whose name starts with a dot and ends in ``.tmp-<pid>``: no ``*.ckpt`` or ``*.json`` pattern matches
it, and :func:`remove_stray_temporaries` clears it when the next run starts in that folder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

_TEMPORARY = re.compile(r"^\..+\.tmp-\d+$")


def temporary_name(path: Path) -> Path:
    """Where :func:`write_atomic` writes ``path`` before renaming it (one name per process)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_atomic(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(fh)`` on a temporary file beside ``path``, sync it, then rename it onto ``path``.

    If ``write`` raises (or the process dies), ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())  # the data is on disk before the rename makes it visible
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)
    return path


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    return write_atomic(path, lambda fh: fh.write(data))


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); where folders cannot be opened, the rename still happened."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stray_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files that killed writers left in ``folder`` (one run writes a run
    folder, so any such file there when it starts is from a process that is gone)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stray = [p for p in folder.iterdir() if p.is_file() and _TEMPORARY.match(p.name)]
    for p in stray:
        p.unlink(missing_ok=True)
    return stray
