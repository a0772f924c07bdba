"""Chip windows over a grid, their grouping into read tasks, and the spatial split.

Windows of ``size`` pixels step by ``stride``; the last row and column are shifted back to the
edge so the whole area is covered without padding. The split is spatial: the area is cut into
square blocks of ``block`` chip steps, whole blocks go to val/test, and a chip whose footprint
touches blocks of two different splits is dropped (reason ``straddles_split``), so no val/test
chip shares a pixel with a train chip even when chips overlap (stride < size).
"""

from __future__ import annotations

import numpy as np

from geospade.errors import GeospadeError
from geospade.formats.chip_store import SPLITS  # noqa: F401 - the order of assign_blocks' indices


def chip_offsets(length: int, size: int, stride: int) -> list[int]:
    """Offsets of windows of ``size`` stepping by ``stride`` over ``length`` pixels.

    The last window is shifted back so that it ends at ``length``. Chips and synthesis windows
    (:func:`geospade.synthesis.plan.window_offsets`, stride = size - overlap) both step this way.

    Args:
        length: pixels to cover.
        size: window size.
        stride: pixels from one window to the next (positive).

    Returns:
        Sorted, distinct offsets; empty when ``size > length``.
    """
    if size > length:
        return []
    offsets = list(range(0, length - size + 1, stride))
    if offsets[-1] + size < length:
        offsets.append(length - size)
    return offsets


def group_offsets(offsets: list[int], size: int, span: int) -> list[list[int]]:
    """Consecutive offsets grouped so each group's windows fit in about ``span`` pixels.

    A group always holds at least one window, so a span smaller than ``size`` gives one per group.
    """
    groups: list[list[int]] = []
    for off in offsets:
        if groups and off + size - groups[-1][0] <= span:
            groups[-1].append(off)
        else:
            groups.append([off])
    return groups


def assign_blocks(
    n_block_rows: int,
    n_block_cols: int,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> np.ndarray:
    """Randomly assign whole blocks to splits.

    Args:
        n_block_rows, n_block_cols: size of the block grid.
        val_fraction, test_fraction: fractions of blocks for val and test (each rounded, at least
            one block when the fraction is positive).
        seed: random seed of the assignment.

    Returns:
        ``(n_block_rows, n_block_cols)`` int array of indices into :data:`SPLITS`.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise GeospadeError("--val-fraction and --test-fraction must be in [0, 1) and sum below 1")
    n = n_block_rows * n_block_cols

    def count(fraction: float) -> int:
        return 0 if fraction <= 0 else max(1, int(round(fraction * n)))

    n_val, n_test = count(val_fraction), count(test_fraction)
    if n_val + n_test >= n and (n_val or n_test):
        raise GeospadeError(
            f"only {n} split block(s) of chips: too few for val/test plus train; "
            "use a smaller --block or a smaller --size"
        )
    order = np.random.default_rng(seed).permutation(n)
    splits = np.zeros(n, dtype=np.int64)
    splits[order[:n_val]] = 1
    splits[order[n_val : n_val + n_test]] = 2
    return splits.reshape(n_block_rows, n_block_cols)


def chip_split(
    row: int, col: int, size: int, block_pixels: int, blocks: np.ndarray
) -> int | None:
    """Split index of the chip at (``row``, ``col``) (relative to the tiled area), or ``None``
    when its footprint touches blocks of different splits."""
    r0, r1 = row // block_pixels, (row + size - 1) // block_pixels
    c0, c1 = col // block_pixels, (col + size - 1) // block_pixels
    touched = np.unique(blocks[r0 : r1 + 1, c0 : c1 + 1])
    return int(touched[0]) if len(touched) == 1 else None
