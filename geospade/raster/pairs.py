"""Land-cover/imagery pairs: one pair of files, or two folders of files matched by name.

ML segmentation datasets (LoveDA, ISPRS Potsdam, …) ship a folder of labels and a folder of
images whose files share a name: ``masks/1366.png`` labels ``images/1366.png``. ``geospade tile
LABELS/ IMAGES/`` tiles every such pair into one chip store.

The rule: a raster file of each folder (not in subfolders, not hidden, with one of
:data:`RASTER_SUFFIXES`, any case) is matched with the file of the other folder that has the same
stem (the name less its last suffix, compared exactly: ``1366.png`` matches ``1366.tif``). Every
file must have its partner, and no folder may hold two files of one stem.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from geospade.errors import GeospadeError

RASTER_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".jp2", ".img", ".vrt")
"""File suffixes taken as rasters in a folder of pairs (compared ignoring case)."""


@dataclass(frozen=True)
class RasterPair:
    """A land cover and the imagery of the same ground (or the same pixels).

    Attributes:
        landcover, imagery: the two files.
        stem: their shared stem when they come from folders (chip ids start with it), else None.
    """

    landcover: Path
    imagery: Path
    stem: str | None = None


def raster_pairs(landcover: str | Path, imagery: str | Path) -> list[RasterPair]:
    """The pairs to tile: the two files, or the files of two folders matched by stem.

    Args:
        landcover: a land-cover file, or a folder of them.
        imagery: an imagery file, or a folder of them.

    Returns:
        One pair for two files; for two folders, one pair per stem, sorted by stem.

    Raises:
        GeospadeError: one path is a folder and the other is not, a folder holds no raster or
            two rasters of one stem, or a file has no partner.
    """
    landcover, imagery = Path(landcover), Path(imagery)
    if not (landcover.is_dir() or imagery.is_dir()):
        return [RasterPair(landcover, imagery)]
    if not (landcover.is_dir() and imagery.is_dir()):
        folder, other = (landcover, imagery) if landcover.is_dir() else (imagery, landcover)
        raise GeospadeError(f"{folder} is a folder but {other} is not: give two files, or two "
                            "folders of files matched by name")
    labels = _rasters_by_stem(landcover, "land cover")
    images = _rasters_by_stem(imagery, "imagery")
    _check_partners(labels, images, landcover, imagery)
    return [RasterPair(labels[s], images[s], s) for s in sorted(labels)]


def _rasters_by_stem(folder: Path, role: str) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in RASTER_SUFFIXES:
            continue
        if not path.is_file():
            continue
        if path.stem in files:
            raise GeospadeError(f"{role} folder {folder} holds two files named {path.stem!r} "
                                f"({files[path.stem].name}, {path.name}): pairs are matched by "
                                "name, so keep one")
        files[path.stem] = path
    if not files:
        raise GeospadeError(f"{role} folder {folder} holds no raster file "
                            f"({', '.join(RASTER_SUFFIXES)})")
    return files


def _check_partners(labels: dict[str, Path], images: dict[str, Path], landcover: Path,
                    imagery: Path) -> None:
    for these, role, other, folder in ((labels, "land-cover", images, imagery),
                                       (images, "imagery", labels, landcover)):
        alone = [these[s].name for s in sorted(these) if s not in other]
        if alone:
            shown = ", ".join(alone[:3]) + (", …" if len(alone) > 3 else "")
            raise GeospadeError(f"{len(alone)} {role} file(s) have no file of the same name in "
                                f"{folder}: {shown}")
