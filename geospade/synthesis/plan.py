"""The window plan of a synthesis: which windows cover the area, in which strips, with which
blending weights.

Windows of the checkpoint's chip size overlap by ``overlap`` pixels; the last row and column are
shifted back to the area's edge (:func:`geospade.raster.windows.chip_offsets`). A strip is one
row of windows. Each window is weighted by the ramps of :mod:`geospade.raster.blend` over the
pixels it shares with its neighbours, flat at the area's own edges, so neighbouring windows
cross-fade over the whole overlap. The overlap should cover the band along a window's border
where zero padding changes the generator's output (a few pixels per level of the decoder; 1/4
of the window is a good default).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geospade.raster.blend import edge_overlaps, ramp
from geospade.raster.windows import chip_offsets


def window_offsets(length: int, size: int, overlap: int) -> tuple[list[int], np.ndarray,
                                                                  np.ndarray]:
    """Offsets of windows of ``size`` overlapping by ``overlap`` over ``length`` pixels, and the
    lead/trail overlap of each (for :func:`geospade.raster.blend.ramp`).

    The last window is shifted back to end at ``length`` (it overlaps its neighbour more). A
    length shorter than one window gives one window at 0 that reads past the end (padded).

    Args:
        length: pixels to cover.
        size: window size.
        overlap: pixels neighbouring windows share (less than ``size``).

    Returns:
        ``(offsets, lead, trail)``.
    """
    offsets = chip_offsets(length, size, size - overlap) or [0]
    starts = np.array(offsets)
    lead, trail = edge_overlaps(starts, np.minimum(starts + size, length))
    return offsets, lead, trail


@dataclass(frozen=True)
class WindowPlan:
    """The windows over an area and their weights; one process's share of the strips.

    Attributes:
        size: window size (pixels; the generator's input).
        overlap: pixels neighbouring windows share (at least; the last ones share more).
        rows, cols: offsets of the windows' top rows (one per strip) and left columns in the
            area.
        window_height, window_width: rows and columns of a window inside the area (``size``,
            or the area's size when it is smaller: the window is padded).
        area_width: columns of the area.
        ramp_y, ramp_x: blending weights along each strip's rows and each column of windows.
        trail_y: rows each strip shares with the next.
        flat_y, flat_x: whether those weights are 1 everywhere (no overlap to fade over).
        strips: the strips this process synthesizes (contiguous).
    """

    size: int
    overlap: int
    rows: list[int]
    cols: list[int]
    window_height: int
    window_width: int
    area_width: int
    ramp_y: list[np.ndarray]
    ramp_x: list[np.ndarray]
    trail_y: np.ndarray
    flat_y: list[bool]
    flat_x: list[bool]
    strips: list[int]

    @classmethod
    def over(cls, width: int, height: int, size: int, overlap: int, rank: int = 0,
             world_size: int = 1) -> WindowPlan:
        """The plan of an area of ``width`` x ``height`` pixels.

        Args:
            width, height: the area's size.
            size: window size.
            overlap: pixels neighbouring windows share.
            rank, world_size: this process's share of the strips (contiguous, nearly equal).

        Returns:
            The plan.
        """
        rows, lead_y, trail_y = window_offsets(height, size, overlap)
        cols, lead_x, trail_x = window_offsets(width, size, overlap)
        h, w = min(size, height), min(size, width)
        ramp_y = [ramp(h, a, b) for a, b in zip(lead_y, trail_y, strict=True)]
        ramp_x = [ramp(w, a, b) for a, b in zip(lead_x, trail_x, strict=True)]
        return cls(size=size, overlap=overlap, rows=rows, cols=cols, window_height=h,
                   window_width=w, area_width=width, ramp_y=ramp_y, ramp_x=ramp_x, trail_y=trail_y,
                   flat_y=[bool((r == 1).all()) for r in ramp_y],
                   flat_x=[bool((r == 1).all()) for r in ramp_x],
                   strips=np.array_split(np.arange(len(rows)), world_size)[rank].tolist())

    @property
    def window_count(self) -> int:
        """Windows this process synthesizes."""
        return len(self.strips) * len(self.cols)

    def strip_rows(self, strip: int) -> int:
        """Rows of ``strip`` above the next strip's first row (all of them for the last): the
        rows the strip is the first to cover."""
        if strip + 1 < len(self.rows):
            return self.rows[strip + 1] - self.rows[strip]
        return self.window_height

    def rows_covered(self) -> int:
        """Rows of the area this process's strips cover (they overlap each other)."""
        if not self.strips:
            return 0
        return self.rows[self.strips[-1]] + self.window_height - self.rows[self.strips[0]]

    def flat(self, strip: int, col_index: int, across_strips: bool) -> bool:
        """Whether the window's weight is 1 everywhere (no overlap to fade over).

        Args:
            strip, col_index: the window's strip and column of windows.
            across_strips: whether strips are blended with each other here (one raster), or
                each goes to a file of its own (tiles, faded along columns only).
        """
        return self.flat_x[col_index] and (not across_strips or self.flat_y[strip])

    def weight(self, strip: int, col_index: int, valid: np.ndarray | None,
               across_strips: bool) -> np.ndarray:
        """The window's float32 blending weights ``(window_height, window_width)``: its ramps,
        0 where it has no data.

        Args:
            strip, col_index: the window's strip and column of windows.
            valid: where the window has data (None: everywhere).
            across_strips: fade along rows too (see :meth:`flat`).
        """
        wy = self.ramp_y[strip] if across_strips else np.ones(self.window_height)
        weight = np.outer(wy, self.ramp_x[col_index])
        if valid is not None:
            weight *= valid
        return weight.astype(np.float32)
