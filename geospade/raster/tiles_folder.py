"""The folder ``synthesize --tiles-only`` writes, and the run that owns it.

A tiles folder holds the strip tiles of one synthesis run (every rank of it) and a hidden
marker, ``.geospade-tiles.json``::

    {"format": "geospade-tiles", "format_version": 1, "run": "<16 hex>",
     "tiles": ["<stem>_r0000000.tif", ...]}   # every tile of the run, all ranks

``run`` is a hash of everything that decides the tiles' pixels (checkpoint, land cover, edits,
area, overlap, seed, precision, number of ranks), so all ranks of one run compute the same id
without talking to each other. A run of another id replaces the folder's tiles only with
``--overwrite`` (removing every tile the old marker lists, so none is left to be blended in),
and :func:`check_stitch_tiles` refuses tiles that the marker of their folder does not list.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from geospade.atomic import atomic_path
from geospade.errors import ArgumentError, GeospadeError
from geospade.outputs import LOCK_SUFFIX, TILES_MARKER

FORMAT = "geospade-tiles"
FORMAT_VERSION = 1


def file_identity(path: str | Path | None) -> list[Any] | None:
    """Resolved path, size and modification time of a local file (None for None)."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return [str(path)]
    return [str(Path(path).resolve()), st.st_size, st.st_mtime_ns]


def run_id(settings: dict[str, Any]) -> str:
    """A short, stable hash of the settings that decide a run's pixels."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_marker(folder: str | Path) -> dict[str, Any] | None:
    """The marker of a tiles folder, or None when it has none (or an unreadable one)."""
    try:
        with open(Path(folder) / TILES_MARKER, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return None
    return data


def _content(folder: Path) -> list[str]:
    """Names in ``folder`` other than the marker, locks and hidden temporaries."""
    return [n for n in os.listdir(folder)
            if n != TILES_MARKER and not n.endswith(LOCK_SUFFIX) and not n.startswith(".")]


def claim(folder: str | Path, run: str, tiles: Sequence[str], overwrite: bool) -> None:
    """Make ``folder`` the tiles folder of ``run`` before any tile is written.

    A new or empty folder, or one that already belongs to ``run`` (another rank of it, or an
    earlier try), is taken as it is. A folder of another run is taken only with ``overwrite``:
    the tiles its marker lists are removed first. A non-empty folder without a marker is never
    taken: its files are not geospade's to remove.

    Args:
        folder: the tiles folder (it exists).
        run: this run's id (:func:`run_id`).
        tiles: the names of every tile of this run, all ranks.
        overwrite: replace the tiles of another run.
    """
    folder = Path(folder)
    marker = read_marker(folder)
    if marker is None and _content(folder):
        raise ArgumentError(
            "tiles_only", f"tiles folder {folder} holds files that are not geospade tiles of "
            "one run; give tiles_only an empty or new folder", others=("tiles_only",),
            leading=False)
    if marker is not None and marker.get("run") != run:
        if not overwrite:
            raise ArgumentError(
                "overwrite", f"tiles folder {folder} holds the tiles of another synthesize "
                "run (use overwrite=True to replace them, or give another folder)",
                leading=False)
        for name in marker.get("tiles", []):
            if isinstance(name, str) and "/" not in name and os.sep not in name:
                (folder / name).unlink(missing_ok=True)
    if marker is None or marker.get("run") != run:
        payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "run": run,
                   "tiles": list(tiles)}
        with atomic_path(folder / TILES_MARKER) as tmp:
            tmp.write_text(json.dumps(payload, indent=1), encoding="utf-8")


def check_stitch_tiles(paths: Sequence[str | Path]) -> None:
    """Refuse tiles their folder's marker does not list (left over from another run), and
    tiles of two runs.

    Tiles without a marker in their folder (written elsewhere, or by older versions) pass.
    """
    runs: dict[str, Path] = {}
    for path in paths:
        path = Path(path)
        marker = read_marker(path.parent)
        if marker is None:
            continue
        if path.name not in marker.get("tiles", []):
            raise GeospadeError(
                f"tile {path} is not one of the tiles of the last synthesize run in "
                f"{path.parent} (a leftover of an earlier run?); remove it or leave it out")
        runs.setdefault(str(marker.get("run")), path)
    if len(runs) > 1:
        first, second = list(runs.values())[:2]
        raise GeospadeError(f"tiles {first} and {second} come from two different synthesize "
                            "runs; stitch the tiles of one run")
