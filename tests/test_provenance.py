"""Provenance tags: what synthesize, stitch and chip writers record, and geospade info shows."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from cli_runner import run_cli
from rasterio.crs import CRS
from rasterio.transform import from_origin
from shapely.geometry import box
from test_stitch import write_tile
from test_synthesize import make_checkpoint

from geospade import __version__
from geospade.formats import chip_store
from geospade.formats.checkpoint import save_checkpoint
from geospade.landscape import make_landscape
from geospade.provenance import (
    Provenance,
    chip_tags,
    common_tags,
    file_sha256,
    read_tags,
)
from geospade.raster import strip_writer
from geospade.raster.stitch import stitch
from geospade.synthesis import synthesize


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def stepped_ckpt(tmp_path_factory) -> Path:
    """A tiny checkpoint that says it was trained for 1234 steps."""
    root = tmp_path_factory.mktemp("ckpt")
    path = make_checkpoint(root / "plain.pt")
    data = __import__("torch").load(path, weights_only=True)
    data["step"] = 1234
    return save_checkpoint(root / "stepped.pt", data)


@pytest.fixture(scope="module")
def landcover(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lc")
    return make_landscape(root / "lc.tif", root / "im.tif", 300, 200, feature_scale=0.3,
                          seed=3).landcover


def test_file_sha256_streams_the_whole_file(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(bytes(range(256)) * 1000)
    assert file_sha256(path, chunk=1000) == sha256(path)  # 256 reads, same digest


def test_the_loaded_model_knows_its_checkpoint_step(stepped_ckpt):
    """Provenance takes the step from the model synthesis loaded: the file is read once."""
    from geospade.synthesis.model import load_synthesis_model

    assert load_synthesis_model(stepped_ckpt, "cpu").step == 1234


@pytest.mark.parametrize("cog,raw", [(False, True), (False, False), (True, True),
                                     (True, False)])
def test_synthesized_raster_says_how_it_was_made(tmp_path, stepped_ckpt, landcover,
                                                 monkeypatch, cog, raw):
    if not raw:
        monkeypatch.setattr(strip_writer, "disk_has_room", lambda path, nbytes: False)
    out = tmp_path / "out.tif"
    synthesize(stepped_ckpt, landcover, out, cog=cog, overlap=8, seed=5, quiet=True)
    with rasterio.open(out) as src:
        tags = src.tags()
    assert tags["GEOSPADE_SYNTHETIC"] == "YES"
    assert tags["GEOSPADE_VERSION"] == __version__
    assert tags["GEOSPADE_CHECKPOINT_SHA256"] == sha256(stepped_ckpt)
    assert tags["GEOSPADE_CHECKPOINT_STEP"] == "1234"
    assert tags["GEOSPADE_OVERLAP"] == "8"
    assert tags["GEOSPADE_SOURCE_LANDCOVER"] == "lc.tif"
    assert "GEOSPADE_SEED" not in tags  # no VAE, no noise: the seed decides nothing
    assert "GEOSPADE_EDITS" not in tags
    assert tags["TIFFTAG_SOFTWARE"] == f"geospade {__version__}"
    assert "ynthetic" in tags["TIFFTAG_IMAGEDESCRIPTION"]
    assert not any(re.search(r"\d{4}-\d\d-\d\d|\d\d:\d\d", v) for v in tags.values())  # no time


def test_seed_edits_and_class_map_are_recorded(tmp_path, landcover):
    vae = make_checkpoint(tmp_path / "vae.pt", use_vae=True)
    with rasterio.open(landcover) as src:
        left, bottom, right, top = src.bounds
    edits = tmp_path / "fields.gpkg"
    gpd.GeoDataFrame({"cls": [2]}, geometry=[box(left, bottom, left + 40, bottom + 40)],
                     crs="EPSG:26918").to_file(edits)
    synthesize(vae, landcover, tmp_path / "out.tif", seed=7, edits=edits, edit_field="cls",
               save_landcover=tmp_path / "classes.tif", quiet=True)
    tags = read_tags(tmp_path / "out.tif")
    assert tags["GEOSPADE_SEED"] == "7"
    assert tags["GEOSPADE_EDITS"] == "fields.gpkg"
    assert tags["GEOSPADE_EDITS_SHA256"] == sha256(edits)
    saved = read_tags(tmp_path / "classes.tif")
    assert saved["GEOSPADE_EDITS_SHA256"] == sha256(edits)
    assert saved["GEOSPADE_SOURCE_LANDCOVER"] == "lc.tif"
    assert "GEOSPADE_SYNTHETIC" not in saved and "GEOSPADE_CHECKPOINT_SHA256" not in saved


def test_same_run_same_bytes_with_the_tags(tmp_path, stepped_ckpt, landcover):
    synthesize(stepped_ckpt, landcover, tmp_path / "a.tif", quiet=True)
    synthesize(stepped_ckpt, landcover, tmp_path / "b.tif", quiet=True)
    assert (tmp_path / "a.tif").read_bytes() == (tmp_path / "b.tif").read_bytes()


def test_stitch_keeps_the_provenance_its_tiles_share(tmp_path, stepped_ckpt, landcover):
    synthesize(stepped_ckpt, landcover, None, tiles_only=tmp_path / "tiles", overlap=8,
               quiet=True)
    tiles = sorted((tmp_path / "tiles").glob("*.tif"))
    assert len(tiles) > 1
    stitch(tiles, tmp_path / "out.tif", cog=True, quiet=True)
    tags = read_tags(tmp_path / "out.tif")
    assert tags == read_tags(tiles[0])
    assert tags["GEOSPADE_CHECKPOINT_SHA256"] == sha256(stepped_ckpt)


def test_stitch_of_foreign_tiles_says_only_who_joined_them(tmp_path):
    data = np.ones((1, 20, 20), np.uint8)
    a = write_tile(tmp_path / "a.tif", data, 0, 0)
    b = write_tile(tmp_path / "b.tif", data, 0, 15)
    for path, seed in ((a, "1"), (b, "2")):
        with rasterio.open(path, "r+") as dst:
            dst.update_tags(GEOSPADE_SEED=seed, GEOSPADE_OVERLAP="4", OTHER="x")
    stitch([a, b], tmp_path / "out.tif", quiet=True)
    with rasterio.open(tmp_path / "out.tif") as src:
        tags = src.tags()
    assert tags["GEOSPADE_OVERLAP"] == "4"  # shared
    assert "GEOSPADE_SEED" not in tags and "OTHER" not in tags  # differ / not provenance
    assert tags["GEOSPADE_VERSION"] == __version__
    assert tags["TIFFTAG_SOFTWARE"] == f"geospade {__version__}"
    assert common_tags([]) == {}


def test_chips_carry_version_and_sources_in_every_clone(tmp_path):
    crs = CRS.from_epsg(26918)
    tags = chip_tags("/data/lc.tif", "/data/naip.tif")
    assert tags == {"GEOSPADE_VERSION": __version__, "TIFFTAG_SOFTWARE": f"geospade {__version__}",
                    "GEOSPADE_SOURCE_LANDCOVER": "lc.tif", "GEOSPADE_SOURCE_IMAGERY": "naip.tif"}
    writer = chip_store.ChipWriter(chip_store.image_profile(4, "uint8", crs, None, True),
                                   descriptions=["red", "green", "blue", "nir"], tags=tags)
    data = np.random.default_rng(0).integers(0, 250, size=(4, 32, 32)).astype("uint8")
    writer.write(tmp_path / "first.tif", data, from_origin(0.0, 32.0, 1.0, 1.0))
    transform = from_origin(360010.0, 4350000.0, 1.0, 1.0)
    writer.write(tmp_path / "cloned.tif", data, transform)
    assert all(t is not None for t in writer._templates.values())  # the fast path
    writer._templates = {k: None for k in writer._templates}
    writer.write(tmp_path / "gdal.tif", data, transform)
    assert (tmp_path / "cloned.tif").read_bytes() == (tmp_path / "gdal.tif").read_bytes()
    with rasterio.open(tmp_path / "cloned.tif") as src:
        assert {k: src.tags()[k] for k in tags} == tags


def test_provenance_tags_leave_out_what_is_not_known():
    tags = Provenance(overlap=4, version="9.9").tags()
    assert tags == {"GEOSPADE_SYNTHETIC": "YES", "GEOSPADE_VERSION": "9.9",
                    "GEOSPADE_OVERLAP": "4", "TIFFTAG_SOFTWARE": "geospade 9.9",
                    "TIFFTAG_IMAGEDESCRIPTION": tags["TIFFTAG_IMAGEDESCRIPTION"]}


def test_info_shows_provenance(tmp_path, capsys, stepped_ckpt, landcover):
    synthesize(stepped_ckpt, landcover, tmp_path / "out.tif", quiet=True)
    code, out, _ = run_cli(["info", str(tmp_path / "out.tif")], capsys)
    assert code == 0
    lines = out.splitlines()
    start = lines.index("provenance")
    shown = dict(line.split(None, 1) for line in lines[start + 1:start + 9])
    assert shown["GEOSPADE_SYNTHETIC"] == "YES"
    assert shown["GEOSPADE_CHECKPOINT_SHA256"] == sha256(stepped_ckpt)
    assert shown["GEOSPADE_CHECKPOINT_STEP"] == "1234"
    code, out, _ = run_cli(["info", "--json", str(tmp_path / "out.tif")], capsys)
    assert json.loads(out)["provenance"]["GEOSPADE_OVERLAP"] == "16"
