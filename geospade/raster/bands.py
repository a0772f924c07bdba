"""Which imagery bands are data, which one is a validity mask, and which three draw as RGB.

Two questions every command that reads imagery asks:

* **Alpha.** GDAL flags a band as alpha from the file's colour interpretation, and a 4-band
  uint8 GeoTIFF written with GDAL's defaults (photometric RGB) flags band 4 as alpha even when it
  holds near-infrared. :func:`choose_bands` makes the choice explicit: a flagged band is either
  the validity mask and dropped from the data (``alpha="mask"``, right for true RGBA), or kept
  as data and never used as a mask (``alpha="band"``, right for NIR flagged as alpha). The
  default, ``auto``, looks at the band (:func:`resolve_alpha`): only 0 and 255 is a mask,
  anything else is data.
* **RGB.** Imagery without colour names (a 10-band Sentinel-2 stack stored B2, B3, B4, …) must
  not be drawn with bands 1-3 as red, green, blue. :func:`rgb_bands` picks the three bands from
  the band descriptions, then the colour interpretation, then takes bands 1-3 (or band 1 as
  grey); a caller's ``requested`` bands win over all of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

import numpy as np

from geospade.errors import ArgumentError, GeospadeError

if TYPE_CHECKING:  # rasterio is imported by the callers; `geospade tile --help` needs none
    import rasterio
    from rasterio.enums import ColorInterp

ALPHA_CHOICES = ("auto", "mask", "band")
"""What to do with a band the file flags as alpha: decide from its values, use it as the validity
mask and drop it, or keep it as a data band."""

# resolve_alpha reads the flagged band at most this many pixels wide and high (a decimated,
# nearest-neighbour read: the values it sees are values of the band, a block cost on a COG).
ALPHA_SAMPLE = 512

# Band descriptions naming a colour, lower case. Sentinel-2 and Landsat 8/9 both number red,
# green and blue B4, B3, B2 (Landsat Collection 2 surface reflectance: SR_B4, …); Landsat 5/7
# number them B3, B2, B1, which these names cannot tell from Landsat 8, so they are left out.
_COLOUR_NAMES = {
    "red": ("red", "r", "b4", "b04", "sr_b4"),
    "green": ("green", "g", "b3", "b03", "sr_b3"),
    "blue": ("blue", "b", "b2", "b02", "sr_b2"),
}


@dataclass(frozen=True)
class RGBBands:
    """The three bands drawn as red, green, blue.

    Attributes:
        indices: 0-based band indices ``(red, green, blue)``; one band three times is grey.
        source: where they came from: ``"requested"``, ``"band names"``,
            ``"colour interpretation"`` or ``"band order"``.
    """

    indices: tuple[int, int, int]
    source: str

    def describe(self) -> str:
        """``bands 3, 2, 1 (from band names)``: 1-based, as a user writes ``--rgb``."""
        numbers = ", ".join(str(i + 1) for i in self.indices)
        why = "as requested" if self.source == "requested" else f"from {self.source}"
        return f"bands {numbers} ({why})"


def rgb_bands(descriptions: Sequence[str | None], colorinterp: Sequence[ColorInterp | str],
              requested: Sequence[int] | None = None) -> RGBBands:
    """Choose the bands drawn as red, green, blue.

    Band descriptions come first: they are set on purpose, whereas GDAL gives any 3- or 4-band
    uint8 GeoTIFF the colour interpretation red, green, blue by default, whatever the bands hold.

    Args:
        descriptions: the band descriptions (None where a band has none), in band order.
        colorinterp: the bands' colour interpretations (enum members or their names).
        requested: 1-based band numbers ``(red, green, blue)`` the caller chose (``--rgb``).

    Returns:
        The :class:`RGBBands`.

    Raises:
        GeospadeError: ``requested`` is not three band numbers among the bands.
    """
    count = len(descriptions)
    if requested is not None:
        return RGBBands(_requested_rgb(requested, count), "requested")
    names = [(d or "").strip().lower() for d in descriptions]
    by_name = _colour_bands({c: [i for i, n in enumerate(names) if n in _COLOUR_NAMES[c]]
                             for c in _COLOUR_NAMES})
    if by_name is not None:
        return RGBBands(by_name, "band names")
    interp = [_colour_name(c) for c in colorinterp]
    by_colour = _colour_bands({c: [i for i, n in enumerate(interp) if n == c]
                               for c in _COLOUR_NAMES})
    if by_colour is not None:
        return RGBBands(by_colour, "colour interpretation")
    return RGBBands((0, 1, 2) if count >= 3 else (0, 0, 0), "band order")


def _colour_name(colour: ColorInterp | str) -> str:
    """``red``, ``alpha``, …: an enum member's name or a string, lower case."""
    return getattr(colour, "name", str(colour)).lower()


def _colour_bands(found: dict[str, list[int]]) -> tuple[int, int, int] | None:
    """``(red, green, blue)`` when each colour names exactly one band, else None."""
    if all(len(found[c]) == 1 for c in ("red", "green", "blue")):
        return found["red"][0], found["green"][0], found["blue"][0]
    return None


def _requested_rgb(requested: Sequence[int], count: int) -> tuple[int, int, int]:
    numbers = list(requested)
    if len(numbers) != 3:
        raise ArgumentError("rgb", f"takes three band numbers (red, green, blue), not "
                                   f"{len(numbers)}")
    for n in numbers:
        if not 1 <= n <= count:
            raise ArgumentError("rgb", f"band {n} is out of range: the chips have {count} "
                                       f"band(s), numbered 1 to {count}")
    return numbers[0] - 1, numbers[1] - 1, numbers[2] - 1


@dataclass(frozen=True)
class BandChoice:
    """The imagery bands that become chip bands, and the band that marks valid pixels.

    Attributes:
        indexes: 1-based source bands kept as data, in chip order.
        mask_band: 1-based band read as the validity mask (valid where > 0), or None.
        flagged_alpha: 1-based band the file flags as alpha, or None.
    """

    indexes: tuple[int, ...]
    mask_band: int | None
    flagged_alpha: int | None
    auto: bool = False

    def describe_alpha(self) -> str | None:
        """One line on what happened to a flagged alpha band (None when there is none)."""
        if self.flagged_alpha is None:
            return None
        b = self.flagged_alpha
        if self.mask_band is not None:
            why = " (it holds only 0 and 255)" if self.auto else ""
            return (f"band {b} is flagged alpha: used as the validity mask and dropped{why}; "
                    "--alpha band keeps it as data")
        if self.auto:
            return (f"band {b} is flagged alpha but holds other values than 0 and 255: kept as "
                    "data and not used as a validity mask; --alpha mask to use it as the mask")
        return (f"band {b} is flagged alpha: kept as data and not used as a validity mask "
                "(--alpha band)")


def resolve_alpha(dataset: rasterio.io.DatasetReader, alpha: str) -> str:
    """``auto`` -> ``mask`` when the band the file flags as alpha holds only 0 and 255 (a real
    validity mask), else ``band`` (data, such as NIR in a 4-band uint8 GeoTIFF that GDAL labels
    alpha by default); ``mask`` and ``band`` are returned as they are.

    The band is read decimated to at most :data:`ALPHA_SAMPLE` pixels a side (nearest), so a
    large file costs one small read.
    """
    if alpha != "auto":
        return alpha
    flagged = next((i + 1 for i, c in enumerate(dataset.colorinterp)
                    if _colour_name(c) == "alpha"), None)
    if flagged is None:
        return "mask"
    scale = max(1, math.ceil(max(dataset.width, dataset.height) / ALPHA_SAMPLE))
    shape = (math.ceil(dataset.height / scale), math.ceil(dataset.width / scale))
    values = dataset.read(flagged, out_shape=shape, masked=False)
    is_mask = set(np.unique(values).tolist()) <= {0, 255}
    return "mask" if is_mask else "band"


def choose_bands(colorinterp: Sequence[ColorInterp], bands: Sequence[int] | None = None,
                 alpha: str = "mask") -> BandChoice:
    """Decide which bands are data and which band, if any, is the validity mask.

    Args:
        colorinterp: the imagery's colour interpretation per band (its length is the count).
        bands: 1-based bands to keep, in order (default: every band, less an alpha band used
            as the mask).
        alpha: ``mask`` (a flagged alpha band is the validity mask, not data) or ``band`` (it
            is data like any other band).

    Returns:
        The :class:`BandChoice`.

    Raises:
        GeospadeError: a band number out of range or listed twice, an unknown ``alpha``, or
            ``bands`` listing the alpha band used as the mask.
    """
    if alpha not in ALPHA_CHOICES[1:]:
        raise GeospadeError(f"alpha must be one of {', '.join(ALPHA_CHOICES[1:])} (resolve "
                            f"'auto' with resolve_alpha first), not {alpha!r}")
    count = len(colorinterp)
    flagged = next((i + 1 for i, c in enumerate(colorinterp) if _colour_name(c) == "alpha"),
                   None)
    mask_band = flagged if alpha == "mask" else None
    if bands is None:
        return BandChoice(tuple(b for b in range(1, count + 1) if b != mask_band), mask_band,
                          flagged)
    kept = tuple(bands)
    if not kept:
        raise ArgumentError("bands", "lists no band")
    for b in kept:
        if not 1 <= b <= count:
            raise ArgumentError("bands", f"band {b} is out of range: the imagery has {count} "
                                         f"band(s), numbered 1 to {count}")
        if kept.count(b) > 1:
            raise ArgumentError("bands", f"lists band {b} twice")
    if mask_band in kept:
        raise ArgumentError("bands", f"lists band {mask_band}, which the imagery flags as alpha "
                            "and tiling uses as the validity mask; add alpha='band' to keep it "
                            "as data", others=[("alpha='band'", "--alpha band")])
    return BandChoice(kept, mask_band, flagged)


def alpha_as_data(dataset: rasterio.io.DatasetReader) -> str:
    """A VRT (XML, for :func:`rasterio.open`) of ``dataset`` in which no band is alpha.

    GDAL's warper treats a band whose colour interpretation is alpha as alpha whatever it is
    asked (a :class:`rasterio.vrt.WarpedVRT` finds it by itself), weighting every other band by
    it; this copy calls every band undefined, so each one is warped as data.

    Args:
        dataset: an open, georeferenced raster.

    Returns:
        The VRT's XML.
    """
    transform = ", ".join(repr(v) for v in dataset.transform.to_gdal())
    srs = escape(dataset.crs.to_wkt()) if dataset.crs else ""
    source = escape(dataset.name)
    nodata = ("" if dataset.nodata is None
              else f"<NoDataValue>{_xml_number(dataset.nodata)}</NoDataValue>")
    gdal_types = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16",
                  "uint32": "UInt32", "int32": "Int32", "uint64": "UInt64", "int64": "Int64",
                  "float32": "Float32", "float64": "Float64"}
    bands = "".join(
        f'<VRTRasterBand dataType="{gdal_types[dtype]}" band="{b}">'
        f"<ColorInterp>Undefined</ColorInterp>{nodata}"
        f'<SimpleSource><SourceFilename relativeToVRT="0">{source}</SourceFilename>'
        f"<SourceBand>{b}</SourceBand></SimpleSource></VRTRasterBand>"
        for b, dtype in zip(dataset.indexes, dataset.dtypes, strict=True)
    )
    return (f'<VRTDataset rasterXSize="{dataset.width}" rasterYSize="{dataset.height}">'
            f"<SRS>{srs}</SRS><GeoTransform>{transform}</GeoTransform>{bands}</VRTDataset>")


def _xml_number(value: float) -> str:
    if math.isnan(value):
        return "nan"
    return repr(float(value)) if not math.isinf(value) else ("inf" if value > 0 else "-inf")
