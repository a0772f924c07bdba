"""The wording of failed reads and writes: every writer says "disk full" the same way.

:func:`writing` wraps a write and :func:`reading` a read; each turns what the libraries raise or
print (Python's OSErrors, torch's and rasterio's messages, libtiff's lines on stderr) into one
:class:`~geospade.errors.GeospadeError` naming the file. The CLI asks :func:`out_of_room`,
:func:`read_failure` and :func:`room_error` about errors nothing wrapped.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from geospade.errors import GeospadeError, first_line

# A full disk reaches geospade in several disguises: an OSError with errno ENOSPC (Python's own
# writes), torch's "unexpected pos 113216 vs 113104" with the OSError as its context, rasterio's
# "Write failed", or no exception at all: libtiff prints "_tiffWriteProc: No space left on
# device." on the process's stderr and GDAL closes a damaged file without complaint. `writing`
# turns all of them into one GeospadeError naming the file, and keeps libtiff's lines off the
# terminal. A file system that refuses a file past a size (FAT's 4 GiB, `ulimit -f`) fails the
# same way with EFBIG, so it is treated alike.

_ROOM_ERRNOS = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded",
                errno.EFBIG: "file too large"}
_ROOM_TEXT = {os.strerror(code): reason for code, reason in _ROOM_ERRNOS.items()}
# What libtiff and GDAL print or raise when a write did not reach the file.
_WRITE_FAILED_TEXT = ("_tiffWriteProc", "_tiffSeekProc", "TIFFAppendToStrip", "TIFFWriteDirectory",
                      "Write failed", "write failed")
_LOW_SPACE = 1 << 20  # a file system with less free space than this counts as full



class WriteFailed(GeospadeError, OSError):
    """A write that failed (disk full, file too large, …), worded for the user.

    Also an ``OSError``, so code that tries another place when a write fails (a cache
    folder) still does; ``errno`` is the system's error number when one is known.
    """

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling (each once)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def out_of_room(exc: BaseException | None = None, printed: str = "") -> str | None:
    """"disk full", "disk quota exceeded" or "file too large" when a write failed for lack of
    room, else None.

    Args:
        exc: the exception the write raised; the OSError torch or rasterio wrap is found in its
            cause or context.
        printed: what libraries printed on stderr meanwhile (:func:`captured_stderr`).
    """
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in _ROOM_ERRNOS:
            return _ROOM_ERRNOS[e.errno]
    texts = [printed, *(str(e) for e in _chain(exc))]
    for text, reason in _ROOM_TEXT.items():
        if any(text in t for t in texts):
            return reason
    return None


def _room_left(path: Path) -> str | None:
    """Why ``path``'s folder takes no more bytes, asked of the system after a write failed
    without saying why (sqlite under GDAL's GeoPackage driver reports "no such table")."""
    try:
        if shutil.disk_usage(path.parent).free < _LOW_SPACE:
            return "disk full"
    except OSError:
        pass
    return "file too large" if _file_size_limit() is not None else None


def _file_size_limit() -> int | None:
    """The process's file size limit in bytes (``ulimit -f``), or None for none."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else soft


def _io_failure(exc: BaseException) -> bool:
    """An exception of the kind a failed write raises (not a bug or bad value of ours)."""
    top = type(exc).__module__.split(".")[0]
    return isinstance(exc, (OSError, RuntimeError)) or top in ("rasterio", "pyogrio", "torch")


def room_error(path: str | os.PathLike, reason: str) -> WriteFailed:
    """The one-line error of a write of ``path`` that failed for ``reason`` (see
    :func:`out_of_room`)."""
    hint = "free some space or write elsewhere"
    if reason == "file too large":
        limit = _file_size_limit()
        hint = (f"over the file size limit of {limit} bytes, ulimit -f" if limit is not None
                else "larger than the file system allows")
    code = next(code for code, text in _ROOM_ERRNOS.items() if text == reason)
    return WriteFailed(f"{reason} while writing {path} ({hint})", code)


_CAPTURE: dict[str, Any] = {"pid": None, "file": None, "depth": 0}


@contextlib.contextmanager
def captured_stderr() -> Iterator[Callable[[], str]]:
    """Send what is written to file descriptor 2 while the block runs to a buffer.

    libtiff and GDAL print their errors straight to the process's stderr, below Python; this
    is the only way to keep them from the terminal. Yields a function returning the text
    captured so far. Nested blocks share the outer capture. Where stderr cannot be redirected
    (no descriptor 2), nothing is captured. Descriptor 2 belongs to the whole process: one
    thread at a time (geospade writes from its main thread, or from worker processes).
    """
    state = _CAPTURE
    if state["depth"]:
        state["depth"] += 1
        try:
            yield _read_capture
        finally:
            state["depth"] -= 1
        return
    try:
        if state["pid"] != os.getpid():  # a forked worker must not share its parent's file
            state["file"] = tempfile.TemporaryFile()
            state["pid"] = os.getpid()
        sys.stderr.flush()
        fh = state["file"]
        fh.seek(0)
        fh.truncate()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        saved = None
    if saved is None:  # no stderr to redirect
        yield lambda: ""
        return
    os.dup2(fh.fileno(), 2)
    state["depth"] = 1
    try:
        yield _read_capture
    finally:
        state["depth"] = 0
        try:
            sys.stderr.flush()
        except (OSError, ValueError, AttributeError):
            pass
        os.dup2(saved, 2)
        os.close(saved)


def _read_capture() -> str:
    fh = _CAPTURE["file"]
    fh.flush()
    return os.pread(fh.fileno(), 1 << 16, 0).decode(errors="replace")


class WriteTarget:
    """The file a :func:`writing` block is writing. A block that writes many files (chips)
    calls :meth:`switch` before each, so an error names the one that failed."""

    __slots__ = ("path", "_printed")

    def __init__(self, path: str | os.PathLike, printed: Callable[[], str]) -> None:
        self.path = path
        self._printed = printed

    def switch(self, path: str | os.PathLike) -> None:
        """The block is done with the current file and writes ``path`` next; a failed write of
        the current one that libtiff only printed raises now, naming it."""
        _check_printed(self._printed(), self.path)
        self.path = path


def _check_printed(text: str, path: str | os.PathLike) -> None:
    """Raise when ``text``, printed by libraries while ``path`` was written, reports a failed
    write."""
    if not text:
        return
    reason = out_of_room(None, text)
    if reason is not None:
        raise room_error(path, reason)
    if any(marker in text for marker in _WRITE_FAILED_TEXT):
        raise WriteFailed(f"cannot write {path} ({first_line(Exception(text), 120)})")


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[WriteTarget]:
    """Run a block that writes ``path``; a failed write becomes one :class:`WriteFailed`.

    A write that failed for lack of room says so ("disk full while writing PATH (...)");
    another failure of the writing library names the file and its first line. Lines libtiff or
    GDAL print meanwhile never reach the terminal when the block fails, and are passed on when
    it succeeds; a block that "succeeds" while libtiff reports a failed write raises. The
    caller removes what was partly written (its ``abort``, :func:`geospade.atomic.atomic_path`).
    Costs about 10 µs (a few system calls to redirect stderr).

    Args:
        path: the file to name in the message: the destination, not a temporary name.

    Yields:
        a :class:`WriteTarget`, for a block that writes several files.
    """
    with captured_stderr() as printed:
        target = WriteTarget(path, printed)
        outermost = _CAPTURE["depth"] <= 1  # an enclosing block passes the lines on
        try:
            yield target
        except GeospadeError:
            raise
        except Exception as exc:
            reason = out_of_room(exc, printed())
            if reason is None and not _io_failure(exc):
                raise
            if reason is None:
                reason = _room_left(Path(target.path))
            if reason is not None:
                raise room_error(target.path, reason) from None
            raise WriteFailed(f"cannot write {target.path} ({_gdal_detail(exc)})",
                              next((e.errno for e in _chain(exc) if isinstance(e, OSError)),
                                   None)) from None
        text = printed()
    _check_printed(text, target.path)
    if text and outermost:
        with contextlib.suppress(OSError):
            os.write(2, text.encode())  # nothing went wrong: pass the library's lines on


def _gdal_detail(exc: BaseException) -> str:
    """The most telling first line in ``exc``'s chain: rasterio's "Read failed. See previous
    exception for details." says less than the GDAL error before it."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.strerror:  # not the "[Errno 13] …: '/tmp/name'" form
            return e.strerror
        text = first_line(e, 160)
        if text and "See previous exception" not in text:
            return text
    return first_line(exc)


_BLOCK_ERROR = re.compile(r"^(?P<path>.+?), band (?P<band>\d+): (?P<what>.*)$")


def damaged(path: str | os.PathLike, exc: BaseException, role: str = "") -> GeospadeError:
    """The one-line error of a failed read of a raster that opened: the file is damaged.

    Args:
        path: the file.
        exc: what the read raised (rasterio's "Read failed").
        role: what the file is to the user ("land cover", "image chip"), put before its name.
    """
    detail = _gdal_detail(exc)
    match = _BLOCK_ERROR.match(detail)
    if match:
        detail = f"band {match['band']}: {match['what']}"
    elif detail.startswith(f"{path}: "):  # GDAL's "PATH: TIFFReadDirectory: …"
        detail = detail[len(f"{path}: "):]
    name = f"{role} {path}" if role else str(path)
    return GeospadeError(f"{name} is damaged (truncated or corrupt): {detail[:120]}")


def read_failure(exc: BaseException, paths: Iterable[str] = ()) -> GeospadeError | None:
    """:func:`damaged`'s error for a rasterio read failure that names its file, else None (the
    CLI's last resort, for reads no caller wrapped).

    Args:
        exc: the exception.
        paths: paths the user gave; GDAL names a file by its base name only, so the one of
            these with that name is named instead.
    """
    if "Read failed" not in str(exc):
        return None
    for e in _chain(exc):
        match = _BLOCK_ERROR.match(first_line(e, 1000))
        if match:
            name = next((p for p in paths if Path(p).name == match["path"]), match["path"])
            return damaged(name, exc)
    return GeospadeError(f"a raster could not be read, damaged (truncated or corrupt)? "
                         f"{_gdal_detail(exc)[:120]}")


@contextlib.contextmanager
def reading(path: str | os.PathLike, role: str = "") -> Iterator[None]:
    """Run a block that reads the raster ``path`` (already open); a read that fails (rasterio's
    "Read failed", a file cut short) becomes :func:`damaged`'s one-line error."""
    try:
        yield
    except GeospadeError:
        raise
    except Exception as exc:
        if not _io_failure(exc):
            raise
        raise damaged(path, exc, role) from None


