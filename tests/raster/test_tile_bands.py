"""Imagery bands in `geospade tile`: a band flagged alpha (--alpha), the bands kept (--bands) and
the bands drawn as RGB (--rgb, or from band names / colour interpretation)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from cli_runner import run_cli
from rasterio.enums import ColorInterp
from rasterio.windows import Window

from geospade.errors import GeospadeError
from geospade.raster.bands import choose_bands, rgb_bands

GREY = ColorInterp.gray
SENTINEL2 = ["B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12"]


# -- choosing RGB ------------------------------------------------------------------------------


def test_sentinel2_band_names_give_bands_3_2_1():
    rgb = rgb_bands(SENTINEL2, [GREY] * 10)
    assert (rgb.indices, rgb.source) == ((2, 1, 0), "band names")
    assert rgb.describe() == "bands 3, 2, 1 (from band names)"
    assert rgb_bands(["SR_B2", "SR_B3", "SR_B4"], [GREY] * 3).indices == (2, 1, 0)
    assert rgb_bands(["nir", "Red", "Green", "Blue"], [GREY] * 4).indices == (1, 2, 3)


def test_band_names_beat_gdals_default_colour_interpretation():
    # GDAL calls bands 1-3 of any 3-band uint8 GeoTIFF red, green, blue.
    rgb = rgb_bands(["B02", "B03", "B04"],
                    [ColorInterp.red, ColorInterp.green, ColorInterp.blue])
    assert rgb.indices == (2, 1, 0)


def test_colour_interpretation_then_band_order():
    bgr = rgb_bands([None] * 3, [ColorInterp.blue, ColorInterp.green, ColorInterp.red])
    assert (bgr.indices, bgr.source) == ((2, 1, 0), "colour interpretation")
    plain = rgb_bands([None] * 4, [GREY] * 4)
    assert (plain.indices, plain.source) == ((0, 1, 2), "band order")
    assert rgb_bands([None], [GREY]).indices == (0, 0, 0)  # one band: grey
    # Two bands named red: the names decide nothing.
    assert rgb_bands(["red", "red", "green", "blue"], [GREY] * 4).source == "band order"


def test_requested_rgb_wins_and_is_checked():
    rgb = rgb_bands(SENTINEL2, [GREY] * 10, requested=(7, 3, 2))
    assert (rgb.indices, rgb.source) == ((6, 2, 1), "requested")
    with pytest.raises(GeospadeError, match="^rgb band 11 is out of range: the chips have 10"):
        rgb_bands(SENTINEL2, [GREY] * 10, requested=(11, 3, 2))
    with pytest.raises(GeospadeError, match="three band numbers"):
        rgb_bands(SENTINEL2, [GREY] * 10, requested=(1, 2))


# -- choosing bands and the alpha mask ---------------------------------------------------------

RGBA = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]


def test_choose_bands():
    mask = choose_bands(RGBA)
    assert (mask.indexes, mask.mask_band, mask.flagged_alpha) == ((1, 2, 3), 4, 4)
    data = choose_bands(RGBA, alpha="band")
    assert (data.indexes, data.mask_band) == ((1, 2, 3, 4), None)
    assert choose_bands(RGBA, bands=(3, 2), alpha="mask").indexes == (3, 2)
    assert choose_bands([GREY] * 2).describe_alpha() is None
    for bands, message in [((1, 5), "band 5 is out of range: the imagery has 4"),
                           ((2, 2), "lists band 2 twice"), ((), "lists no band"),
                           ((1, 2, 3, 4), "add alpha='band'")]:
        with pytest.raises(GeospadeError, match=message):
            choose_bands(RGBA, bands=bands)


# -- through the CLI ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rgba(landscape_pair, tmp_path_factory):
    """The landscape's red, green, blue, NIR written with GDAL's RGB + alpha flags (band 4
    flagged alpha), NIR = 0 in rows 10-19 of the first 64 columns; returns (path, pixels)."""
    with rasterio.open(landscape_pair[1]) as src:
        profile, data = src.profile, src.read()
    data[3, 10:20, :64] = 0
    path = tmp_path_factory.mktemp("rgba") / "rgbn.tif"
    profile.update(photometric="RGB", alpha="YES")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = ("red", "green", "blue", "nir")
    with rasterio.open(path) as src:
        assert src.colorinterp[3] == ColorInterp.alpha
    return path, data


def tile_cli(capsys, landcover, imagery, out, *extra):
    return run_cli(["tile", str(landcover), str(imagery), "-o", str(out), "--size", "64",
                    "--max-nodata", "1", *extra], capsys)


def chip(out, kind="images", name="000000_000000"):
    with rasterio.open(out / kind / f"{name}.tif") as src:
        return src.read(), src.descriptions


def test_alpha_band_holding_data_is_kept_as_data_by_default(tmp_path, landscape_pair, rgba,
                                                             capsys):
    """GDAL flags NIR as alpha in a 4-band uint8 GeoTIFF; its values are not only 0 and 255,
    so --alpha auto keeps it as a band and NIR = 0 is no hole."""
    out = tmp_path / "chips"
    code, stdout, err = tile_cli(capsys, landscape_pair[0], rgba[0], out)
    assert code == 0, err
    assert ("band 4 is flagged alpha but holds other values than 0 and 255: kept as data and "
            "not used as a validity mask; --alpha mask to use it as the mask") in stdout
    image, names = chip(out)
    assert names == ("red", "green", "blue", "nir")
    np.testing.assert_array_equal(image, rgba[1][:, :64, :64])
    assert (chip(out, "masks")[0][0] != 255).all()


@pytest.mark.parametrize("extra", [[], ["--alpha", "mask"]])
def test_alpha_band_is_the_mask_when_it_holds_only_0_and_255_or_when_asked(
        tmp_path, landscape_pair, rgba, capsys, extra):
    source, data = rgba
    if not extra:  # auto: a true alpha band (255 valid, 0 where NIR was 0) is the mask
        data = data.copy()
        data[3] = np.where(data[3] == 0, 0, 255)
        source = tmp_path / "true_alpha.tif"
        with rasterio.open(rgba[0]) as src:
            profile, descriptions = src.profile, src.descriptions
        with rasterio.open(source, "w", **profile) as dst:
            dst.write(data)
            dst.descriptions = descriptions
    out = tmp_path / "chips"
    code, stdout, err = tile_cli(capsys, landscape_pair[0], source, out, *extra)
    assert code == 0, err
    why = " (it holds only 0 and 255)" if not extra else ""
    assert (f"band 4 is flagged alpha: used as the validity mask and dropped{why}; --alpha band "
            "keeps it as data") in stdout
    image, names = chip(out)
    assert image.shape == (3, 64, 64) and names == ("red", "green", "blue")
    np.testing.assert_array_equal(image, data[:3, :64, :64])
    mask = chip(out, "masks")[0][0]
    assert (mask[10:20] == 255).all() and (mask[:10] != 255).all()
    manifest = json.loads((out / "manifest.json").read_text())
    assert [b["name"] for b in manifest["bands"]] == ["red", "green", "blue"]


@pytest.mark.parametrize("extra", [["--alpha", "band"], ["--alpha", "band", "--bands",
                                                         "1,2,3,4"]])
def test_alpha_band_keeps_it_as_data(tmp_path, landscape_pair, rgba, capsys, extra):
    out = tmp_path / "chips"
    code, stdout, err = tile_cli(capsys, landscape_pair[0], rgba[0], out, *extra)
    assert code == 0, err
    assert "band 4 is flagged alpha: kept as data and not used as a validity mask" in stdout
    image, names = chip(out)
    assert names == ("red", "green", "blue", "nir")
    np.testing.assert_array_equal(image, rgba[1][:, :64, :64])
    assert (chip(out, "masks")[0][0] != 255).all()  # NIR = 0 is data, not a hole


def test_bands_picks_and_orders_the_chip_bands(tmp_path, landscape_pair, rgba, capsys):
    out = tmp_path / "chips"
    code, stdout, err = tile_cli(capsys, landscape_pair[0], rgba[0], out, "--bands", "3,1")
    assert code == 0, err
    image, names = chip(out, name="000064_000128")
    assert names == ("blue", "red")
    np.testing.assert_array_equal(image, rgba[1][[2, 0], 64:128, 128:192])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["options"]["bands"] == [3, 1]
    assert manifest["rgb"] == [0, 0, 0]  # no green band: band 1 as grey


@pytest.mark.parametrize("extra, message, exit_code", [
    (["--bands", "1,2,5"], "--bands band 5 is out of range: the imagery has 4 band(s)", 1),
    (["--bands", "1,2,3,4", "--alpha", "mask"],
     "--bands lists band 4, which the imagery flags as alpha", 1),
    (["--bands", "1,x"], "'1,x' is not a comma-separated list of band numbers", 2),
    (["--rgb", "1,2,5"], "--rgb band 5 is out of range: the chips have 4 band(s)", 1),
    (["--rgb", "1,2"], "--rgb takes three band numbers", 1),
    (["--alpha", "keep"], "--alpha", 2),
])
def test_bad_band_options_are_one_line_errors(tmp_path, landscape_pair, rgba, capsys, extra,
                                              message, exit_code):
    out = tmp_path / "chips"
    code, _, err = tile_cli(capsys, landscape_pair[0], rgba[0], out, *extra)
    assert code == exit_code and err.count("\n") == 1, err
    assert err.startswith("geospade: error: ") and message in err
    assert not out.exists()


def test_rgb_is_remembered_from_the_option_or_the_band_names(tmp_path, landscape_pair, capsys):
    with rasterio.open(landscape_pair[1]) as src:
        profile, data = src.profile, src.read()
    sentinel = tmp_path / "s2.tif"
    with rasterio.open(sentinel, "w", **dict(profile, photometric="minisblack")) as dst:
        dst.write(data)
        dst.descriptions = ("B2", "B3", "B4", "B8")
    out = tmp_path / "named"
    code, stdout, err = tile_cli(capsys, landscape_pair[0], sentinel, out)
    assert code == 0, err
    assert "preview RGB: bands 3, 2, 1 (from band names)" in stdout
    assert json.loads((out / "manifest.json").read_text())["rgb"] == [2, 1, 0]
    out = tmp_path / "chosen"
    code, stdout, err = tile_cli(capsys, landscape_pair[0], sentinel, out, "--rgb", "4,3,2")
    assert code == 0, err
    assert "preview RGB: bands 4, 3, 2 (as requested)" in stdout
    assert json.loads((out / "manifest.json").read_text())["rgb"] == [3, 2, 1]
    with rasterio.open(out / "images" / "000000_000000.tif") as src:
        np.testing.assert_array_equal(src.read(window=Window(0, 0, 8, 8)), data[:, :8, :8])
