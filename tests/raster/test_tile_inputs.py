"""`geospade tile` through the CLI: every bad input of issue 3 is a one-line error, exit 1, and
leaves nothing that looks like a chip store behind."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from cli_runner import run_cli
from rasterio.transform import from_origin


def write_raster(path, data, crs="EPSG:26918", transform=None, nodata=None):
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    transform = transform or from_origin(360000.0, 4350000.0, 1.0, 1.0)
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
                       count=data.shape[0], dtype=data.dtype, crs=crs, transform=transform,
                       nodata=nodata) as dst:
        dst.write(data)
    return path


def assert_one_line_error(code, err, *words):
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("geospade: error: ")
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], lines[0]


def assert_nothing_left(folder, out):
    assert not out.exists()
    assert not [p for p in folder.iterdir() if ".partial" in p.name]


@pytest.fixture()
def pair(tmp_path, landscape_pair):
    return landscape_pair


def test_missing_landcover_file(tmp_path, pair, capsys):
    out = tmp_path / "chips"
    code, _, err = run_cli(["tile", str(tmp_path / "nope.tif"), str(pair[1]), "-o", str(out)],
                           capsys)
    assert_one_line_error(code, err, "not found", "nope.tif")
    assert_nothing_left(tmp_path, out)


def test_missing_imagery_file(tmp_path, pair, capsys):
    out = tmp_path / "chips"
    code, _, err = run_cli(["tile", str(pair[0]), str(tmp_path / "none.tif"), "-o", str(out)],
                           capsys)
    assert_one_line_error(code, err, "imagery file not found")
    assert_nothing_left(tmp_path, out)


def test_file_that_is_not_a_raster(tmp_path, pair, capsys):
    text = tmp_path / "notes.tif"
    text.write_text("this is not a raster\n")
    out = tmp_path / "chips"
    code, _, err = run_cli(["tile", str(text), str(pair[1]), "-o", str(out)], capsys)
    assert_one_line_error(code, err, "not a raster", "notes.tif")
    assert_nothing_left(tmp_path, out)


def test_landcover_with_more_than_one_band(tmp_path, pair, capsys):
    out = tmp_path / "chips"
    # The 4-band imagery given as land cover.
    code, _, err = run_cli(["tile", str(pair[1]), str(pair[1]), "-o", str(out)], capsys)
    assert_one_line_error(code, err, "one band", "has 4")
    assert_nothing_left(tmp_path, out)


def test_imagery_with_no_overlap(tmp_path, pair, capsys):
    with rasterio.open(pair[1]) as src:
        data = src.read()
    far = write_raster(tmp_path / "far.tif", data,
                       transform=from_origin(500000.0, 4350000.0, 1.0, 1.0))
    out = tmp_path / "chips"
    code, _, err = run_cli(["tile", str(pair[0]), str(far), "-o", str(out)], capsys)
    assert_one_line_error(code, err, "does not overlap")
    assert_nothing_left(tmp_path, out)


def test_label_values_outside_the_scheme_are_listed_with_counts(tmp_path, pair, capsys):
    labels = np.full((128, 128), 3, dtype=np.uint8)
    labels[:10, :10] = 9
    labels[20:22, :] = 42
    lc = write_raster(tmp_path / "lc.tif", labels)
    out = tmp_path / "chips"
    code, _, err = run_cli(["tile", str(lc), str(pair[1]), "-o", str(out), "--size", "64"],
                           capsys)
    assert_one_line_error(code, err, "9 (100 px)", "42 (256 px)", "--unknown ignore")
    assert_nothing_left(tmp_path, out)


def test_unknown_ignore_maps_outside_values_to_ignore(tmp_path, pair, capsys):
    labels = np.full((128, 128), 3, dtype=np.uint8)
    labels[:10, :10] = 9
    lc = write_raster(tmp_path / "lc.tif", labels)
    out = tmp_path / "chips"
    code, _, _ = run_cli(["tile", str(lc), str(pair[1]), "-o", str(out), "--size", "64",
                          "--unknown", "ignore", "--max-nodata", "1", "-q"], capsys)
    assert code == 0
    with rasterio.open(out / "masks" / "000000_000000.tif") as src:
        mask = src.read(1)
    assert (mask[:10, :10] == 255).all() and (mask[10:, :] == 2).all()


def test_all_nodata_landcover(tmp_path, pair, capsys):
    lc = write_raster(tmp_path / "lc.tif", np.full((128, 128), 15, dtype=np.uint8), nodata=15)
    out = tmp_path / "chips"
    code, _, err = run_cli(["tile", str(lc), str(pair[1]), "-o", str(out), "--size", "64"],
                           capsys)
    assert_one_line_error(code, err, "no labelled pixels")
    assert_nothing_left(tmp_path, out)


def test_all_nodata_imagery(tmp_path, pair, capsys):
    img = write_raster(tmp_path / "img.tif", np.zeros((4, 128, 128), dtype=np.uint8), nodata=0)
    out = tmp_path / "chips"
    code, _, err = run_cli(["tile", str(pair[0]), str(img), "-o", str(out), "--size", "64"],
                           capsys)
    assert_one_line_error(code, err, "no chips", "4 over --max-nodata")
    assert_nothing_left(tmp_path, out)


def test_chip_larger_than_the_raster(tmp_path, pair, capsys):
    out = tmp_path / "chips"
    code, _, err = run_cli(["tile", str(pair[0]), str(pair[1]), "-o", str(out), "--size", "512"],
                           capsys)
    assert_one_line_error(code, err, "chip size 512 is larger", "256 x 256")
    assert_nothing_left(tmp_path, out)


@pytest.mark.parametrize(
    "option, value", [("--size", "0"), ("--size", "-5"), ("--stride", "0"), ("--stride", "-64")]
)
def test_size_or_stride_not_positive(tmp_path, pair, capsys, option, value):
    out = tmp_path / "chips"
    code, _, err = run_cli(["tile", str(pair[0]), str(pair[1]), "-o", str(out), option, value],
                           capsys)
    assert_one_line_error(code, err, f"{option} must be a positive", f"not {value}")
    assert_nothing_left(tmp_path, out)


def test_existing_out_is_left_untouched_without_overwrite(tmp_path, pair, capsys):
    out = tmp_path / "chips"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run_cli(["tile", str(pair[0]), str(pair[1]), "-o", str(out), "--size", "64"],
                           capsys)
    assert_one_line_error(code, err, "already exists", "--overwrite")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]

    # A folder of someone's notes is not a chip store: --overwrite does not wipe it either.
    code, _, err = run_cli(["tile", str(pair[0]), str(pair[1]), "-o", str(out), "--size", "64",
                            "--overwrite"], capsys)
    assert_one_line_error(code, err, "is not a geospade chip store")
    assert (out / "keep.txt").read_text() == "mine"

    (out / "keep.txt").unlink()
    code, _, _ = run_cli(["tile", str(pair[0]), str(pair[1]), "-o", str(out), "--size", "64"],
                         capsys)
    assert code == 0  # an empty folder the user made is filled
    code, stdout, _ = run_cli(["tile", str(pair[0]), str(pair[1]), "-o", str(out), "--size",
                               "128", "--overwrite"], capsys)
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["images", "index.gpkg", "manifest.json",
                                                     "masks"]
    assert "wrote 4 chips" in stdout and "chips per split: train 4, val 0, test 0" in stdout
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_bad_split_fractions_and_unreadable_aoi(tmp_path, pair, capsys):
    out = tmp_path / "chips"
    code, _, err = run_cli(["tile", str(pair[0]), str(pair[1]), "-o", str(out),
                            "--val-fraction", "0.7", "--test-fraction", "0.5"], capsys)
    assert_one_line_error(code, err, "--val-fraction")
    bad = tmp_path / "aoi.gpkg"
    bad.write_text("not a vector file")
    code, _, err = run_cli(["tile", str(pair[0]), str(pair[1]), "-o", str(out), "--size", "64",
                            "--aoi", str(bad)], capsys)
    assert_one_line_error(code, err, "cannot read AOI")
    assert_nothing_left(tmp_path, out)


def test_failure_while_tiling_removes_the_partial_store(tmp_path, pair, monkeypatch):
    from geospade.raster import tiling

    def boom(task):
        raise RuntimeError("disk full")

    monkeypatch.setattr(tiling, "cut_task", boom)
    out = tmp_path / "chips"
    with pytest.raises(RuntimeError):
        tiling.tile(pair[0], pair[1], out, size=64, quiet=True)
    assert_nothing_left(tmp_path, out)
