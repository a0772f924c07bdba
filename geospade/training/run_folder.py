"""The run folder of ``geospade train -o RUN``: may it be used, and replacing it so that a failed
start loses nothing (docs/design.md, "Run folder")."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from geospade.errors import ArgumentError, GeospadeError
from geospade.outputs import RUN_FOLDER, check_writable

CHECKPOINT_NAME = "checkpoint.pt"
"""The run's checkpoint, ``RUN/checkpoint.pt``."""


def check_run_folder(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Check, without side effects, that ``run_dir`` may be used as asked.

    Args:
        run_dir: the run folder (it may not exist yet).
        resume: the run continues the checkpoint in ``run_dir``.
        overwrite: an existing run in ``run_dir`` is replaced.

    Raises:
        GeospadeError: both flags; a folder that is not writable; nothing to resume; an
            existing folder without ``overwrite``, or one that is not a geospade run.
    """
    if resume and overwrite:
        raise ArgumentError("resume", "and overwrite exclude each other", others=("overwrite",))
    existing = run_dir if run_dir.exists() else next(p for p in run_dir.absolute().parents
                                                     if p.exists())
    # A replaced run is moved aside in its parent folder, so that must be writable too.
    for folder in {existing, run_dir.absolute().parent} if overwrite else {existing}:
        if folder.is_dir():
            check_writable(folder)
    if resume:
        if not (run_dir / CHECKPOINT_NAME).is_file():
            raise GeospadeError(f"nothing to resume: {run_dir / CHECKPOINT_NAME} does not exist")
        return
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        if not overwrite:
            raise ArgumentError(
                "overwrite", f"{run_dir} already exists; pass resume=True to continue it or "
                "overwrite=True to start again", others=("resume",), leading=False
            )
        if not RUN_FOLDER.recognise(run_dir):
            raise GeospadeError(
                f"{run_dir} exists and is not a geospade run folder; refusing to overwrite it"
            )


class RunFolder:
    """The run folder of a new run, replaced or created so that a failed start loses nothing.

    :meth:`begin` moves a run being overwritten aside (to a hidden sibling) and creates the new
    folder. The first checkpoint of the new run (:meth:`commit`) deletes the old run. A run that
    fails before that (:meth:`abort`: bad chips, a NaN at step 1, Ctrl-C) leaves things as they
    were: its own files are removed, the old run is put back, and a folder it created is
    deleted, so the same command can simply be run again.

    Args:
        path: the run folder.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.old: Path | None = None
        self.created = False
        self.begun = False
        self.committed = False

    def begin(self, overwrite: bool) -> None:
        """Move an existing run aside (with ``overwrite``) and create the folder.

        Raises:
            GeospadeError: the folder cannot be created.
        """
        if overwrite and self.path.exists():
            self.old = self.path.with_name(f".{self.path.name}.replaced-{os.getpid()}")
            self.path.rename(self.old)
        self.created = not self.path.exists()
        self.begun = True
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a folder os.access let through (/proc, a full disk)
            raise GeospadeError(f"cannot create run folder {self.path}: {exc.strerror}"
                                ) from None

    def commit(self) -> None:
        """The new run has a checkpoint: delete the old run, if any; :meth:`abort` is a no-op."""
        if self.old is not None:
            shutil.rmtree(self.old, ignore_errors=True)
            self.old = None
        self.committed = True

    def abort(self) -> None:
        """Undo :meth:`begin` of a run that never checkpointed: remove what it wrote and put
        the old run back."""
        if not self.begun or self.committed:
            return
        if self.created:  # also when the old run was moved aside
            shutil.rmtree(self.path, ignore_errors=True)
        else:  # an empty folder the user made: empty it again
            for child in self.path.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        if self.old is not None:
            self.old.rename(self.path)
            self.old = None
