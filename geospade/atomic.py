"""Files that appear whole or not at all.

Every output geospade writes (checkpoints, reports, the pipeline state, cached segmenters) goes
to a temporary name in the destination folder and is renamed over the destination only once it
is complete, so a failed or interrupted run never leaves a half-written file, nor destroys the
previous one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from geospade.io_errors import writing


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = False) -> Iterator[Path]:
    """A temporary path beside ``path``; renamed to ``path`` when the block ends without error.

    The temporary file exists (empty) when the block starts, keeps ``path``'s suffix (for
    writers that look at it) and is removed when the block raises. The renamed file gets the
    permissions a newly created file would have (``0o666`` less the umask), not the private
    ``0o600`` of :func:`tempfile.mkstemp`, so others can read checkpoints on shared storage.
    A failed write (a full disk above all) is one :class:`~geospade.io_errors.WriteFailed` naming
    ``path`` (:func:`~geospade.io_errors.writing`), still an ``OSError``.

    Args:
        path: the destination; its folder must exist.
        fsync: flush the file to disk before the rename (for files a crash must not lose).
    """
    path = Path(path)
    with writing(path):
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}",
                                    dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        with writing(path):
            yield tmp
            os.chmod(tmp, 0o666 & ~_umask())
            if fsync:
                with open(tmp, "rb+") as fh:
                    os.fsync(fh.fileno())
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
