"""The GeoTIFF codecs geospade writes: one table for chips, synthesized rasters and the CLI.

Everything geospade writes is either small chips (where per-file costs dominate) or generated
imagery (noisy), so the fastest levels lose little: on CLADE output at 4096^2 (4 uint8 bands,
benchmarks/bench_synthesize.py) DEFLATE level 1 writes and builds overviews in 0.61 s for
41.3 MB, level 5 in 0.92 s for 39.7 MB and GDAL's default level 6 in 1.41 s for 39.5 MB; ZSTD
level 1 takes 0.47 s for 38.2 MB but older readers lack it.
"""

from __future__ import annotations

from typing import Any

from geospade.errors import ArgumentError, GeospadeError

CODECS = ("deflate", "zstd", "lzw", "none")

LOSSY_CODECS = ("jpeg", "webp")
"""Lossy codecs, for 8-bit imagery with 3 bands only (nodata goes to an internal mask)."""

OUTPUT_CODECS = (*CODECS, *LOSSY_CODECS)
"""The ``--compress`` choices of the imagery geospade writes (synthesize, stitch)."""
"""Codec names of ``--compress``; ``deflate`` opens in every GIS."""


def check_codec(compress: str, cog: bool = False) -> str:
    """``compress`` if it is one of :data:`CODECS` (and compresses, for a COG), else a
    :class:`GeospadeError` saying what to use."""
    if compress not in CODECS:
        raise GeospadeError(f"unknown compression {compress!r}: use one of {', '.join(CODECS)}")
    if cog and compress == "none":
        # GDAL's COG driver (3.10) writes an uncompressed copy without the COG layout.
        raise ArgumentError("compress", "a COG is written compressed: use compress deflate, "
                            "zstd or lzw with cog=True", others=("compress", "cog"),
                            leading=False)
    return compress


def codec_options(compress: str, predictor_for: str | None = None) -> dict[str, Any]:
    """rasterio creation options for ``compress`` (level 1 for DEFLATE and ZSTD).

    Args:
        compress: one of :data:`CODECS` ("none": no options, GDAL writes uncompressed).
        predictor_for: a dtype name: also the predictor for it (floating-point for floats,
            horizontal differencing otherwise). None: no predictor.
    """
    check_codec(compress)
    if compress == "none":
        return {}
    options: dict[str, Any] = {"compress": compress}
    if compress == "deflate":
        options["zlevel"] = 1
    elif compress == "zstd":
        options["zstd_level"] = 1
    if predictor_for is not None:
        import numpy as np  # here, so the CLI's option list imports nothing heavy

        options["predictor"] = 3 if np.issubdtype(np.dtype(predictor_for), np.floating) else 2
    return options


def cog_codec_options(compress: str, predictor_for: str | None = None) -> dict[str, str]:
    """The same codec as creation options of GDAL's COG driver (COMPRESS, LEVEL, PREDICTOR)."""
    options = codec_options(compress, predictor_for)
    cog = {"COMPRESS": compress.upper()}
    level = options.get("zlevel", options.get("zstd_level"))
    if level is not None:
        cog["LEVEL"] = str(level)
    if "predictor" in options:
        cog["PREDICTOR"] = "YES"  # the driver picks the integer or floating-point one
    return cog
