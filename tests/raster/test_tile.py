"""`geospade tile`: chips equal the source windows, alignment, split, store contents, bad input."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from geospade.formats.chip_store import open_chip_store
from geospade.normalization import BandStats
from geospade.raster.tiling import tile
from geospade.schemes import CHESAPEAKE7, IGNORE_INDEX


def test_chip_pixels_and_transform_equal_the_source_window(chip_store, landscape_pair):
    landcover, imagery = landscape_pair
    index = gpd.read_file(chip_store / "index.gpkg", layer="chips")
    assert len(index) == 16
    with rasterio.open(landcover) as lab, rasterio.open(imagery) as img:
        for row in index.itertuples():
            window = Window(row.col_off, row.row_off, row.width, row.height)
            with rasterio.open(chip_store / row.image) as chip:
                assert chip.transform == img.window_transform(window)
                assert chip.crs == img.crs
                np.testing.assert_array_equal(chip.read(), img.read(window=window))
                assert chip.descriptions == img.descriptions
            with rasterio.open(chip_store / row.mask) as mask:
                assert mask.transform == lab.window_transform(window)
                assert mask.dtypes[0] == "uint8"
                expected = CHESAPEAKE7.encode(lab.read(1, window=window), lab.nodata)
                np.testing.assert_array_equal(mask.read(1), expected)
                assert mask.colormap(1)[0][:3] == CHESAPEAKE7.classes[0].color


def test_manifest_lists_counts_bands_and_sources(chip_store, landscape_pair):
    manifest = json.loads((chip_store / "manifest.json").read_text())
    assert manifest["format"] == "geospade-chips" and manifest["format_version"] == 1
    assert manifest["counts"] == {"train": 12, "val": 4, "test": 0}
    assert manifest["chip_size"] == 64 and manifest["stride"] == 64
    assert manifest["ignore_index"] == IGNORE_INDEX
    bands = [BandStats.from_dict(b) for b in manifest["bands"]]
    assert [b.name for b in bands] == ["red", "green", "blue", "nir"]
    assert all((b.low, b.high, b.dtype) == (0.0, 255.0, "uint8") for b in bands)
    with rasterio.open(landscape_pair[0]) as lab:
        counts = np.bincount(CHESAPEAKE7.encode(lab.read(1), lab.nodata).ravel(), minlength=256)
        assert manifest["sources"]["landcover"]["transform"] == list(lab.transform)[:6]
    pixels = np.sum([manifest["class_pixels"][s] for s in ("train", "val", "test")], axis=0)
    np.testing.assert_array_equal(pixels, counts[: CHESAPEAKE7.num_classes])


def index_of(store):
    return gpd.read_file(store / "index.gpkg", layer="chips").sort_values("id")


def reproject_raster(src_path, dst_path, crs, resolution, **creation):
    """Warp a raster into another CRS (bilinear), as a user's imagery in another CRS would be."""
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    with rasterio.open(src_path) as src:
        transform, width, height = calculate_default_transform(
            src.crs, crs, src.width, src.height, *src.bounds, resolution=resolution
        )
        profile = dict(src.profile, crs=crs, transform=transform, width=width, height=height,
                       tiled=False, compress=None, **{"photometric": "minisblack", **creation})
        profile.pop("blockxsize", None)
        profile.pop("blockysize", None)
        with rasterio.open(dst_path, "w", **profile) as dst:
            for b in range(1, src.count + 1):
                reproject(rasterio.band(src, b), rasterio.band(dst, b),
                          resampling=Resampling.bilinear)
            dst.descriptions = src.descriptions


@pytest.mark.parametrize("crs, resolution", [("EPSG:4326", 1e-5), ("EPSG:3857", 1.2)])
def test_imagery_in_another_crs_is_warped_onto_the_label_grid(tmp_path, landscape_pair, crs,
                                                              resolution):
    landcover, imagery = landscape_pair
    other = tmp_path / "imagery_other.tif"
    reproject_raster(imagery, other, crs, resolution)
    out = tmp_path / "chips"
    summary = tile(landcover, other, out, size=64, max_nodata=1.0, quiet=True)
    assert summary.warped
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["warped"] is True
    index = index_of(out)
    with rasterio.open(landcover) as lab, rasterio.open(imagery) as truth:
        for row in index.itertuples():
            window = Window(row.col_off, row.row_off, 64, 64)
            with rasterio.open(out / row.image) as chip:
                # The chip lies on the land-cover grid, not the imagery's.
                assert chip.crs == lab.crs
                assert chip.transform == lab.window_transform(window)
                assert chip.dtypes[0] == "uint8" and chip.count == 4
                image = chip.read().astype(float)
                valid = chip.read_masks(1) > 0 if chip.nodata is not None else None
            with rasterio.open(out / row.mask) as m:
                mask = m.read(1)
            expected = truth.read(window=window).astype(float)
            ok = (mask != 255) if valid is None else valid & (mask != 255)
            if ok.sum() < 500:
                continue
            # Geometry: the warped imagery matches the imagery that was aligned with the labels.
            r = np.corrcoef(image[3][ok], expected[3][ok])[0, 1]
            assert r > 0.9, (row.id, r)
    # The label-driven pattern: NIR is higher over tree canopy than over roads and water.
    forest, roads = [], []
    for row in index.itertuples():
        with rasterio.open(out / row.image) as chip, rasterio.open(out / row.mask) as m:
            nir, mask = chip.read(4), m.read(1)
        forest.append(nir[mask == 1])
        roads.append(nir[mask == 5])
    assert np.concatenate(forest).mean() > np.concatenate(roads).mean() + 40


def test_warping_imagery_whose_last_band_gdal_calls_alpha(tmp_path, landscape_pair):
    landcover, imagery = landscape_pair
    rgba = tmp_path / "rgba.tif"
    reproject_raster(imagery, rgba, "EPSG:4326", 1e-5, photometric="rgb", alpha="yes")
    with rasterio.open(rgba) as src:
        assert src.colorinterp[3].name == "alpha"
    window = Window(64, 64, 64, 64)
    # --alpha mask: the alpha band is the validity mask and not a chip band.
    masked = tile(landcover, rgba, tmp_path / "masked", size=64, max_nodata=1.0, alpha="mask",
                  quiet=True)
    assert masked.warped and masked.total == 16
    assert masked.alpha == ("band 4 is flagged alpha: used as the validity mask and dropped; "
                            "--alpha band keeps it as data")
    with rasterio.open(landcover) as lab, rasterio.open(
        tmp_path / "masked" / "images" / "000064_000064.tif"
    ) as chip:
        assert chip.transform == lab.window_transform(window)
        assert chip.count == 3 and chip.read(1).std() > 5
        labels = CHESAPEAKE7.encode(lab.read(1, window=window), lab.nodata)
    # --alpha band, and auto (NIR holds more than 0 and 255): band 4 is warped as data like the
    # others, and masks nothing.
    kept = tile(landcover, rgba, tmp_path / "kept", size=64, max_nodata=1.0, alpha="band",
                quiet=True)
    assert kept.alpha.startswith("band 4 is flagged alpha: kept as data")
    auto = tile(landcover, rgba, tmp_path / "auto", size=64, max_nodata=1.0, quiet=True)
    assert auto.alpha.startswith("band 4 is flagged alpha but holds other values")
    with rasterio.open(tmp_path / "kept" / "images" / "000064_000064.tif") as chip, \
            rasterio.open(imagery) as truth:
        assert chip.count == 4
        nir, expected = chip.read(4).astype(float), truth.read(4, window=window).astype(float)
    assert np.corrcoef(nir.ravel(), expected.ravel())[0, 1] > 0.9
    with rasterio.open(tmp_path / "kept" / "masks" / "000064_000064.tif") as m:
        np.testing.assert_array_equal(m.read(1), labels)


def test_imagery_on_a_pixel_shifted_larger_grid_is_read_without_warping(tmp_path, landscape_pair):
    landcover, imagery = landscape_pair
    with rasterio.open(imagery) as src:
        data, transform, crs = src.read(), src.transform, src.crs
    # Imagery starting 10 px right of and 20 px below the land cover's origin, 40 px short.
    shifted = tmp_path / "shifted.tif"
    # minisblack: GDAL's default for 4 uint8 bands would flag band 4 (NIR) as alpha
    # (test_tile_bands.py covers that case).
    with rasterio.open(shifted, "w", driver="GTiff", width=216, height=236, count=4,
                       dtype="uint8", crs=crs.to_proj4(), photometric="minisblack",
                       transform=transform * transform.translation(10, 20)) as dst:
        dst.write(data[:, 20:, 10:226])
    out = tmp_path / "chips"
    summary = tile(landcover, shifted, out, size=64, quiet=True)
    assert not summary.warped  # proj4 spelling of the same CRS counts as the same CRS
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["area"] == {"row_off": 20, "col_off": 10, "width": 216, "height": 236}
    index = index_of(out)
    # Windows cover the overlap; the last row/column is shifted back to its edge.
    assert sorted(set(index.row_off)) == [20, 84, 148, 192]
    assert sorted(set(index.col_off)) == [10, 74, 138, 162]
    for row in index.itertuples():
        window = Window(row.col_off, row.row_off, 64, 64)
        with rasterio.open(out / row.image) as chip:
            np.testing.assert_array_equal(chip.read(), data[:, row.row_off : row.row_off + 64,
                                                            row.col_off : row.col_off + 64])
            assert chip.transform == rasterio.windows.transform(window, transform)


def test_overlapping_chips_never_straddle_train_and_val(tmp_path, landscape_pair):
    out = tmp_path / "chips"
    summary = tile(*landscape_pair, out, size=32, stride=16, block=3, val_fraction=0.3,
                   test_fraction=0.2, seed=3, quiet=True)
    index = index_of(out)
    assert set(index.split) == {"train", "val", "test"}
    assert summary.dropped["straddles_split"] > 0
    train = index[index.split == "train"].geometry.union_all()
    for split in ("val", "test"):
        held_out = index[index.split == split].geometry.union_all()
        assert held_out.intersection(train).area == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == index.split.value_counts().reindex(
        ["train", "val", "test"], fill_value=0).to_dict()
    assert manifest["dropped"]["straddles_split"] == summary.dropped["straddles_split"]


def test_float_labels_with_integral_values_give_the_same_masks(tmp_path, landscape_pair):
    landcover, imagery = landscape_pair
    with rasterio.open(landcover) as src:
        profile, data = src.profile, src.read(1)
    floats = tmp_path / "lc_float.tif"
    profile.update(dtype="float32", nodata=-9999.0)
    values = data.astype(np.float32)
    values[:8, :8] = -9999.0
    with rasterio.open(floats, "w", **profile) as dst:
        dst.write(values, 1)
    tile(floats, imagery, tmp_path / "a", size=64, max_nodata=0.5, quiet=True)
    tile(landcover, imagery, tmp_path / "b", size=64, quiet=True)
    for name in ("000000_000064", "000128_000192"):
        with rasterio.open(tmp_path / "a" / "masks" / f"{name}.tif") as a, rasterio.open(
            tmp_path / "b" / "masks" / f"{name}.tif"
        ) as b:
            np.testing.assert_array_equal(a.read(), b.read())
    with rasterio.open(tmp_path / "a" / "masks" / "000000_000000.tif") as a:
        corner = a.read(1)
    assert (corner[:8, :8] == 255).all() and (corner[8:, 8:] != 255).all()


def test_nodata_is_ignore_never_class_zero_and_max_nodata_filters(tmp_path):
    from geospade.landscape import make_landscape

    paths = make_landscape(tmp_path / "lc.tif", tmp_path / "img.tif", width=128, height=128,
                           nodata_fraction=0.5, feature_scale=0.3)
    lc, img = paths.landcover, paths.imagery
    strict = tile(lc, img, tmp_path / "strict", size=32, quiet=True)
    loose = tile(lc, img, tmp_path / "loose", size=32, max_nodata=1.0, quiet=True)
    assert loose.total == 16 and strict.total + strict.dropped["nodata"] == 16
    assert strict.dropped["nodata"] > 0
    index = index_of(tmp_path / "loose")
    with rasterio.open(lc) as src:
        raw = src.read(1)
    for row in index.itertuples():
        with rasterio.open(tmp_path / "loose" / row.mask) as m:
            mask = m.read(1)
        window_raw = raw[row.row_off : row.row_off + 32, row.col_off : row.col_off + 32]
        assert ((window_raw == 0) == (mask == 255)).all()  # 0 is chesapeake7 nodata
        assert row.nodata_fraction == pytest.approx((mask == 255).mean())
        fracs = [getattr(row, c) for c in open_chip_store(tmp_path / "loose").fraction_columns]
        assert sum(fracs) + row.nodata_fraction == pytest.approx(1.0)
    assert (index_of(tmp_path / "strict").nodata_fraction == 0).all()


def test_imagery_nodata_counts_as_nodata(tmp_path, landscape_pair):
    landcover, imagery = landscape_pair
    with rasterio.open(imagery) as src:
        profile, data = src.profile, src.read()
    data[:, 100:110, 100:120] = 0
    holes = tmp_path / "holes.tif"
    with rasterio.open(holes, "w", **dict(profile, nodata=0)) as dst:
        dst.write(data)
    summary = tile(landcover, holes, tmp_path / "chips", size=64, max_nodata=0.1, quiet=True)
    assert summary.total == 16
    with rasterio.open(tmp_path / "chips" / "masks" / "000064_000064.tif") as m:
        mask = m.read(1)
    assert (mask[36:46, 36:56] == 255).all()
    assert (mask == 255).sum() == 200
    manifest = json.loads((tmp_path / "chips" / "manifest.json").read_text())
    assert manifest["bands"][0]["nodata"] == 0


def test_aoi_in_another_crs_keeps_only_intersecting_chips(tmp_path, landscape_pair):
    from shapely.geometry import box

    landcover, imagery = landscape_pair
    with rasterio.open(landcover) as src:
        left, top = src.bounds.left, src.bounds.top
    # A 50 x 50 m square inside chip (64, 64) .. (128, 128), given in EPSG:4326.
    square = gpd.GeoDataFrame(geometry=[box(left + 70, top - 120, left + 120, top - 70)],
                              crs="EPSG:26918").to_crs("EPSG:4326")
    aoi = tmp_path / "aoi.geojson"
    square.to_file(aoi, driver="GeoJSON")
    summary = tile(landcover, imagery, tmp_path / "chips", size=64, aoi=aoi, quiet=True)
    assert list(index_of(tmp_path / "chips").id) == ["000064_000064"]
    assert summary.dropped["outside_aoi"] == 15


def test_two_workers_write_the_same_store_as_one(tmp_path, landscape_pair):
    one = tmp_path / "one"
    two = tmp_path / "two"
    kwargs = dict(size=48, stride=40, val_fraction=0.2, block=2, quiet=True)
    tile(*landscape_pair, one, workers=1, **kwargs)
    tile(*landscape_pair, two, workers=2, **kwargs)
    files = sorted(p.relative_to(one) for p in one.rglob("*.tif"))
    assert files == sorted(p.relative_to(two) for p in two.rglob("*.tif"))
    for rel in files:
        assert (one / rel).read_bytes() == (two / rel).read_bytes()
    a, b = index_of(one), index_of(two)
    assert a.drop(columns="geometry").equals(b.drop(columns="geometry"))
    assert list(a.geometry.to_wkt()) == list(b.geometry.to_wkt())
    ma = json.loads((one / "manifest.json").read_text())
    mb = json.loads((two / "manifest.json").read_text())
    for m in (ma, mb):
        del m["created"], m["options"]["workers"], m["sources"]
    assert ma == mb


def test_compressed_chips_hold_the_same_pixels(tmp_path, chip_store):
    out = tmp_path / "zstd"
    manifest = json.loads((chip_store / "manifest.json").read_text())
    sources = manifest["sources"]
    tile(sources["landcover"]["path"], sources["imagery"]["path"], out, size=64, block=2,
         val_fraction=0.25, compress="zstd", quiet=True)
    for name in ("images/000000_000000.tif", "masks/000192_000128.tif"):
        with rasterio.open(out / name) as a, rasterio.open(chip_store / name) as b:
            assert a.compression is not None and b.compression is None
            np.testing.assert_array_equal(a.read(), b.read())
            assert a.profile["transform"] == b.profile["transform"]
            assert a.descriptions == b.descriptions


def test_uint16_imagery_keeps_dtype_and_gets_percentile_stats(tmp_path):
    from geospade.landscape import make_landscape

    paths = make_landscape(tmp_path / "lc.tif", tmp_path / "img.tif", width=128, height=128,
                           dtype="uint16", feature_scale=0.3)
    lc, img = paths.landcover, paths.imagery
    summary = tile(lc, img, tmp_path / "chips", size=64, quiet=True)
    with rasterio.open(img) as src:
        data = src.read().reshape(4, -1)
    for b, stats in enumerate(summary.bands):
        assert stats.dtype == "uint16"
        low, high = np.percentile(data[b], [2, 98])
        spread = high - low
        assert abs(stats.low - low) < 0.15 * spread and abs(stats.high - high) < 0.15 * spread
        assert abs(stats.mean - data[b].mean()) < 0.1 * spread
    with rasterio.open(tmp_path / "chips" / "images" / "000000_000000.tif") as chip:
        assert chip.dtypes == ("uint16",) * 4


def test_index_written_in_batches_equals_index_written_at_once(tmp_path, chip_store,
                                                               landscape_pair, monkeypatch):
    from geospade.formats import chip_store as store_format

    monkeypatch.setattr(store_format, "INDEX_BATCH", 3)
    out = tmp_path / "batched"
    tile(*landscape_pair, out, size=64, block=2, val_fraction=0.25, quiet=True)
    a, b = index_of(out), index_of(chip_store)
    assert len(a) == 16
    assert a.drop(columns="geometry").reset_index(drop=True).equals(
        b.drop(columns="geometry").reset_index(drop=True))
    assert list(a.geometry.to_wkt()) == list(b.geometry.to_wkt())


def test_chip_offsets_cover_the_edge_without_padding():
    from geospade.raster.windows import chip_offsets, group_offsets

    assert chip_offsets(100, 32, 32) == [0, 32, 64, 68]
    assert chip_offsets(96, 32, 32) == [0, 32, 64]
    assert chip_offsets(100, 32, 24) == [0, 24, 48, 68]
    assert chip_offsets(32, 32, 8) == [0]
    assert chip_offsets(31, 32, 32) == []
    assert group_offsets([0, 256, 512, 768, 1024], 256, 1024) == [[0, 256, 512, 768], [1024]]
    assert group_offsets([0, 16], 64, 32) == [[0], [16]]


def test_block_assignment_follows_fractions_and_seed():
    from geospade.errors import GeospadeError
    from geospade.raster.windows import assign_blocks, chip_split

    blocks = assign_blocks(10, 10, 0.2, 0.1, seed=1)
    assert (blocks == 1).sum() == 20 and (blocks == 2).sum() == 10
    assert (assign_blocks(10, 10, 0.2, 0.1, seed=1) == blocks).all()
    assert not (assign_blocks(10, 10, 0.2, 0.1, seed=2) == blocks).all()
    assert (assign_blocks(1, 3, 0.01, 0.0, seed=0) == 1).sum() == 1  # at least one block
    with pytest.raises(GeospadeError, match="too few"):
        assign_blocks(1, 1, 0.5, 0.0, seed=0)
    grid = np.array([[0, 1]])
    assert chip_split(0, 0, 32, 64, grid) == 0
    assert chip_split(0, 64, 32, 64, grid) == 1
    assert chip_split(0, 48, 32, 64, grid) is None  # touches both blocks


def test_equivalent_crs_definitions_are_the_same_crs():
    from rasterio.crs import CRS

    from geospade.raster.alignment import same_crs

    utm = CRS.from_epsg(26918)
    assert same_crs(utm, CRS.from_proj4("+proj=utm +zone=18 +datum=NAD83 +units=m +no_defs"))
    assert same_crs(CRS.from_epsg(4326), CRS.from_string("OGC:CRS84"))  # lat/lon vs lon/lat
    assert not same_crs(utm, CRS.from_epsg(32618))  # WGS 84 / UTM 18N is another datum
    assert not same_crs(utm, None)


@pytest.mark.parametrize("kind", ["rgb-uint8", "grey-uint16-nodata", "mask"])
def test_cloned_chip_files_are_byte_identical_to_gdal_writes(tmp_path, kind):
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    from geospade.formats import chip_store

    crs = CRS.from_epsg(26918)
    if kind == "mask":
        writer = chip_store.ChipWriter(chip_store.mask_profile(crs),
                                       colormap=CHESAPEAKE7.colormap())
        data = np.random.default_rng(0).integers(0, 6, size=(1, 40, 40)).astype("uint8")
    else:
        rgb = kind.startswith("rgb")
        dtype = "uint8" if rgb else "uint16"
        writer = chip_store.ChipWriter(
            chip_store.image_profile(4, dtype, crs, None if rgb else 0, rgb),
            descriptions=["red", "green", "blue", "nir"],
        )
        data = np.random.default_rng(0).integers(0, 250, size=(4, 40, 40)).astype(dtype)
    writer.write(tmp_path / "first.tif", data, from_origin(1.0, 2.0, 0.5, 0.5))
    assert all(t is not None for t in writer._templates.values())  # the fast path is taken
    transform = from_origin(360010.5, 4350000.0, 0.5, 0.5)
    writer.write(tmp_path / "cloned.tif", data[::-1].copy(), transform)
    writer._templates = {k: None for k in writer._templates}  # force GDAL for every chip
    writer.write(tmp_path / "gdal.tif", data[::-1].copy(), transform)
    assert (tmp_path / "cloned.tif").read_bytes() == (tmp_path / "gdal.tif").read_bytes()
    with rasterio.open(tmp_path / "cloned.tif") as src:
        assert src.transform == transform and src.crs == crs
        np.testing.assert_array_equal(src.read(), data[::-1])
