"""Blending weights of overlapping pieces of a raster (windows, strips, tiles).

Each piece is weighted by a smooth ramp that rises over the part it shares with its neighbours
and stays flat at the raster's own outer edges, so neighbouring pieces cross-fade over their
whole overlap and a seam never shows as a line. Two ramps that meet over the same pixels sum to
exactly 1, so an area covered by equal pieces keeps its values.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def ramp(length: int, lead: int = 0, trail: int = 0) -> np.ndarray:
    """1-D blending weights of a piece ``length`` pixels long.

    The weight rises as ``sin^2`` over the first ``lead`` pixels, falls as ``cos^2`` over the last
    ``trail`` pixels and is 1 elsewhere. Two pieces that overlap by ``L`` pixels, one with
    ``trail=L`` and the other with ``lead=L``, cross-fade with weights that sum to exactly 1; the
    weights are never 0, so every covered pixel has a defined value.

    Args:
        length: pixels in the piece.
        lead: pixels shared with the previous piece (0 at the raster's own edge: no fade).
        trail: pixels shared with the next piece.

    Returns:
        float64 weights of shape ``(length,)`` in (0, 1].
    """
    w = np.ones(length, dtype=np.float64)
    for n, side in ((min(lead, length), slice(None)), (min(trail, length), slice(None, None, -1))):
        if n > 0:
            rise = np.sin(0.5 * np.pi * (np.arange(n) + 0.5) / n) ** 2
            view = w[side]
            view[:n] *= rise
    return w


def edge_overlaps(starts: Sequence[int], ends: Sequence[int],
                  across: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Lead and trail overlaps of 1-D extents, for :func:`ramp`.

    The lead of piece ``t`` is the largest overlap with a piece that starts before it and ends
    inside or after its start; the trail the largest overlap with a piece that starts inside it
    and ends after it. For a regular row of windows these are the overlaps with the previous and
    the next window.

    Args:
        starts, ends: extents ``[start, end)`` of the pieces along one axis.
        across: optional ``(n, n)`` boolean matrix; pieces ``t`` and ``u`` only count as
            neighbours where ``across[t, u]`` (e.g. "their extents on the other axis intersect").

    Returns:
        ``(lead, trail)`` integer arrays, one value per piece.
    """
    n = len(starts)
    t, u = np.nonzero(np.ones((n, n), dtype=bool) if across is None else across)
    return pair_overlaps(np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64),
                         t, u)


def pair_overlaps(starts: np.ndarray, ends: np.ndarray, t: np.ndarray, u: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`edge_overlaps` of extents ``[starts, ends)`` over the neighbour pairs
    ``(t[i], u[i])`` only, for callers that find the pairs themselves (a spatial index).

    Args:
        starts, ends: int64 extents of the pieces along one axis.
        t, u: indices of the pieces of each neighbour pair (both orders needed).

    Returns:
        ``(lead, trail)`` integer arrays, one value per piece.
    """
    lead = np.zeros(len(starts), dtype=np.int64)
    trail = np.zeros(len(starts), dtype=np.int64)
    st, et, su, eu = starts[t], ends[t], starts[u], ends[u]
    before = (su < st) & (eu > st)
    after = (su > st) & (su < et) & (eu > et)
    np.maximum.at(lead, t[before], (np.minimum(eu, et) - st)[before])
    np.maximum.at(trail, t[after], (et - su)[after])
    return lead, trail
