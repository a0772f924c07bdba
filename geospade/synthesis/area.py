"""The part of the land cover a synthesis covers: ``--window`` (pixels) or ``--bbox`` (map units).

Either must lie inside the land cover: neither is ever clipped, since the output would silently
be smaller than asked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from affine import Affine
from rasterio.windows import Window, from_bounds

from geospade.errors import ArgumentError


def parse_window(window: str | Sequence[int] | Window | None, width: int, height: int
                 ) -> Window:
    """``"col_off,row_off,width,height"`` (or a tuple/Window) -> the Window.

    Args:
        window: the window, or None for the whole raster.
        width, height: the raster's size in pixels.

    Returns:
        The window, with integer offsets and size.

    Raises:
        GeospadeError: a malformed window, or one that is not inside the raster (it is never
            clipped: the output would silently be smaller than asked).
    """
    if window is None:
        return Window(0, 0, width, height)
    if isinstance(window, str):
        try:
            parts = [int(v) for v in window.replace(" ", "").split(",")]
        except ValueError:
            parts = []
        if len(parts) != 4:
            raise ArgumentError("window", f"must be COL_OFF,ROW_OFF,WIDTH,HEIGHT, not {window!r}")
        window = Window(*parts)
    elif not isinstance(window, Window):
        window = Window(*[int(v) for v in window])
    if window.width <= 0 or window.height <= 0:
        raise ArgumentError("window", "needs a positive width and height")
    if (window.col_off < 0 or window.row_off < 0 or window.col_off + window.width > width
            or window.row_off + window.height > height):
        raise ArgumentError(
            "window", f"{_fmt_window(window)} reaches outside the land cover ({width}x{height} "
            f"px); it must lie inside: COL_OFF >= 0, ROW_OFF >= 0, COL_OFF+WIDTH <= {width}, "
            f"ROW_OFF+HEIGHT <= {height}")
    return Window(int(window.col_off), int(window.row_off), int(window.width),
                  int(window.height))


def parse_bbox(bbox: str | Sequence[float], transform: Affine, width: int, height: int
               ) -> Window:
    """``"minx,miny,maxx,maxy"`` in the land cover's CRS -> the window of pixels it touches.

    Args:
        bbox: the box, as text or four numbers.
        transform: the raster's affine transform.
        width, height: the raster's size in pixels.

    Returns:
        The smallest window holding every pixel the box touches.

    Raises:
        GeospadeError: a malformed box, or one that is not inside the raster's bounds (it is
            never clipped, like ``--window``).
    """
    if isinstance(bbox, str):
        try:
            bbox = [float(v) for v in bbox.replace(" ", "").split(",")]
        except ValueError:
            bbox = []
    if len(bbox) != 4 or not (bbox[0] < bbox[2] and bbox[1] < bbox[3]):
        raise ArgumentError("bbox", "must be MINX,MINY,MAXX,MAXY with min < max, in the land "
                            "cover's CRS")
    win = from_bounds(*bbox, transform=transform)
    # (A box edge within a millionth of a pixel of a pixel edge is on it: float round-off.)
    c0, r0 = math.floor(win.col_off + 1e-6), math.floor(win.row_off + 1e-6)
    c1 = math.ceil(win.col_off + win.width - 1e-6)
    r1 = math.ceil(win.row_off + win.height - 1e-6)
    if c0 < 0 or r0 < 0 or c1 > width or r1 > height:
        corners = [transform * xy for xy in ((0, 0), (width, 0), (0, height), (width, height))]
        xs, ys = [x for x, _ in corners], [y for _, y in corners]
        bounds = ",".join(f"{v:.10g}" for v in (min(xs), min(ys), max(xs), max(ys)))
        given = ",".join(f"{v:.10g}" for v in bbox)
        disjoint = c1 <= 0 or r1 <= 0 or c0 >= width or r0 >= height
        raise ArgumentError(
            "bbox", f"{given} {'does not overlap' if disjoint else 'reaches outside'} the land "
            f"cover; it must lie inside its bounds {bounds} ({width}x{height} px)")
    return Window(c0, r0, c1 - c0, r1 - r0)


def area_window(window: str | Sequence[int] | Window | None,
                bbox: str | Sequence[float] | None, transform: Affine, width: int,
                height: int) -> Window:
    """The pixels to synthesize: ``window`` when given, else ``bbox``, else the whole raster.

    Args:
        window: ``"col_off,row_off,width,height"`` (:func:`parse_window`), or None.
        bbox: ``"minx,miny,maxx,maxy"`` (:func:`parse_bbox`), or None.
        transform: the raster's affine transform.
        width, height: the raster's size in pixels.

    Returns:
        The window, inside the raster.
    """
    if window is not None:
        return parse_window(window, width, height)
    if bbox is not None:
        return parse_bbox(bbox, transform, width, height)
    return Window(0, 0, width, height)


def _fmt_window(w: Window) -> str:
    return f"{int(w.col_off)},{int(w.row_off)},{int(w.width)},{int(w.height)}"
