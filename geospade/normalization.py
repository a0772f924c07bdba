"""Per-band normalisation between source units and the model's [-1, 1] range (docs/design.md,
"Shared pieces").

uint8 bands use the fixed range 0..255; 16-bit and float bands use robust percentiles (2nd and
98th by default) gathered while tiling. The stats travel in the chip store's manifest and in the
checkpoint as plain dicts (:meth:`BandStats.to_dict`), which are strict JSON: a NaN or infinite
nodata value is written as the string ``"nan"``, ``"inf"`` or ``"-inf"``.

Non-finite pixels (NaN, +inf, -inf) are never data (issue 16): ``geospade tile`` masks them, and
:func:`normalize` maps them to finite values so nothing downstream meets a NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from geospade.errors import GeospadeError


@dataclass(frozen=True)
class BandStats:
    """One imagery band: its name, source dtype and the range mapped to [-1, 1].

    Args:
        name: band description (``red``, ``nir``, ``band3`` …).
        dtype: source dtype name (``uint8``, ``uint16``, ``float32`` …).
        low: source value mapped to -1.
        high: source value mapped to +1.
        mean: mean of the valid source pixels seen while tiling (informational).
        std: standard deviation of the same pixels (informational).
        nodata: the source band's nodata value, if any.
    """

    name: str
    dtype: str
    low: float
    high: float
    mean: float | None = None
    std: float | None = None
    nodata: float | None = None

    def to_dict(self) -> dict:
        """A plain dict that is strict JSON (see :func:`nodata_to_json`)."""
        return dict(asdict(self), nodata=nodata_to_json(self.nodata))

    @classmethod
    def from_dict(cls, data: Mapping) -> BandStats:
        """Read :meth:`to_dict`'s dict back.

        Older chip stores (and checkpoints made from them) may hold NaN or infinite stats, from
        a ``geospade tile`` that kept non-finite pixels as data: a non-finite mean or std is
        dropped (it is informational), a non-finite low/high is an error, as normalising with it
        would make every pixel NaN.
        """
        try:
            band = cls(
                name=str(data["name"]), dtype=str(data["dtype"]), low=float(data["low"]),
                high=float(data["high"]), mean=_finite_or_none(data.get("mean")),
                std=_finite_or_none(data.get("std")), nodata=_opt_float(data.get("nodata")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise GeospadeError(f"invalid band description: {exc}") from None
        if not (math.isfinite(band.low) and math.isfinite(band.high)):
            raise GeospadeError(
                f"band {band.name!r} has a non-finite range (low {band.low}, high {band.high}), "
                "from a geospade tile that kept NaN/inf pixels as data: tile the imagery again"
            )
        return band


def _opt_float(v) -> float | None:
    return None if v is None else float(v)


def _finite_or_none(v) -> float | None:
    v = _opt_float(v)
    return v if v is not None and math.isfinite(v) else None


def nodata_to_json(value: float | None) -> float | str | None:
    """A nodata value as strict JSON: a number, or ``"nan"``/``"inf"``/``"-inf"`` (which
    ``float()`` reads back), or None."""
    if value is None:
        return None
    value = float(value)
    if math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def fixed_range(dtype: str) -> tuple[float, float] | None:
    """The fixed (low, high) for dtypes normalised by their full range (uint8), else None."""
    return (0.0, 255.0) if np.dtype(dtype) == np.uint8 else None


def _scale(bands: Sequence[BandStats]) -> tuple[np.ndarray, np.ndarray]:
    low = np.array([b.low for b in bands], dtype=np.float32)
    high = np.array([b.high for b in bands], dtype=np.float32)
    span = np.where(high > low, high - low, 1.0).astype(np.float32)
    return low, span


def normalize(image: np.ndarray, bands: Sequence[BandStats]) -> np.ndarray:
    """Source-unit image ``(C, H, W)`` -> float32 in [-1, 1], clipped outside the range.

    Never returns NaN: +inf and -inf clip to 1 and -1, and NaN becomes -1, where a nodata
    value below the band's range (0, -9999) lands. Such pixels are no data: the chip store's
    mask (and :class:`~geospade.data.chips.ChipDataset`) marks them ignored.
    """
    if image.shape[0] != len(bands):
        raise GeospadeError(f"image has {image.shape[0]} bands, expected {len(bands)}")
    low, span = _scale(bands)
    out = (image.astype(np.float32) - low[:, None, None]) / span[:, None, None] * 2.0 - 1.0
    np.clip(out, -1.0, 1.0, out=out)
    if image.dtype.kind == "f":
        np.nan_to_num(out, copy=False, nan=-1.0)
    return out


def denormalize(image: np.ndarray, bands: Sequence[BandStats]) -> np.ndarray:
    """Model output ``(C, H, W)`` in [-1, 1] -> source units and dtype (rounded, clipped)."""
    low, span = _scale(bands)
    # (x + 1) / 2 * span + low, computed in place on one float32 copy (this runs on every
    # strip synthesize writes).
    out = np.array(image, dtype=np.float32, copy=True)
    np.clip(out, -1.0, 1.0, out=out)
    out += 1.0
    out *= (span / 2.0)[:, None, None]
    out += low[:, None, None]
    dtype = np.dtype(bands[0].dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        np.rint(out, out=out)
        np.clip(out, info.min, info.max, out=out)
    return out.astype(dtype)
