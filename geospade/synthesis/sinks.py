"""Where generated windows go: one blended raster, or one tile per strip (``--tiles-only``).

Both sinks weight each window by the plan's ramps and hand it to a
:class:`~geospade.raster.blending_writer.BlendingWriter`. The blended sink cross-fades windows
along rows and columns into one raster. The tile sink writes each strip of windows to a GeoTIFF
of its own, faded along columns only: ``geospade stitch`` cross-fades the strips later with the
same weights. At overlap 0 the windows side by side in a strip are joined across generator
batches and added as one piece (docs/design.md, "Synthesis fast paths").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geospade.errors import ArgumentError
from geospade.outputs import check_not_an_input, remove_stale_temporaries
from geospade.raster import tiles_folder
from geospade.raster.blending_writer import BlendingWriter
from geospade.raster.grid import Grid
from geospade.synthesis.plan import WindowPlan
from geospade.synthesis.source import WindowItem


class _Sink:
    """What both sinks share: weights, and runs of unweighted windows joined into one piece.

    Args:
        plan: the window plan.
        across_strips: whether strips are blended with each other (one raster).
    """

    def __init__(self, plan: WindowPlan, across_strips: bool) -> None:
        self.plan = plan
        self.across_strips = across_strips
        # Unweighted windows side by side in one strip: one BlendingWriter.add per run instead
        # of per window, with the same sums (and a whole strip goes straight to the file).
        self._run: list[tuple[WindowItem, np.ndarray]] = []

    def add(self, item: WindowItem, image: np.ndarray | None) -> None:
        """Add a window's generated image ``(bands, size, size)`` (None: the window had no data
        and was not run)."""
        plan = self.plan
        flat = (image is not None and item.valid is None
                and plan.flat(item.strip, item.col_index, self.across_strips))
        last = self._run[-1][0] if self._run else None
        if last is not None and not (flat and item.strip == last.strip
                                     and item.col == last.col + plan.window_width):
            self._flush_run()
        self._start(item.strip)
        if image is None:
            return
        image = image[:, :plan.window_height, :plan.window_width]
        if flat:
            self._run.append((item, image))
            return
        writer, row = self._target(item)
        weight = plan.weight(item.strip, item.col_index, item.valid, self.across_strips)
        writer.add(image, row, item.col, weight)

    def _flush_run(self) -> None:
        if not self._run:
            return
        first = self._run[0][0]
        pieces = [image for _, image in self._run]
        image = pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=2)
        # A run as wide as the raster, over rows no later strip touches, is final: it goes
        # straight to the file.
        final = image.shape[2] == self.plan.area_width and self._last_over_rows(first.strip)
        writer, row = self._target(first)
        writer.add(image, row, first.col, final=final)
        self._run.clear()

    def close(self) -> tuple[str | None, list[str]]:
        """Write what is left and finish the files.

        Returns:
            ``(output, tiles)``: the blended raster's path (None for tiles), the tiles' paths.
        """
        self._flush_run()
        return self._finish()

    def _start(self, strip: int) -> None:
        """A window of ``strip`` comes next."""

    def _target(self, item: WindowItem) -> tuple[BlendingWriter, int]:
        """The writer of the window's strip and the window's top row in it."""
        raise NotImplementedError

    def _last_over_rows(self, strip: int) -> bool:
        """Whether no later strip adds to the rows of ``strip`` in its writer."""
        raise NotImplementedError

    def _finish(self) -> tuple[str | None, list[str]]:
        raise NotImplementedError

    def abort(self) -> None:
        """Delete the unfinished files."""
        raise NotImplementedError


class BlendedSink(_Sink):
    """Every window blended into one raster.

    Args:
        plan: the window plan.
        path: the output GeoTIFF.
        grid: its grid (the area).
        cog: write a Cloud-Optimized GeoTIFF.
        overwrite: replace an existing output.
        **options: further :class:`BlendingWriter` arguments (count, dtype, nodata, to_output,
            descriptions, block_size, compress, tags, creation_options).
    """

    def __init__(self, plan: WindowPlan, path: str | Path, grid: Grid, cog: bool,
                 overwrite: bool, **options: Any) -> None:
        super().__init__(plan, across_strips=True)
        self.writer = BlendingWriter(path, grid, cog=cog, overwrite=overwrite, **options)

    def _target(self, item: WindowItem) -> tuple[BlendingWriter, int]:
        return self.writer, item.row

    def _last_over_rows(self, strip: int) -> bool:
        return not self.plan.trail_y[strip]

    def _finish(self) -> tuple[str | None, list[str]]:
        return str(self.writer.close()), []

    def abort(self) -> None:
        self.writer.abort()


class TileSink(_Sink):
    """Each strip of windows to a GeoTIFF of its own, ``<stem>_r<row>.tif`` in ``folder``.

    A strip's tile is opened when its first window comes (a strip without data still gets its
    tile of nodata) and finished when a window of a later strip comes.

    Args:
        plan: the window plan.
        folder: the tiles folder.
        stem: the tiles' name stem (the land cover's).
        grid: the area's grid; tile rows are numbered from the land cover's first row.
        row_off: the area's first row in the land cover.
        overwrite: replace existing tiles.
        **options: further :class:`BlendingWriter` arguments (see :class:`BlendedSink`).
    """

    def __init__(self, plan: WindowPlan, folder: str | Path, stem: str, grid: Grid,
                 row_off: int, overwrite: bool, **options: Any) -> None:
        super().__init__(plan, across_strips=False)
        self.folder = Path(folder)
        self.paths = [self.folder / f"{stem}_r{row_off + r:07d}.tif" for r in plan.rows]
        self.grid = grid
        self.overwrite = overwrite
        self.options = options
        self.tiles: list[str] = []
        self._open: dict[int, BlendingWriter] = {}

    def claim(self, run: str, inputs: Sequence[tuple[str, str | Path | None]]) -> None:
        """Take the tiles folder for ``run`` before any tile is written
        (:func:`geospade.raster.tiles_folder.claim`).

        Args:
            run: the run's id (:func:`geospade.raster.tiles_folder.run_id`).
            inputs: the run's inputs, none of which a tile may replace.

        Raises:
            GeospadeError: a tile would replace an input, the folder is another run's, or
                tiles exist already (without ``overwrite``).
        """
        mine = [self.paths[j] for j in self.plan.strips]
        for path in mine:
            check_not_an_input(path, inputs, "tile", "write the tiles to another folder")
            remove_stale_temporaries(path)
        tiles_folder.claim(self.folder, run, [p.name for p in self.paths], self.overwrite)
        existing = [] if self.overwrite else [p for p in mine if p.exists()]
        if existing:
            raise ArgumentError("overwrite", f"{len(existing)} tile(s) already exist in "
                                f"{self.folder}, e.g. {existing[0].name} (use overwrite=True "
                                "to replace them)", leading=False)

    def _start(self, strip: int) -> None:
        for j in [j for j in self._open if j < strip]:
            self.tiles.append(str(self._open.pop(j).close()))
        if strip not in self._open:
            grid = self.grid
            strip_grid = Grid(grid.crs, grid.transform * grid.transform.translation(
                0, self.plan.rows[strip]), grid.width, self.plan.window_height)
            self._open[strip] = BlendingWriter(self.paths[strip], strip_grid,
                                               overwrite=self.overwrite, overviews=False,
                                               **self.options)

    def _target(self, item: WindowItem) -> tuple[BlendingWriter, int]:
        return self._open[item.strip], 0

    def _last_over_rows(self, strip: int) -> bool:
        return True

    def _finish(self) -> tuple[str | None, list[str]]:
        for j in sorted(self._open):
            self.tiles.append(str(self._open.pop(j).close()))
        return None, self.tiles

    def abort(self) -> None:
        for writer in self._open.values():
            writer.abort()
