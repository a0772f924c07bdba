"""STAC: the Item beside a synthesized or stitched raster, and a chip store's Collection."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from cli_runner import run_cli
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import RasterExtension
from rasterio.warp import transform as warp
from test_stitch import write_tile
from test_synthesize import make_checkpoint

from geospade.errors import GeospadeError
from geospade.landscape import make_landscape
from geospade.stac import (
    item_path,
    provenance_properties,
    write_item,
    write_store_collection,
)
from geospade.synthesis import synthesize


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="module")
def landcover(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lc")
    return make_landscape(root / "lc.tif", root / "im.tif", 300, 200, feature_scale=0.3,
                          nodata_fraction=0.2, seed=4).landcover


def test_synthesize_stac_item_reads_back_with_pystac(tmp_path, capsys, ckpt, landcover):
    out = tmp_path / "out.tif"
    code, text, err = run_cli(["synthesize", str(ckpt), str(landcover), "-o", str(out),
                               "--stac", "--cog"], capsys)
    assert code == 0, err
    assert "STAC Item -> " in text
    item = pystac.Item.from_file(str(tmp_path / "out.json"))
    assert item.id == "out" and item.datetime is not None
    proj = ProjectionExtension.ext(item)
    with rasterio.open(out) as src, rasterio.open(landcover) as lc:
        assert proj.epsg == 26918
        assert proj.shape == [src.height, src.width]
        assert proj.transform == list(src.transform)[:6]
        assert proj.bbox == list(src.bounds)
        data = src.read(masked=True)
        valid_percent = 100.0 * (lc.read(1) != 0).mean()
        # The footprint is the raster's, in WGS84: its centre lies inside the bbox.
        cx, cy = src.xy(src.height // 2, src.width // 2)
    (lon,), (lat,) = warp("EPSG:26918", "EPSG:4326", [cx], [cy])
    west, south, east, north = item.bbox
    assert west < lon < east and south < lat < north
    assert -80 < west < -70 and 35 < south < 45  # EPSG:26918 is UTM 18N
    assert item.geometry["type"] == "Polygon"
    ring = np.array(item.geometry["coordinates"][0])
    assert ring[:, 0].min() == pytest.approx(west) and ring[:, 1].max() == pytest.approx(north)
    asset = item.assets["data"]
    assert asset.href.endswith("out.tif") and asset.media_type == pystac.MediaType.COG
    assert Path(asset.get_absolute_href()).resolve() == out.resolve()
    bands = RasterExtension.ext(asset).bands
    assert len(bands) == 4
    for b, band in enumerate(bands):
        assert band.data_type == "uint8" and band.nodata == 0
        stats = band.statistics
        assert 1 <= stats.minimum <= stats.mean <= stats.maximum <= 255
        assert stats.minimum >= data[b].min() and stats.maximum <= data[b].max()
        assert stats.valid_percent == pytest.approx(valid_percent, abs=2)
    props = item.properties
    assert props["geospade:synthetic"] is True
    assert props["geospade:checkpoint_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert props["geospade:checkpoint_step"] == 0 and props["geospade:overlap"] == 16
    assert props["geospade:source_landcover"] == "lc.tif"


def test_stac_follows_the_output_rules(tmp_path, capsys, ckpt, landcover):
    out = tmp_path / "out.tif"
    notes = tmp_path / "out.json"
    notes.write_text('{"my": "notes"}')
    base = ["synthesize", str(ckpt), str(landcover), "-o", str(out), "--stac", "-q"]
    code, _, err = run_cli(base, capsys)
    assert code == 1 and "out.json already exists (use --overwrite" in err
    code, _, err = run_cli([*base, "--overwrite"], capsys)
    assert code == 1 and "exists and is not a STAC Item" in err
    assert notes.read_text() == '{"my": "notes"}' and not out.exists()
    notes.unlink()
    assert run_cli(base, capsys)[0] == 0
    first = json.loads(notes.read_text())
    assert run_cli([*base, "--overwrite"], capsys)[0] == 0  # a STAC Item is replaced
    assert json.loads(notes.read_text())["id"] == first["id"] == "out"


def test_stac_never_replaces_an_input(tmp_path, ckpt, landcover):
    style = tmp_path / "look.json"  # an input named like the Item of look.tif
    shutil.copy(landcover, style)
    with pytest.raises(GeospadeError, match="is the land cover"):
        synthesize(ckpt, style, tmp_path / "look.tif", stac=True, overwrite=True, quiet=True)
    assert not (tmp_path / "look.tif").exists()


def test_stac_refused_with_tiles_only_and_on_the_class_map(tmp_path, ckpt, landcover):
    with pytest.raises(GeospadeError, match="with tiles_only, give stac=True to "
                                            "'geospade stitch'"):
        synthesize(ckpt, landcover, None, tiles_only=tmp_path / "tiles", stac=True, quiet=True)
    with pytest.raises(GeospadeError, match="is where stac=True writes the STAC Item of out"):
        synthesize(ckpt, landcover, tmp_path / "a.tif", save_landcover=tmp_path / "a.json",
                   stac=True, quiet=True)
    assert not list(tmp_path.iterdir())


def test_stitch_writes_an_item_of_the_joined_raster(tmp_path, capsys):
    a = write_tile(tmp_path / "a.tif", np.full((1, 20, 20), 10, np.uint8), 0, 0, nodata=0)
    b = write_tile(tmp_path / "b.tif", np.full((1, 20, 20), 30, np.uint8), 0, 30, nodata=0)
    code, text, err = run_cli(["stitch", str(a), str(b), "-o", str(tmp_path / "m.tif"),
                               "--stac"], capsys)
    assert code == 0, err
    assert f"(STAC Item {tmp_path / 'm.json'})" in text
    item = pystac.Item.from_file(str(item_path(tmp_path / "m.tif")))
    assert ProjectionExtension.ext(item).shape == [20, 50]
    assert ProjectionExtension.ext(item).epsg == 32618
    (band,) = RasterExtension.ext(item.assets["data"]).bands
    assert band.statistics.minimum == 10 and band.statistics.maximum == 30
    assert band.statistics.valid_percent == pytest.approx(80.0)  # a 10-px gap of 50
    assert item.assets["data"].media_type == pystac.MediaType.GEOTIFF
    assert "geospade:synthetic" not in item.properties  # the tiles were not geospade's
    assert item.properties["geospade:version"]


def test_item_of_a_crs_without_epsg_code_has_wkt2(tmp_path):
    wkt = ('PROJCS["custom",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,'
           '298.257223563]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],'
           'PROJECTION["Transverse_Mercator"],PARAMETER["latitude_of_origin",0],'
           'PARAMETER["central_meridian",-74.5],PARAMETER["scale_factor",0.9996],'
           'PARAMETER["false_easting",500000],PARAMETER["false_northing",0],UNIT["metre",1]]')
    path = write_tile(tmp_path / "odd.tif", np.ones((1, 8, 8), np.float32), 0, 0, crs=wkt)
    with rasterio.open(path, "r+") as dst:
        dst.nodata = float("nan")
    item = pystac.Item.from_file(str(write_item(path)))
    proj = ProjectionExtension.ext(item)
    assert proj.epsg is None and "Transverse" in proj.wkt2
    (band,) = RasterExtension.ext(item.assets["data"]).bands
    assert band.nodata == "nan" and band.data_type == "float32"


def test_provenance_properties_are_typed():
    assert provenance_properties({"GEOSPADE_SYNTHETIC": "YES", "GEOSPADE_SEED": "3",
                                  "GEOSPADE_EDITS": "f.gpkg", "OTHER": "1",
                                  "TIFFTAG_SOFTWARE": "geospade 1"}) == {
        "geospade:synthetic": True, "geospade:seed": 3, "geospade:edits": "f.gpkg"}


def test_chip_store_collection(tmp_path, chip_store):
    store = tmp_path / "chips"
    shutil.copytree(chip_store, store)
    path = write_store_collection(store)
    collection = pystac.Collection.from_file(str(path))
    assert collection.id == "chips"
    (bbox,) = collection.extent.spatial.bboxes
    assert -80 < bbox[0] < bbox[2] < -70 and 35 < bbox[1] < bbox[3] < 45
    classes = collection.summaries.get_list("classification:classes")
    assert [c["description"] for c in classes][:2] == ["water", "tree canopy and shrubs"]
    assert classes[1]["name"] == "tree_canopy_and_shrubs" and classes[0]["value"] == 0
    assert collection.extra_fields["geospade:counts"] == {"train": 12, "val": 4, "test": 0}
    assert {a.href for a in collection.assets.values()} == {"./index.gpkg", "./manifest.json"}
    path.write_text("{}")
    with pytest.raises(GeospadeError, match="is not a STAC Collection"):
        write_store_collection(store)


def test_tile_stac_writes_the_store_collection(tmp_path, capsys, landscape_pair):
    out = tmp_path / "chips"
    code, stdout, err = run_cli(["tile", str(landscape_pair[0]), str(landscape_pair[1]), "-o",
                                 str(out), "--size", "64", "--stac"], capsys)
    assert code == 0, err
    collection = pystac.Collection.from_file(str(out / "collection.json"))
    assert collection.extra_fields["geospade:counts"]["train"] == 16
    assert f"STAC Collection: {out / 'collection.json'}" in stdout
