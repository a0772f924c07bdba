"""Describe a raster, a chip store or a checkpoint (what ``geospade info`` prints)."""

from __future__ import annotations

import json
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
    if path.is_dir():
        manifest = path / "manifest.json"
        if not manifest.is_file():
            raise GeospadeError(f"{path} is not a chip store (no manifest.json: incomplete?)")
        try:
            data = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise GeospadeError(f"cannot read {manifest}: {exc}") from None
        return {
            "kind": "chip-store",
            "path": str(path),
            "scheme": data.get("scheme", {}).get("name"),
            "classes": [c["name"] for c in data.get("scheme", {}).get("classes", [])],
            "bands": [b.get("name") for b in data.get("bands", [])],
            "dtype": (data.get("bands") or [{}])[0].get("dtype"),
            "chip_size": data.get("chip_size"),
            "stride": data.get("stride"),
            "counts": data.get("counts"),
        }
    if path.suffix in (".pt", ".pth", ".ckpt"):
        from geospade.training.checkpoint import load_checkpoint

        ckpt = load_checkpoint(path)
        return {
            "kind": "checkpoint",
            "path": str(path),
            "step": ckpt.get("step"),
            "scheme": ckpt["scheme"].get("name"),
            "classes": [c["name"] for c in ckpt["scheme"].get("classes", [])],
            "bands": [b.get("name") for b in ckpt["bands"]],
            "chip_size": ckpt["chip_size"],
            "generator": ckpt["generator_config"],
            "has_style_encoder": "encoder" in ckpt,
        }
    import rasterio

    try:
        with rasterio.open(path) as src:
            return {
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
            }
    except rasterio.errors.RasterioIOError as exc:
        raise GeospadeError(f"{path} is not a raster, chip store or checkpoint ({exc})") from None
