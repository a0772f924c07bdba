"""What is no data in a synthesis: land-cover values outside the scheme, and the output's nodata.

Land-cover pixels that are the file's nodata, or a scheme nodata value, are no data: their
windows are not run and their output pixels are nodata. Values that are neither a class nor no
data stop the run (``unknown="error"``), naming them with pixel counts, before anything is
written, or count as no data (``unknown="ignore"``). The output's nodata follows the imagery the
checkpoint learnt from (docs/design.md, "Synthesis output nodata").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from geospade.errors import ArgumentError
from geospade.normalization import BandStats
from geospade.schemes import ClassScheme


def output_nodata(bands: Sequence[BandStats]) -> float:
    """The output's nodata value: the source imagery's nodata when it had one, else 0 for
    unsigned integer bands, the minimum for signed ones and NaN for floats.

    Args:
        bands: the checkpoint's band statistics.

    Returns:
        The nodata value of every output band.
    """
    if bands[0].nodata is not None:
        return bands[0].nodata
    dtype = np.dtype(bands[0].dtype)
    if np.issubdtype(dtype, np.floating):
        return math.nan
    return 0 if dtype.kind == "u" else int(np.iinfo(dtype).min)


def scan_unknown_values(src: rasterio.DatasetReader, area: Window, scheme: ClassScheme
                        ) -> dict[float, int]:
    """Raw values in ``area`` that are neither a class nor unlabelled, with pixel counts.

    Reads the area in strips (memory bounded). An 8/16-bit integer strip is first checked with
    one table lookup per pixel (:meth:`ClassScheme.lookup`) and counted
    (:meth:`ClassScheme.unknown_counts`) only when it holds an unknown value: the common case,
    a clean raster, costs little more than decoding it (docs/design.md, "Synthesis fast paths").

    Args:
        src: the open land cover.
        area: the part of it to scan.
        scheme: the checkpoint's class scheme.

    Returns:
        ``{raw value: pixels}``, empty when every value is a class or no data.
    """
    counts: dict[float, int] = {}
    dtype = np.dtype(src.dtypes[0])
    small_int = dtype.kind in "ui" and dtype.itemsize <= 2
    rows = max(1, (16 << 20) // max(1, int(area.width)))
    for r in range(0, int(area.height), rows):
        win = Window(area.col_off, area.row_off + r, area.width, min(rows, area.height - r))
        raw = src.read(1, window=win)
        if small_int and (scheme.lookup(raw, src.nodata) >= 0).all():
            continue
        for value, n in scheme.unknown_counts(raw, src.nodata).items():
            counts[value] = counts.get(value, 0) + n
    return counts


def refuse_unknown_values(src: rasterio.DatasetReader, area: Window, scheme: ClassScheme,
                          landcover: str | Path) -> None:
    """Raise when ``area`` of the land cover holds values outside ``scheme``.

    Args:
        src: the open land cover.
        area: the part of it to be synthesized.
        scheme: the checkpoint's class scheme.
        landcover: the land cover's path, for the message.

    Raises:
        GeospadeError: naming the first 20 unknown values with their pixel counts.
    """
    bad = scan_unknown_values(src, area, scheme)
    if bad:
        listed = ", ".join(f"{v} ({n} px)" for v, n in sorted(bad.items())[:20])
        more = "" if len(bad) <= 20 else f" and {len(bad) - 20} more"
        raise ArgumentError(
            "unknown", f"{landcover} has values outside the checkpoint's scheme "
            f"{scheme.name!r}: {listed}{more}; use unknown='ignore' to treat them as no data",
            leading=False)
