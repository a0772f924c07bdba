"""The window source of a synthesis: the land cover, strip by strip, cut into the plan's windows.

Each strip of window rows is read once, mapped to class indices through the checkpoint's scheme,
edited with the vector edits, handed to the class-map output when one is asked for, and cut into
windows (padded where the area is smaller than a window). Memory depends on the area's width and
the window size, never on its height.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import rasterio
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from geospade.schemes import IGNORE_INDEX, ClassScheme
from geospade.synthesis.edits import ClassMapWriter, Edits
from geospade.synthesis.plan import WindowPlan


@dataclass
class WindowItem:
    """One window of the plan and its input.

    Attributes:
        strip, col_index: the window's strip and column of windows in the plan.
        row, col: its top-left pixel in the area.
        chip: ``(size, size)`` class indices, the generator's input; None when the window has
            no valid pixel (nothing to run; its output pixels stay nodata).
        valid: ``(window_height, window_width)`` where the window has data; None: everywhere.
    """

    strip: int
    row: int
    col: int
    col_index: int
    chip: np.ndarray | None
    valid: np.ndarray | None


class WindowSource:
    """Windows of the land cover, in the plan's order (strip by strip, left to right).

    Args:
        src: the open land cover.
        area: the part of it to synthesize.
        plan: the windows over ``area``.
        scheme: the checkpoint's class scheme (raw values outside it are no data).
        edits: vector edits to burn into each strip, if any.
        class_map: where each strip's (edited) class indices go as well, if anywhere.
    """

    def __init__(self, src: rasterio.DatasetReader, area: Window, plan: WindowPlan,
                 scheme: ClassScheme, edits: Edits | None = None,
                 class_map: ClassMapWriter | None = None) -> None:
        self.src = src
        self.area = area
        self.plan = plan
        self.scheme = scheme
        self.edits = edits
        self.class_map = class_map

    def batches(self, batch_size: int) -> Iterator[list[WindowItem]]:
        """Consecutive windows, grouped so that each group but the last has ``batch_size``
        windows to run (windows without data come along without counting).

        Args:
            batch_size: windows per generator call.
        """
        batch: list[WindowItem] = []
        to_run = 0  # windows in the batch with data
        for item in self.windows():
            batch.append(item)
            to_run += item.chip is not None
            if to_run >= batch_size:
                yield batch
                batch, to_run = [], 0
        if batch:
            yield batch

    def windows(self) -> Iterator[WindowItem]:
        """Every window of this process's strips."""
        for strip in self.plan.strips:
            yield from self._cut(strip, self.strip_labels(strip))

    def strip_labels(self, strip: int) -> np.ndarray:
        """Class indices ``(window_height, area width)`` of a strip, edited; the rows it is the
        first to cover go to the class map."""
        plan = self.plan
        win = Window(self.area.col_off, self.area.row_off + plan.rows[strip], plan.area_width,
                     plan.window_height)
        raw = self.src.read(1, window=win)
        labels = self.scheme.encode(raw, self.src.nodata, unknown="ignore")
        if self.edits is not None:
            self.edits.burn(labels, window_transform(win, self.src.transform))
        if self.class_map is not None:
            self.class_map.write(labels[:plan.strip_rows(strip)])
        return labels

    def _cut(self, strip: int, labels: np.ndarray) -> Iterator[WindowItem]:
        """The strip's windows, with their validity."""
        plan = self.plan
        size, h, w = plan.size, plan.window_height, plan.window_width
        row = plan.rows[strip]
        padded = labels
        if h < size or w < size:
            padded = np.pad(labels, ((0, size - h), (0, max(0, size - plan.area_width))),
                            mode="symmetric")
        # Validity per strip; per window from running counts of the columns that have
        # nodata / have data. Most windows are entirely valid and need no mask of their own.
        valid = labels != IGNORE_INDEX
        if valid.all():
            for k, c in enumerate(plan.cols):
                yield WindowItem(strip, row, c, k, padded[:, c:c + size], None)
            return
        holes = np.concatenate([[0], np.cumsum(~valid.all(axis=0))])
        data = np.concatenate([[0], np.cumsum(valid.any(axis=0))])
        for k, c in enumerate(plan.cols):
            if holes[c + w] == holes[c]:
                yield WindowItem(strip, row, c, k, padded[:, c:c + size], None)
            elif data[c + w] > data[c]:
                yield WindowItem(strip, row, c, k, padded[:, c:c + size], valid[:, c:c + w])
            else:
                yield WindowItem(strip, row, c, k, None, None)
