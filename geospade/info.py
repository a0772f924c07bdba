"""Describe a raster, a chip store or a checkpoint (what ``geospade info`` prints)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from geospade.errors import GeospadeError


def describe(path: str | Path) -> dict[str, Any]:
    """A plain-dict description of ``path``: a chip store folder, a checkpoint or a raster.

    Args:
        path: a chip store (folder with ``manifest.json``), a ``.pt`` checkpoint, or any raster
            GDAL reads.

    Returns:
        A dict with a ``kind`` key (``chip-store``, ``checkpoint`` or ``raster``) and its facts.
    """
    path = Path(path)
    if not path.exists():
        raise GeospadeError(f"no such file or folder: {path}")
    if not (path.is_dir() or path.is_file()):
        # A named pipe would block the read until a writer comes; a device never ends.
        raise GeospadeError(f"{path} is not a regular file or folder (a pipe, socket or "
                            "device); give a raster, chip store or checkpoint")
    if path.is_dir():
        return _describe_chip_store(path)
    if path.suffix in (".pt", ".pth", ".ckpt"):
        return _describe_checkpoint(path)
    import rasterio

    try:
        with rasterio.open(path) as src:
            return _describe_raster(path, src)
    except rasterio.errors.RasterioIOError as exc:
        raise GeospadeError(f"{path} is not a raster, chip store or checkpoint ({exc})") from None


def _describe_raster(path: Path, src: Any) -> dict[str, Any]:
    """The facts of an open raster, with geospade's provenance tags and class names."""
    from rasterio.enums import MaskFlags

    from geospade.provenance import read_tags
    from geospade.raster.strip_writer import read_category_names

    facts = {
        "kind": "raster",
        "path": str(path),
        "driver": src.driver,
        "width": src.width,
        "height": src.height,
        "count": src.count,
        "dtypes": list(src.dtypes),
        "nodata": src.nodata,
        "crs": src.crs.to_string() if src.crs else None,
        "transform": list(src.transform)[:6],
        "bounds": list(src.bounds),
        "descriptions": list(src.descriptions),
        "block_shapes": [list(s) for s in src.block_shapes],
        "overviews": src.overviews(1),
        "compression": src.compression.value if src.compression else None,
        "mask": "internal mask" if any(
            MaskFlags.per_dataset in f for f in src.mask_flag_enums) else None,
    }
    provenance = read_tags(src.tags())
    if provenance:
        facts["provenance"] = provenance
    classes = read_category_names(path)
    if classes:
        facts["classes"] = classes
    return facts


def _describe_chip_store(path: Path) -> dict[str, Any]:
    from geospade.formats.chip_store import MANIFEST, open_chip_store

    if not (path / MANIFEST).is_file():
        raise GeospadeError(f"{path} is not a chip store (no {MANIFEST}: incomplete?)")
    store = open_chip_store(path)  # a manifest that does not hold together is an error
    return {
        "kind": "chip-store",
        "path": str(path),
        "scheme": store.scheme.name,
        "classes": store.scheme.names,
        "bands": [b.name for b in store.bands],
        "dtype": store.bands[0].dtype,
        "chip_size": store.chip_size,
        "stride": store.stride,
        "counts": store.counts,
        "rgb": list(store.rgb) if store.rgb is not None else None,
        "fraction_columns": store.fraction_columns,
        "geospade_version": store.manifest.get("geospade_version"),
        "created": store.manifest.get("created"),
        "sources": _sources(store.manifest.get("sources")),
        "synthetic": store.manifest.get("synthetic"),  # None for chips cut from real imagery
    }


def _sources(sources: Any) -> dict[str, Any]:
    """The manifest's sources as ``{role: path}`` (the full facts stay in the manifest)."""
    if not isinstance(sources, dict):
        return {}
    return {role: (facts.get("path") if isinstance(facts, dict) else facts)
            for role, facts in sources.items()}


def _describe_checkpoint(path: Path) -> dict[str, Any]:
    from geospade.formats.checkpoint import open_checkpoint

    ckpt = open_checkpoint(path)
    return {
        "kind": "checkpoint",
        "path": str(path),
        "step": ckpt.step,
        "scheme": ckpt.scheme.name,
        "classes": ckpt.scheme.names,
        "bands": [b.name for b in ckpt.bands],
        "chip_size": ckpt.chip_size,
        "generator": ckpt.generator_config,
        "discriminator": ckpt.config.get("discriminator", "patchgan"),
        "has_style_encoder": ckpt.has_encoder,
    }
