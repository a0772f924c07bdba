""""What would this look like if these fields were forest?" — vector edits with geospade.

    python examples/edit_fields_to_forest.py [DEMO_DIR] [--fields N]

Uses the outputs of `geospade demo --data landscape` (default folder: geospade-demo; run that
first). It turns the N largest low-vegetation (field) patches of the demo land cover into
polygons, writes
them to ``edits.gpkg`` with the class "tree canopy and shrubs", synthesizes the land cover with
those edits, and writes ``before.png`` / ``after.png`` (RGB of the synthetic imagery, without and
with the edits) and ``edited_landcover.tif`` next to them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
from PIL import Image
from rasterio.features import shapes
from shapely.geometry import shape

import geospade
from geospade.schemes import load_scheme


def field_polygons(landcover: Path, count: int) -> gpd.GeoDataFrame:
    """The ``count`` largest low-vegetation patches, as polygons in the raster's CRS."""
    scheme = load_scheme("chesapeake7")
    field_value = scheme.values[scheme.index_of("low vegetation")]
    with rasterio.open(landcover) as src:
        raw = src.read(1)
        patches = [shape(geom) for geom, value in
                   shapes(raw, mask=raw == field_value, transform=src.transform)
                   if value == field_value]
        crs = src.crs
    patches.sort(key=lambda p: p.area, reverse=True)
    chosen = patches[:count]
    return gpd.GeoDataFrame({"class": ["tree canopy and shrubs"] * len(chosen)},
                            geometry=chosen, crs=crs)


def rgb_png(path: Path, out: Path) -> None:
    """Write bands 1-3 of a uint8 GeoTIFF as a PNG."""
    with rasterio.open(path) as src:
        rgb = np.moveaxis(src.read([1, 2, 3]), 0, -1)
    Image.fromarray(rgb).save(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo_dir", nargs="?", default="geospade-demo", type=Path)
    parser.add_argument("--fields", type=int, default=5, help="how many field patches to edit")
    args = parser.parse_args()
    demo: Path = args.demo_dir
    landcover = demo / "landscape" / "landcover.tif"
    checkpoint = demo / "run" / "checkpoint.pt"
    if not (landcover.is_file() and checkpoint.is_file()):
        raise SystemExit(f"run `geospade demo --data landscape -o {demo}` first ({landcover} "
                         f"or {checkpoint} is missing)")

    edits = field_polygons(landcover, args.fields)
    edits_path = demo / "edits.gpkg"
    edits.to_file(edits_path, driver="GPKG")
    print(f"{len(edits)} field polygons ({edits.area.sum():.0f} m2) -> forest: {edits_path}")

    before, after = demo / "before.tif", demo / "after.tif"
    geospade.synthesize(checkpoint, landcover, before, overwrite=True)
    geospade.synthesize(checkpoint, landcover, after, edits=edits_path, edit_field="class",
                        save_landcover=demo / "edited_landcover.tif", overwrite=True)
    rgb_png(before, demo / "before.png")
    rgb_png(after, demo / "after.png")
    print(f"before: {demo / 'before.png'}  after: {demo / 'after.png'}")


if __name__ == "__main__":
    main()
