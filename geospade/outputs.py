"""The one rule for everything geospade writes: nothing a user has is ever lost.

Every command that writes checks its outputs here before any work is done:

- an output is never one of the command's inputs, a folder that holds one, nor a path inside
  an input folder (not even with ``--overwrite``): :func:`check_not_an_input`;
- an existing output is replaced only with ``--overwrite``, and only when it is the kind of
  thing the command writes (a chip store, a GeoTIFF, a run folder, …): :func:`check_replaceable`
  with one of the :class:`OutputKind` values below;
- one run at a time writes an output: :class:`OutputLock` takes an OS file lock beside it,
  released on exit (and by the kernel when a process dies, so a crash never leaves a lock
  behind), and removes the temporaries a killed run of the same output left
  (:func:`remove_stale_temporaries`).

:func:`prepare_output` and :func:`prepare_folder` combine these for the common cases.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from geospade.errors import ArgumentError, GeospadeError
from geospade.formats.chip_store import is_chip_store

try:  # POSIX; on other systems runs are not locked (nothing else changes)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

Inputs = Sequence[tuple[str, "str | Path | None"]]

#: The suffixes temporaries get in their output's folder: ``.NAME.<something><suffix>``.
TEMPORARY_MARKERS = (".tmp", ".raw.tif", ".partial-", ".replaced-", ".tiles-")
LOCK_SUFFIX = ".geospade-lock"
TILES_MARKER = ".geospade-tiles.json"


# -- what a path is -----------------------------------------------------------------------------


# A URL (``https://…``, ``s3://…``), or one a ``Path`` has already folded (``https:/…``): a
# scheme of two letters or more, so a Windows drive (``C:/``) is not one.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:/")


def is_local(path: str | Path) -> bool:
    """Whether ``path`` names a local file (not a GDAL virtual path or a URL)."""
    text = os.fspath(path)
    return not (text.startswith("/vsi") or _URL.match(text))


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether ``a`` and ``b`` name the same file, whatever their spelling (relative or
    absolute, ``..``, symbolic or hard links); for a file not yet there, whether they resolve
    to the same path. URLs and GDAL paths are the same when spelt the same."""
    if not (is_local(a) and is_local(b)):
        return os.fspath(a) == os.fspath(b)
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return Path(a).resolve() == Path(b).resolve()


def is_inside(path: str | Path, folder: str | Path) -> bool:
    """Whether ``path`` is ``folder`` or lies somewhere below it (links resolved)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def _magic(path: Path, length: int = 8) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(length)
    except OSError:
        return b""


def _is_tiff(path: Path) -> bool:
    return path.is_file() and _magic(path, 4) in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _is_png(path: Path) -> bool:
    return path.is_file() and _magic(path) == b"\x89PNG\r\n\x1a\n"


def _json_format(path: Path) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data.get("format") if isinstance(data, dict) else None


def _empty_folder(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def _is_run_folder(path: Path) -> bool:
    return path.is_dir() and ((path / "config.toml").is_file()
                              or (path / "checkpoint.pt").is_file())


def _is_pipeline_folder(path: Path) -> bool:
    return path.is_dir() and (path / "pipeline-state.json").is_file()


def _is_tiles_folder(path: Path) -> bool:
    return path.is_dir() and (path / TILES_MARKER).is_file()


@dataclass(frozen=True)
class OutputKind:
    """A kind of output: what it is called in messages and how an existing one is recognised.

    An empty folder is taken as any folder kind: a user may make the folder first.
    """

    what: str
    recognise: Callable[[Path], bool]
    folder: bool = False

    def matches(self, path: Path) -> bool:
        return self.recognise(path) or (self.folder and _empty_folder(path))


GEOTIFF = OutputKind("GeoTIFF", _is_tiff)
PNG = OutputKind("PNG image", _is_png)
EVALUATION_REPORT = OutputKind(
    "geospade evaluation report", lambda p: _json_format(p) == "geospade-evaluation")
CHIP_STORE = OutputKind("geospade chip store", is_chip_store, folder=True)
RUN_FOLDER = OutputKind("geospade run folder", _is_run_folder, folder=True)
PIPELINE_FOLDER = OutputKind("geospade pipeline work folder", _is_pipeline_folder, folder=True)
TILES_FOLDER = OutputKind("geospade tiles folder", _is_tiles_folder, folder=True)


# -- the checks ---------------------------------------------------------------------------------


def check_not_an_input(path: str | Path, inputs: Inputs, kind: str = "output",
                       hint: str = "write the output elsewhere") -> None:
    """Raise :class:`GeospadeError` when writing ``path`` could touch one of ``inputs``.

    An output may not be an input, a folder holding an input (a folder output is replaced as
    a whole), nor lie inside an input that is a folder (a chip store, a run folder). This
    holds with ``--overwrite`` too: an output never replaces what the command reads. An
    output must be local (:func:`check_local_output`).

    Args:
        path: a file or folder the command will write.
        inputs: ``(what, path)`` of each file or folder the command reads, e.g. ``("the land
            cover", "lc.tif")``; ``what`` names it in the error. A glob or list file stands
            for each file it names (:func:`geospade.raster.sources.local_inputs`); None paths
            and GDAL virtual paths or URLs are skipped.
        kind: what ``path`` is ("output", "tile"), and ``hint`` what to do instead, for the
            message.
    """
    check_local_output(path, kind)
    from geospade.raster.sources import local_inputs

    for what, spec in inputs:
        for source in local_inputs(spec):  # each file of a glob or list file, and the list
            _check_not_this_input(path, what, source, kind, hint)


def _check_not_this_input(path: str | Path, what: str, source: str, kind: str,
                          hint: str) -> None:
    if same_file(path, source):
        problem = f"is {what}"
    elif is_inside(source, path):
        problem = f"holds {what} ({source})"
    elif Path(source).is_dir() and is_inside(path, source):
        problem = f"lies inside {what} ({source})"
    else:
        return
    raise ArgumentError("overwrite", f"{kind} {path} {problem} that this command reads; {hint} "
                        "(overwrite=True never replaces an input)", leading=False)


def check_local_output(path: str | Path, kind: str = "output") -> None:
    """Raise :class:`GeospadeError` when the output ``path`` is a URL or GDAL virtual path:
    inputs may be remote, outputs are written to local files only."""
    if not is_local(path):
        from geospade.raster.sources import unfolded

        raise GeospadeError(f"{kind} {unfolded(path)} is a URL or GDAL virtual path; geospade "
                            "writes local files only (write locally, then copy it)")


def check_replaceable(path: str | Path, kind: OutputKind, overwrite: bool) -> None:
    """Raise :class:`GeospadeError` unless ``path`` is new, or may be replaced.

    An existing ``path`` is replaced only with ``overwrite``, and only when it is a ``kind``
    (a notes folder is never wiped to make room for a chip store, nor a script replaced by a
    GeoTIFF).
    """
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return
    if kind.folder and _empty_folder(path):
        return
    if not overwrite:
        raise ArgumentError("overwrite", f"{path} already exists (use overwrite=True to "
                            "replace it)", leading=False)
    if path.is_symlink() or not kind.matches(path):
        raise GeospadeError(f"{path} exists and is not a {kind.what}; refusing to replace it "
                            "(remove it yourself, or choose another output)")


def check_writable(folder: str | Path, what: str = "output folder") -> None:
    """Raise :class:`GeospadeError` when the existing ``folder`` cannot be written to."""
    if not os.access(folder, os.W_OK | os.X_OK):
        raise GeospadeError(f"{what} {folder} is not writable")


def prepare_folder(folder: str | Path, what: str = "output folder") -> Path:
    """Create ``folder`` (and its parents) if needed and check that it can be written to."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise GeospadeError(f"{what} {folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GeospadeError(f"cannot create {what} {folder}: {exc.strerror}") from None
    check_writable(folder, what)
    return folder


def parent_of(path: str | Path) -> Path:
    """The folder ``path`` is written in (``.`` for a bare file name)."""
    parent = Path(path).parent
    return parent if str(parent) else Path(".")


def prepare_output(path: str | Path, overwrite: bool = False, inputs: Inputs = (),
                   kind: OutputKind = GEOTIFF) -> Path:
    """Check that the output file ``path`` can be written before any work is done.

    Creates missing parent folders (see :func:`removing_new_folders` to take them back when
    the command fails). Raises :class:`GeospadeError` when ``path`` is or holds one of
    ``inputs`` (:func:`check_not_an_input`), names a folder (a path ending in ``/``), exists
    and may not be replaced (:func:`check_replaceable`), or its folder cannot be written.

    Args:
        path: the output file.
        overwrite: replace an existing file of the right kind.
        inputs: ``(what, path)`` of each file the command reads.
        kind: what the command writes there (a GeoTIFF by default).
    """
    text = os.fspath(path)
    path = Path(path)
    check_not_an_input(path, inputs)
    if text.endswith(os.sep) or path.is_dir():
        raise GeospadeError(f"output {text} is a folder; give a file name (e.g. "
                            f"{path / 'out.tif'})")
    check_replaceable(path, kind, overwrite)
    prepare_folder(parent_of(path))
    return path


@contextlib.contextmanager
def removing_new_folders(folders: Sequence[str | Path | None]) -> Iterator[None]:
    """Take back, when the block raises, the folders it created on the way to ``folders``.

    :func:`prepare_output` creates an output's missing parent folders before any work is done;
    a command that then fails should leave the file system as it found it. Every folder of
    ``folders`` (and their ancestors) that does not exist when the block starts is removed
    when the block raises, deepest first, and only while it is empty.
    """
    new: set[Path] = set()
    for folder in folders:
        if folder is None:
            continue
        folder = Path(folder).absolute()
        new.update(f for f in (folder, *folder.parents) if not f.exists())
    try:
        yield
    except BaseException:
        for folder in sorted(new, key=lambda f: len(f.parts), reverse=True):
            with contextlib.suppress(OSError):  # not empty, or gone: leave it
                folder.rmdir()
        raise


# -- one run per output -------------------------------------------------------------------------


def lock_path(path: str | Path) -> Path:
    """The lock file of output ``path``: a hidden sibling."""
    path = Path(path)
    return parent_of(path) / f".{path.name}{LOCK_SUFFIX}"


def temporaries(path: str | Path) -> list[Path]:
    """The hidden temporaries geospade writes beside output ``path`` (``.NAME.*`` with one of
    :data:`TEMPORARY_MARKERS`), whoever wrote them."""
    path = Path(path)
    folder = parent_of(path)
    prefix = f".{path.name}."
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return [folder / n for n in names
            if n.startswith(prefix) and not n.endswith(LOCK_SUFFIX)
            and any(m in n[len(prefix) - 1:] for m in TEMPORARY_MARKERS)]


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove the temporaries a killed run left beside ``path``; call with its lock held.

    Holding the output's :class:`OutputLock` proves no live run writes them. A run folder moved
    aside by ``train --overwrite`` (``.RUN.replaced-PID``) is not a temporary but the user's
    previous run: it is put back when the new run never got a checkpoint, and removed only
    when the new run has one.

    Returns:
        The paths removed or put back.
    """
    path = Path(path)
    handled = []
    for tmp in temporaries(path):
        if ".replaced-" in tmp.name[len(path.name) + 1:]:
            if (path / "checkpoint.pt").is_file():
                shutil.rmtree(tmp, ignore_errors=True)
            elif not path.exists() or _only_partial_run(path):
                if path.exists():
                    shutil.rmtree(path, ignore_errors=True)
                tmp.rename(path)
            else:
                continue
        else:
            _remove(tmp)
        handled.append(tmp)
    return handled


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_temporaries_in(folder: str | Path) -> list[Path]:
    """Remove the temporaries killed runs left inside ``folder`` (a run folder whose lock is
    held): hidden entries ``.NAME.…`` with one of :data:`TEMPORARY_MARKERS`."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    removed = []
    for name in names:
        if (name.startswith(".") and not name.endswith(LOCK_SUFFIX)
                and ".replaced-" not in name and any(m in name for m in TEMPORARY_MARKERS)):
            path = Path(folder) / name
            _remove(path)
            removed.append(path)
    return removed


def _only_partial_run(path: Path) -> bool:
    """A run folder that a killed run started but never checkpointed."""
    return path.is_dir() and not (path / "checkpoint.pt").exists()


class OutputLock:
    """An exclusive OS lock on an output, held while a command writes it.

    Used as a context manager around everything a command does to its output. A second
    geospade run on the same output gets a one-line :class:`GeospadeError` at once (no
    waiting). The lock is a ``flock`` on a hidden file beside the output, so the kernel
    releases it when the process ends in any way: a crash never leaves a stale lock. Once
    held, the temporaries of earlier, killed runs are removed (:func:`remove_stale_temporaries`).

    Args:
        path: the output (file or folder) to lock.
        what: how the output is named in the error.
    """

    def __init__(self, path: str | Path, what: str = "output") -> None:
        self.path = Path(path)
        self.what = what
        self.lock = lock_path(path)
        self._fd: int | None = None
        self._made: list[Path] = []

    def acquire(self) -> OutputLock:
        if fcntl is None or not is_local(self.path):
            return self
        folder = self.lock.parent.absolute()
        self._made = [f for f in (folder, *folder.parents) if not f.exists()]
        if self._made:  # taken back on release when still empty
            try:
                folder.mkdir(parents=True)
            except OSError as exc:
                raise GeospadeError(f"cannot create output folder {folder}: "
                                    f"{exc.strerror}") from None
        while True:
            try:
                fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as exc:
                raise GeospadeError(f"cannot lock {self.what} {self.path}: "
                                    f"{exc.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                owner = _read_owner(fd)
                os.close(fd)
                self._remove_made_folders()
                raise GeospadeError(
                    f"{self.what} {self.path} is being written by another geospade run"
                    f"{owner}; wait for it to finish or choose another output") from None
            # The holder before us may have removed the file between our open and flock:
            # then we hold a lock on a file nobody else can find, so try again.
            try:
                same = os.stat(self.lock).st_ino == os.fstat(fd).st_ino
            except OSError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        remove_stale_temporaries(self.path)
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.lock.unlink()
        os.close(self._fd)
        self._fd = None
        self._remove_made_folders()

    def _remove_made_folders(self) -> None:
        for folder in self._made:  # deepest first
            with contextlib.suppress(OSError):  # not empty: the command wrote there
                folder.rmdir()

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_owner(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (process {text})" if text.isdigit() else ""


@contextlib.contextmanager
def locked_outputs(paths: Sequence[tuple[str | Path | None, str]]) -> Iterator[None]:
    """Hold an :class:`OutputLock` on each ``(path, what)`` (None paths skipped) in the block."""
    with contextlib.ExitStack() as stack:
        for path, what in paths:
            if path is not None:
                stack.enter_context(OutputLock(path, what))
        yield
