"""Chip windows over a grid, their grouping into read tasks, and the spatial split.

Windows of ``size`` pixels step by ``stride``; the last row and column are shifted back to the
edge so the whole area is covered without padding. The split is spatial: the area is cut into
square blocks of ``block`` chip steps, whole blocks go to val/test, and a chip whose footprint
touches blocks of two different splits is dropped (reason ``straddles_split``), so no val/test
chip shares a pixel with a train chip even when chips overlap (stride < size). Without a
``block`` from the user, :func:`largest_block` chooses one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from geospade.errors import ArgumentError
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


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Refuse split fractions outside [0, 1) or summing to 1 or more."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ArgumentError("val_fraction", "and test_fraction must be in [0, 1) and sum below 1",
                            others=("test_fraction",))


def block_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Blocks of ``n`` that go to val and to test: each fraction rounded, at least one block
    when it is positive.

    Raises:
        GeospadeError: the fractions are not in [0, 1) or sum to 1 or more.
    """
    check_fractions(val_fraction, test_fraction)

    def count(fraction: float) -> int:
        return 0 if fraction <= 0 else max(1, int(round(fraction * n)))

    return count(val_fraction), count(test_fraction)


def leaves_train(n: int, val_fraction: float, test_fraction: float) -> bool:
    """Whether ``n`` blocks hold the val and test blocks and still one train block."""
    n_val, n_test = block_counts(n, val_fraction, test_fraction)
    return not (n_val + n_test >= n and (n_val or n_test))


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
    return assign_block_grids([(n_block_rows, n_block_cols)], val_fraction, test_fraction,
                              seed)[0]


def assign_block_grids(
    shapes: Sequence[tuple[int, int]], val_fraction: float, test_fraction: float, seed: int
) -> list[np.ndarray]:
    """:func:`assign_blocks` over several block grids at once (one per raster of a folder).

    The fractions apply to all their blocks together, so a folder of small rasters is not forced
    to give each raster a val block; one grid gets exactly what :func:`assign_blocks` gives.

    Args:
        shapes: ``(block rows, block cols)`` of each grid.
        val_fraction, test_fraction, seed: as in :func:`assign_blocks`.

    Returns:
        One int array of indices into :data:`SPLITS` per grid.

    Raises:
        GeospadeError: bad fractions, or too few blocks for val/test plus train.
    """
    n = sum(rows * cols for rows, cols in shapes)
    n_val, n_test = block_counts(n, val_fraction, test_fraction)
    if not leaves_train(n, val_fraction, test_fraction):
        raise ArgumentError(
            "block", f"only {n} split block(s) of chips: too few for val/test plus train; "
            "use a smaller block or a smaller size", others=("block", "size"),
            leading=False
        )
    order = np.random.default_rng(seed).permutation(n)
    splits = np.zeros(n, dtype=np.int64)
    splits[order[:n_val]] = 1
    splits[order[n_val : n_val + n_test]] = 2
    grids, start = [], 0
    for rows, cols in shapes:
        grids.append(splits[start : start + rows * cols].reshape(rows, cols))
        start += rows * cols
    return grids


def block_grid(height: int, width: int, block_pixels: int) -> tuple[int, int]:
    """``(rows, cols)`` of the blocks of ``block_pixels`` covering ``height`` x ``width``."""
    return math.ceil(height / block_pixels), math.ceil(width / block_pixels)


def largest_block(areas: Sequence[tuple[int, int]], stride: int, val_fraction: float,
                  test_fraction: float) -> int:
    """The split block side (in chip steps) chosen when the user gives none.

    The largest block at which every requested fraction is at least one block (``fraction x
    blocks >= 1``, so val and test are each near their fraction, within half a block) and a
    train block remains: larger blocks drop fewer chips at block edges. When no size meets
    that, 1 (the most blocks, the nearest fractions) if it leaves a train block.

    Args:
        areas: ``(height, width)`` in pixels of each area tiled (one per raster pair).
        stride: pixels between chips (a block is ``block x stride`` pixels).
        val_fraction, test_fraction: the requested fractions.

    Returns:
        The block side; without val/test, the block holding a whole area.

    Raises:
        GeospadeError: even blocks of one chip step are too few for val/test plus train.
    """
    wanted = [f for f in (val_fraction, test_fraction) if f > 0]

    def blocks(block: int) -> int:
        return sum(math.prod(block_grid(h, w, block * stride)) for h, w in areas)

    most = max(math.ceil(max(h, w) / stride) for h, w in areas)
    for block in range(most, 0, -1):
        n = blocks(block)
        if all(f * n >= 1 - 1e-9 for f in wanted) and leaves_train(n, val_fraction,
                                                                    test_fraction):
            return block
    n = blocks(1)
    if leaves_train(n, val_fraction, test_fraction):
        return 1
    raise ArgumentError(
        "block", f"only {n} split block(s) of chips even with block=1: too few for val/test "
        "plus train; use a smaller size or smaller val_fraction/test_fraction",
        others=("size", "val_fraction", "test_fraction"), leading=False
    )


def chip_split(
    row: int, col: int, size: int, block_pixels: int, blocks: np.ndarray
) -> int | None:
    """Split index of the chip at (``row``, ``col``) (relative to the tiled area), or ``None``
    when its footprint touches blocks of different splits."""
    r0, r1 = row // block_pixels, (row + size - 1) // block_pixels
    c0, c1 = col // block_pixels, (col + size - 1) // block_pixels
    touched = np.unique(blocks[r0 : r1 + 1, c0 : c1 + 1])
    return int(touched[0]) if len(touched) == 1 else None
