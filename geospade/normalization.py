"""Per-band normalisation between source units and the model's [-1, 1] range (DESIGN.md).

uint8 bands use the fixed range 0..255; 16-bit and float bands use robust percentiles (2nd and
98th by default) gathered while tiling. The stats travel in the chip store's manifest and in the
checkpoint as plain dicts (:meth:`BandStats.to_dict`).
"""

from __future__ import annotations

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
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> BandStats:
        try:
            return cls(
                name=str(data["name"]), dtype=str(data["dtype"]), low=float(data["low"]),
                high=float(data["high"]), mean=_opt_float(data.get("mean")),
                std=_opt_float(data.get("std")), nodata=_opt_float(data.get("nodata")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise GeospadeError(f"invalid band description: {exc}") from None


def _opt_float(v) -> float | None:
    return None if v is None else float(v)


def fixed_range(dtype: str) -> tuple[float, float] | None:
    """The fixed (low, high) for dtypes normalised by their full range (uint8), else None."""
    return (0.0, 255.0) if np.dtype(dtype) == np.uint8 else None


def _scale(bands: Sequence[BandStats]) -> tuple[np.ndarray, np.ndarray]:
    low = np.array([b.low for b in bands], dtype=np.float32)
    high = np.array([b.high for b in bands], dtype=np.float32)
    span = np.where(high > low, high - low, 1.0).astype(np.float32)
    return low, span


def normalize(image: np.ndarray, bands: Sequence[BandStats]) -> np.ndarray:
    """Source-unit image ``(C, H, W)`` -> float32 in [-1, 1], clipped outside the range."""
    if image.shape[0] != len(bands):
        raise GeospadeError(f"image has {image.shape[0]} bands, expected {len(bands)}")
    low, span = _scale(bands)
    out = (image.astype(np.float32) - low[:, None, None]) / span[:, None, None] * 2.0 - 1.0
    return np.clip(out, -1.0, 1.0, out=out)


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
