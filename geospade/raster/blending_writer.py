"""The blending writer: weighted, overlapping pieces blended into one GeoTIFF/COG, strip by strip.

Pieces (model windows, or whole tiles made elsewhere) are added in order of their top row, each
with a weight (usually the ramps of :mod:`geospade.raster.blend`). The writer keeps weighted
sums only for the rows that a later piece can still touch; as soon as rows are final they are
divided by their summed weight and handed to a :class:`~geospade.raster.strip_writer.StripWriter`,
one block row at a time. Memory is bounded by the pieces' height times the raster width, never by
the raster's size.

Pixels that no piece covers with a positive weight are nodata. Valid pixels never equal the nodata
value: an integer pixel that would is moved one step away from it (e.g. 0 -> 1 for uint8;
docs/design.md, "Synthesis output nodata").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from geospade.raster.grid import Grid
from geospade.raster.strip_writer import StripWriter


def _nudge_value(dtype: np.dtype, nodata: float) -> float:
    if np.issubdtype(dtype, np.integer):
        return nodata + 1 if nodata < np.iinfo(dtype).max else nodata - 1
    return np.nextafter(np.float32(nodata), np.float32(np.inf)).item()


def cast_to(dtype: str) -> Callable[[np.ndarray], np.ndarray]:
    """The default conversion of blended float values: round and clip to an integer dtype, or
    cast to a float dtype."""
    dt = np.dtype(dtype)

    def convert(values: np.ndarray) -> np.ndarray:
        if np.issubdtype(dt, np.integer):
            info = np.iinfo(dt)
            return np.clip(np.rint(values), info.min, info.max).astype(dt)
        return values.astype(dt)

    return convert


class BlendingWriter:
    """Blends weighted pieces into one GeoTIFF/COG, holding only the rows still being touched.

    Pieces must come in non-decreasing order of their top row (``row_off``); adding one finalises
    every row above it. A piece's ``weight`` is usually ``np.outer(ramp(h, ...), ramp(w, ...))``
    times a validity mask (0 where the piece has no data).

    Args:
        path: output path.
        grid: the output grid (CRS, transform, size).
        count: bands.
        dtype: output dtype.
        nodata: value of pixels with no weight (None: nodata 0 for integer dtypes written only
            where uncovered, NaN for floats).
        to_output: maps blended float values ``(count, n, width)`` to the output dtype (default
            :func:`cast_to`).
        **kwargs: passed to :class:`StripWriter` (descriptions, colorinterp, cog, overwrite,
            overviews, resampling, block_size, compress, tags, creation_options).
    """

    def __init__(self, path: str | Path, grid: Grid, count: int, dtype: str,
                 nodata: float | None = None,
                 to_output: Callable[[np.ndarray], np.ndarray] | None = None,
                 **kwargs: Any) -> None:
        self.dtype = np.dtype(dtype)
        if nodata is None:
            nodata = math.nan if np.issubdtype(self.dtype, np.floating) else 0
        self.nodata = nodata
        self.grid = grid
        self.count = count
        self.to_output = to_output or cast_to(self.dtype.name)
        self._out = StripWriter(path, grid, count, self.dtype.name, nodata=nodata, **kwargs)
        self.path = self._out.path
        self._base = 0  # first row not yet written
        self._last_row = 0
        self._sum = np.zeros((count, 0, grid.width), dtype=np.float32)
        self._weight = np.zeros((0, grid.width), dtype=np.float32)

    def add(self, data: np.ndarray, row_off: int, col_off: int,
            weight: np.ndarray | None = None, final: bool = False) -> None:
        """Add a piece ``(count, h, w)`` whose top-left pixel is (``row_off``, ``col_off``).

        Args:
            data: values in any float units that ``to_output`` understands.
            row_off, col_off: position in the output grid; the piece must lie inside it.
            weight: ``(h, w)`` non-negative weights (default 1 everywhere).
            final: no later piece touches these rows. A final, unweighted piece as wide as the
                raster, over rows no earlier piece touched, is written straight through
                (no sums to keep): what windows without overlap give.
        """
        _, h, w = data.shape
        if row_off < self._last_row:
            raise ValueError("pieces must be added in order of their top row")
        if (row_off < 0 or col_off < 0 or row_off + h > self.grid.height
                or col_off + w > self.grid.width):
            raise ValueError(f"piece at ({row_off}, {col_off}) of size {h}x{w} is off the grid")
        if row_off < self._base:
            raise ValueError(f"rows from {row_off} were written already (final piece above)")
        self._last_row = row_off
        self._finish_rows(row_off)
        if final and weight is None and w == self.grid.width and not self._weight.shape[0]:
            self._out.write(self._convert(data, None))
            self._base = row_off + h
            return
        need = row_off + h - self._base
        if need > self._weight.shape[0]:
            grow = need - self._weight.shape[0]
            self._sum = np.concatenate(
                [self._sum, np.zeros((self.count, grow, self.grid.width), np.float32)], axis=1)
            self._weight = np.concatenate(
                [self._weight, np.zeros((grow, self.grid.width), np.float32)], axis=0)
        rows = slice(row_off - self._base, row_off - self._base + h)
        cols = slice(col_off, col_off + w)
        if weight is None:
            self._sum[:, rows, cols] += data
            self._weight[rows, cols] += 1.0
        else:
            weight = weight.astype(np.float32, copy=False)
            self._sum[:, rows, cols] += data * weight
            self._weight[rows, cols] += weight

    def _finish_rows(self, until: int) -> None:
        """Write rows ``[base, until)``: those no later piece can touch."""
        while self._base < until:
            held = self._weight.shape[0]
            n = min(until - self._base, held) if held else min(until - self._base,
                                                                self._out.block_size)
            if held:
                out = self._convert(self._sum[:, :n], self._weight[:n])
                self._sum = self._sum[:, n:]
                self._weight = self._weight[n:]
            else:
                out = np.full((self.count, n, self.grid.width), self.nodata, dtype=self.dtype)
            self._out.write(out)
            self._base += n

    def _convert(self, total: np.ndarray, weight: np.ndarray | None) -> np.ndarray:
        """Output values of summed rows (``weight`` None: one unweighted piece everywhere)."""
        covered = True if weight is None else weight > 0
        everywhere = weight is None or bool(covered.all())
        if weight is None or (everywhere and weight.min() == 1.0 == weight.max()):
            mean = total  # one unweighted piece per pixel (overlap 0): nothing to divide
        else:
            mean = total / np.where(covered, weight, 1.0)
        out = self.to_output(mean)
        if not (isinstance(self.nodata, float) and math.isnan(self.nodata)):
            clash = out == self.nodata
            if not everywhere:
                clash &= covered
            if clash.any():
                out[clash] = _nudge_value(self.dtype, self.nodata)
        if not everywhere:
            out[:, ~covered] = self.nodata
        return out

    def close(self) -> Path:
        """Write the remaining rows, finish the file and rename it; returns the path."""
        try:
            self._finish_rows(self.grid.height)
        except BaseException:
            self._out.abort()
            raise
        return self._out.close()

    def abort(self) -> None:
        """Delete the temporary file."""
        self._out.abort()

    def __enter__(self) -> BlendingWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
