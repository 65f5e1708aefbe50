"""Atomic file writes and the code version, shared by every part of nhb that persists results."""

from __future__ import annotations

import contextlib
import functools
import os
import pathlib
import subprocess
import tempfile
from collections.abc import Callable
from typing import BinaryIO


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> pathlib.Path:
    """Writes a file atomically: temp file in the same directory, fsync, `os.replace`.

    Args:
        path: destination.
        write: called with the open binary temp file.

    Returns:
        The destination path. On any error the temp file is removed and `path` is untouched.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # mkstemp creates 0600 files
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    try:  # persist the rename itself
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> pathlib.Path:
    """Writes text (UTF-8) atomically; see `atomic_write`."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


@functools.cache
def code_version() -> str:
    """`nhb.__version__`, plus `+g<commit>` (and `.dirty`) when run from a git checkout."""
    import nhb

    version = nhb.__version__
    root = pathlib.Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root,
                                capture_output=True, text=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return version
    suffix = ".dirty" if dirty.returncode == 0 and dirty.stdout.strip() else ""
    return f"{version}+g{commit.stdout.strip()}{suffix}"
