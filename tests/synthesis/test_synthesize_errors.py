"""geospade synthesize: every bad input ends in one line on stderr, exit 1, and no output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_synthesize import make_checkpoint, run_cli, write_landcover


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="module")
def landcover(tmp_path_factory) -> Path:
    labels = np.tile(np.arange(1, 7, dtype=np.uint8), (40, 8))  # 40 x 48, classes 1..6
    return write_landcover(tmp_path_factory.mktemp("lc") / "lc.tif", labels)


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 1, err
    assert err.startswith("geospade: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err


def synth(capsys, ckpt, landcover, out, *extra) -> tuple[int, str, str]:
    return run_cli(["synthesize", str(ckpt), str(landcover), "-o", str(out), *extra], capsys)


def test_missing_checkpoint(tmp_path, landcover, capsys):
    code, _, err = synth(capsys, tmp_path / "nope.pt", landcover, tmp_path / "out.tif")
    assert_one_line_error(code, err, "checkpoint not found")
    assert not (tmp_path / "out.tif").exists()


def test_corrupt_checkpoint(tmp_path, landcover, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 this is not a zip file at all" * 10)
    code, _, err = synth(capsys, bad, landcover, tmp_path / "out.tif")
    assert_one_line_error(code, err, "not a readable checkpoint")
    assert not (tmp_path / "out.tif").exists()


def test_foreign_checkpoint(tmp_path, landcover, capsys):
    foreign = tmp_path / "resnet.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    code, _, err = synth(capsys, foreign, landcover, tmp_path / "out.tif")
    assert_one_line_error(code, err, "not a geospade checkpoint")
    assert not (tmp_path / "out.tif").exists()


def test_checkpoint_weights_that_do_not_match_the_config(tmp_path, landcover, capsys):
    good = torch.load(make_checkpoint(tmp_path / "a.pt"), weights_only=True)
    good["generator_config"]["ngf"] = 8
    del good["generator_ema"]
    torch.save(good, tmp_path / "b.pt")
    code, _, err = synth(capsys, tmp_path / "b.pt", landcover, tmp_path / "out.tif")
    assert_one_line_error(code, err, "weights do not match")


def test_unknown_classes_are_named(tmp_path, ckpt, capsys):
    labels = np.full((40, 40), 3, dtype=np.uint8)
    labels[:5, :4] = 9
    labels[-1, -1] = 42
    lc = write_landcover(tmp_path / "lc.tif", labels)
    code, _, err = synth(capsys, ckpt, lc, tmp_path / "out.tif")
    assert_one_line_error(code, err, "9 (20 px)", "42 (1 px)", "chesapeake7", "--unknown ignore")
    assert not (tmp_path / "out.tif").exists()
    # ... and --unknown ignore treats them as nodata.
    code, _, _ = synth(capsys, ckpt, lc, tmp_path / "out.tif", "--unknown", "ignore", "-q")
    assert code == 0
    import rasterio

    with rasterio.open(tmp_path / "out.tif") as src:
        image = src.read()
    unknown = np.isin(labels, [9, 42])
    assert (image[:, unknown] == 0).all() and (image[:, ~unknown] > 0).all()


def _edits(tmp_path: Path, crs: str | None, field: str = "cls") -> Path:
    import geopandas as gpd
    from shapely.geometry import box

    path = tmp_path / "edits.geojson"
    gdf = gpd.GeoDataFrame({field: ["water"]}, geometry=[box(360000, 4349990, 360010, 4350000)],
                           crs=crs)
    gdf.to_file(path)
    return path


def test_edits_without_the_field(tmp_path, ckpt, landcover, capsys):
    edits = _edits(tmp_path, "EPSG:26918", field="landuse")
    code, _, err = synth(capsys, ckpt, landcover, tmp_path / "out.tif", "--edits", str(edits),
                         "--edit-field", "cls")
    assert_one_line_error(code, err, "no field 'cls'", "landuse")
    assert not (tmp_path / "out.tif").exists()


def test_edits_without_edit_field_option(tmp_path, ckpt, landcover, capsys):
    edits = _edits(tmp_path, "EPSG:26918")
    code, _, err = synth(capsys, ckpt, landcover, tmp_path / "out.tif", "--edits", str(edits))
    assert_one_line_error(code, err, "--edit-field")


def test_edits_without_a_crs(tmp_path, ckpt, landcover, capsys):
    import geopandas as gpd
    from shapely.geometry import box

    path = tmp_path / "nocrs.shp"  # a shapefile without its .prj
    with pytest.warns(UserWarning):
        gpd.GeoDataFrame({"cls": [1]}, geometry=[box(0, 0, 10, 10)]).to_file(path)
    assert gpd.read_file(path).crs is None
    code, _, err = synth(capsys, ckpt, landcover, tmp_path / "out.tif", "--edits", str(path),
                         "--edit-field", "cls")
    assert_one_line_error(code, err, "no CRS")
    assert not (tmp_path / "out.tif").exists()


def test_edits_with_a_value_that_is_no_class(tmp_path, ckpt, landcover, capsys):
    import geopandas as gpd
    from shapely.geometry import box

    path = tmp_path / "edits.gpkg"
    gpd.GeoDataFrame({"cls": ["lava"]}, geometry=[box(360000, 4349990, 360010, 4350000)],
                     crs="EPSG:26918").to_file(path)
    code, _, err = synth(capsys, ckpt, landcover, tmp_path / "out.tif", "--edits", str(path),
                         "--edit-field", "cls")
    assert_one_line_error(code, err, "'lava' is not a class")


def test_unwritable_output_folder(tmp_path, ckpt, landcover, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("a file where a folder should be")
    code, _, err = synth(capsys, ckpt, landcover, blocker / "sub" / "out.tif")
    assert_one_line_error(code, err, "cannot create output folder")


def test_missing_landcover_and_non_raster(tmp_path, ckpt, capsys):
    code, _, err = synth(capsys, ckpt, tmp_path / "none.tif", tmp_path / "out.tif")
    assert_one_line_error(code, err, "land cover not found")
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    code, _, err = synth(capsys, ckpt, text, tmp_path / "out.tif")
    assert_one_line_error(code, err, "not a readable raster")
    assert not (tmp_path / "out.tif").exists()


@pytest.mark.parametrize("extra,needle", [
    (["--overlap", "40"], "--overlap must be between 0 and 32"),
    (["--window", "1,2,3"], "--window must be"),
    (["--window", "500,500,10,10"], "outside the land cover"),
    (["--bbox", "0,0,1,1"], "does not overlap"),
    (["--style", "x.tif"], "style encoder"),
    (["--world-size", "2"], "--tiles-only"),
    (["--amp", "bf16", "--device", "cuda:0"], "CUDA is not available"),
])
def test_bad_options(tmp_path, ckpt, landcover, capsys, extra, needle):
    if "cuda:0" in extra and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    code, _, err = synth(capsys, ckpt, landcover, tmp_path / "out.tif", *extra)
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "out.tif").exists()


@pytest.mark.parametrize("dtype", ["uint8", "int16", "uint16", "float32"])
def test_unknown_value_scan_counts_every_dtype(tmp_path, dtype):
    """The pre-scan finds unknown values (negative, beyond 8 bits, in any strip) with exact
    counts, skips the file's nodata, and finds nothing in a clean raster."""
    import rasterio
    from rasterio.windows import Window

    from geospade.schemes import CHESAPEAKE7
    from geospade.synthesis.nodata import scan_unknown_values

    labels = np.tile(np.arange(1, 7), (300, 50)).astype(dtype)  # 300 x 300
    clean = write_landcover(tmp_path / "clean.tif", labels, nodata=0)
    bad_values = {"uint8": (9, 200), "int16": (-3, 300), "uint16": (9, 300),
                  "float32": (-3, 300)}[dtype]
    labels[0, :5] = bad_values[0]
    labels[299, 10:12] = bad_values[1]
    labels[150, 0] = 0  # the file's nodata: not unknown
    dirty = write_landcover(tmp_path / "dirty.tif", labels, nodata=0)
    with rasterio.open(clean) as src:
        assert scan_unknown_values(src, Window(0, 0, 300, 300), CHESAPEAKE7) == {}
    with rasterio.open(dirty) as src:
        found = scan_unknown_values(src, Window(0, 0, 300, 300), CHESAPEAKE7)
        assert found == {bad_values[0]: 5, bad_values[1]: 2}
        # Only the area asked for is scanned.
        assert scan_unknown_values(src, Window(0, 100, 300, 100), CHESAPEAKE7) == {}
