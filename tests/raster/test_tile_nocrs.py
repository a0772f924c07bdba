"""`geospade tile` on ML datasets without georeferencing: a PNG/TIFF image/label pair without a
CRS is pixel-aligned, a folder of such pairs is one chip store, and the store trains."""

from __future__ import annotations

import json
import warnings

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from cli_runner import run_cli
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin
from test_train_cli import TINY

from geospade.raster.tiling import tile

# The tests read the PNGs too; tile() itself is checked for warnings below.
pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

NO_CRS = "no CRS: chips are pixel-aligned, outputs carry no CRS"
# Class colours (R, G, B) the synthetic images are painted with, one row per class value 1..6.
COLOURS = np.array([[30, 60, 120], [40, 110, 40], [120, 170, 80], [190, 160, 120],
                    [150, 150, 150], [80, 80, 80]], dtype=np.int16)


def write_png_pair(labels_path, image_path, seed, height=96, width=128, driver="PNG"):
    """An 8-bit label PNG (chesapeake7 values 1-6, blocks of 16 px) and the RGB PNG painted
    from it, neither georeferenced; returns the labels."""
    rng = np.random.default_rng(seed)
    labels = np.kron(rng.integers(1, 7, size=(height // 16, width // 16)),
                     np.ones((16, 16), dtype=np.int64)).astype(np.uint8)
    image = COLOURS[labels - 1].transpose(2, 0, 1) + rng.integers(-8, 9, (3, height, width))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        for path, data in ((labels_path, labels[None]), (image_path, image.astype(np.uint8))):
            with rasterio.open(path, "w", driver=driver, width=width, height=height,
                               count=data.shape[0], dtype="uint8") as dst:
                dst.write(data)
    return labels


@pytest.fixture()
def png_pair(tmp_path):
    labels = write_png_pair(tmp_path / "labels.png", tmp_path / "image.png", seed=0)
    return tmp_path / "labels.png", tmp_path / "image.png", labels


def test_a_png_pair_without_crs_is_tiled_pixel_aligned(tmp_path, png_pair):
    landcover, imagery, labels = png_pair
    out = tmp_path / "chips"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = tile(landcover, imagery, out, size=32, quiet=True)
    assert not [w for w in caught if issubclass(w.category, NotGeoreferencedWarning)
                or "crs" in str(w.message)]
    assert summary.total == 12 and not summary.georeferenced and not summary.warped
    assert NO_CRS in summary.describe()
    with rasterio.open(imagery) as src:
        image = src.read()
    for row_off, col_off in ((0, 0), (32, 64), (64, 96)):
        name = f"{row_off:06d}_{col_off:06d}.tif"
        with rasterio.open(out / "images" / name) as chip:
            assert chip.crs is None
            # The chip's transform places it in the source's pixel columns and rows.
            assert chip.transform == Affine(1, 0, col_off, 0, 1, row_off)
            assert chip.colorinterp[0].name == "red"  # a PNG's RGB stays RGB
            np.testing.assert_array_equal(
                chip.read(), image[:, row_off : row_off + 32, col_off : col_off + 32])
        with rasterio.open(out / "masks" / name) as mask:
            assert mask.crs is None
            np.testing.assert_array_equal(
                mask.read(1), labels[row_off : row_off + 32, col_off : col_off + 32] - 1)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["crs"] is None and manifest["sources"]["imagery"]["crs"] is None
    assert manifest["rgb"] == [0, 1, 2]
    index = gpd.read_file(out / "index.gpkg", layer="chips")
    assert index.crs is None
    # Footprints in pixel coordinates (column, row) of the source.
    footprint = index.set_index("id").geometry["000032_000064"]
    assert footprint.bounds == (64.0, 32.0, 96.0, 64.0)


def test_only_one_raster_without_crs_or_two_sizes_are_refused(tmp_path, png_pair, capsys):
    landcover, imagery, _ = png_pair
    with rasterio.open(imagery) as src:
        profile, data = src.profile, src.read()
    georeferenced = tmp_path / "image.tif"
    profile.update(driver="GTiff", crs="EPSG:26918", transform=from_origin(0, 96, 1, 1))
    with rasterio.open(georeferenced, "w", **profile) as dst:
        dst.write(data)
    code, _, err = run_cli(["tile", str(landcover), str(georeferenced), "-o",
                            str(tmp_path / "a"), "--size", "32"], capsys)
    assert code == 1 and err.count("\n") == 1
    assert "land cover labels.png has no CRS but the imagery has one" in err
    smaller = tmp_path / "small.png"
    write_png_pair(tmp_path / "small_labels.png", smaller, seed=1, height=64)
    code, _, err = run_cli(["tile", str(landcover), str(smaller), "-o", str(tmp_path / "b"),
                            "--size", "32"], capsys)
    assert code == 1 and err.count("\n") == 1
    assert "(128 x 96 px) and imagery small.png (128 x 64 px) have no CRS" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_aoi_is_refused_without_crs(tmp_path, png_pair):
    from shapely.geometry import box

    from geospade.errors import GeospadeError

    aoi = tmp_path / "aoi.geojson"
    gpd.GeoDataFrame(geometry=[box(0, 0, 10, 10)], crs="EPSG:4326").to_file(aoi)
    with pytest.raises(GeospadeError, match="^aoi needs georeferenced rasters"):
        tile(png_pair[0], png_pair[1], tmp_path / "chips", size=32, aoi=aoi, quiet=True)


@pytest.fixture()
def folders(tmp_path):
    """Three pairs, labels as PNG and images as PNG or TIFF (stems match, suffixes need not)."""
    masks, images = tmp_path / "masks", tmp_path / "images"
    masks.mkdir()
    images.mkdir()
    labels = {}
    for seed, (stem, suffix) in enumerate([("a", ".png"), ("b", ".tif"), ("c", ".png")]):
        driver = "PNG" if suffix == ".png" else "GTiff"
        labels[stem] = write_png_pair(masks / f"{stem}.png", images / f"{stem}{suffix}", seed,
                                      driver=driver)
    (masks / "notes.txt").write_text("not a raster: left out")
    (images / "a.png.aux.xml").write_text("<PAMDataset/>")
    return masks, images, labels


def test_a_folder_of_pairs_is_one_store_with_ids_by_stem(tmp_path, folders, capsys):
    masks, images, labels = folders
    out = tmp_path / "chips"
    code, stdout, err = run_cli(["tile", str(masks), str(images), "-o", str(out), "--size",
                                 "32", "--val-fraction", "0.2"], capsys)
    assert code == 0, err
    assert "tiled 3 land-cover/imagery pairs matched by file name" in stdout
    assert NO_CRS in stdout
    index = gpd.read_file(out / "index.gpkg", layer="chips")
    assert len(index) + json.loads((out / "manifest.json").read_text())["dropped"][
        "straddles_split"] == 36
    assert index.id.is_unique
    assert {i.split("_")[0] for i in index.id} == {"a", "b", "c"}
    assert set(index.split) == {"train", "val"}
    with rasterio.open(out / "masks" / "b_000064_000032.tif") as mask:
        np.testing.assert_array_equal(mask.read(1), labels["b"][64:96, 32:64] - 1)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["crs"] is None and manifest["area"] is None
    assert sorted(manifest["sources"]["pairs"]) == ["a", "b", "c"]
    assert manifest["sources"]["pairs"]["b"]["imagery"]["path"].endswith("b.tif")
    assert manifest["sources"]["landcover"]["files"] == 3


def test_a_folder_gives_the_same_store_with_two_workers(tmp_path, folders):
    masks, images, _ = folders
    kwargs = dict(size=32, val_fraction=0.2, quiet=True)
    tile(masks, images, tmp_path / "one", workers=1, **kwargs)
    tile(masks, images, tmp_path / "two", workers=2, **kwargs)
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.tif"))
    assert len(files) > 40
    assert files == sorted(p.relative_to(tmp_path / "two")
                           for p in (tmp_path / "two").rglob("*.tif"))
    for rel in files:
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes()


def test_folders_whose_files_do_not_pair_are_refused(tmp_path, folders, capsys):
    masks, images, _ = folders
    (images / "c.png").unlink()
    code, _, err = run_cli(["tile", str(masks), str(images), "-o", str(tmp_path / "chips")],
                           capsys)
    assert code == 1 and err.count("\n") == 1
    assert f"1 land-cover file(s) have no file of the same name in {images}: c.png" in err
    code, _, err = run_cli(["tile", str(masks), str(images / "a.png"), "-o",
                            str(tmp_path / "chips")], capsys)
    assert code == 1 and "is a folder but" in err
    write_png_pair(masks / "x.png", images / "a.tif", seed=5)  # a.png and a.tif: which one?
    code, _, err = run_cli(["tile", str(masks), str(images), "-o", str(tmp_path / "chips")],
                           capsys)
    assert code == 1 and "holds two files named 'a' (a.png, a.tif)" in err
    assert not (tmp_path / "chips").exists()


def test_a_no_crs_pair_tiles_and_trains(tmp_path, png_pair, capsys):
    landcover, imagery, _ = png_pair
    chips, run = tmp_path / "chips", tmp_path / "run"
    code, _, err = run_cli(["tile", str(landcover), str(imagery), "-o", str(chips), "--size",
                            "32", "--scheme", "chesapeake7", "-q"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["train", str(chips), "-o", str(run), "--steps", "2", *TINY],
                           capsys)
    assert code == 0, err
    import torch

    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 2


def test_a_folder_whose_pairs_differ_in_bands_or_that_holds_out_is_refused(tmp_path, folders,
                                                                            capsys):
    masks, images, _ = folders
    code, _, err = run_cli(["tile", str(masks), str(images), "-o", str(images / "chips")],
                           capsys)
    assert code == 1 and err.count("\n") == 1
    assert f"lies inside the imagery ({images})" in err
    assert not (images / "chips").exists()
    grey = np.full((1, 96, 128), 100, dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(images / "c.png", "w", driver="PNG", width=128, height=96, count=1,
                           dtype="uint8") as dst:
            dst.write(grey)
    code, _, err = run_cli(["tile", str(masks), str(images), "-o", str(tmp_path / "chips"),
                            "--size", "32"], capsys)
    assert code == 1 and err.count("\n") == 1
    assert "imagery c.png has other bands than a.png (1 x uint8 vs 3 x uint8" in err
