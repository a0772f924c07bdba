"""--co KEY=VALUE, --blocksize and the lossy codecs (jpeg, webp) of synthesize and stitch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from cli_runner import run_cli
from rasterio.enums import MaskFlags
from test_synthesize import make_checkpoint

from geospade.commands.stitch import command as stitch_command
from geospade.commands.synthesize import command as synthesize_command
from geospade.errors import GeospadeError
from geospade.landscape import make_landscape
from geospade.raster import strip_writer
from geospade.raster.codecs import OUTPUT_CODECS
from geospade.raster.stitch import stitch
from geospade.raster.strip_writer import (
    check_block_size,
    check_creation_options,
    check_output_codec,
    parse_creation_options,
)
from geospade.synthesis import synthesize


@pytest.fixture(scope="module")
def rgb_ckpt(tmp_path_factory) -> Path:
    """A tiny generator of 3 uint8 bands (red, green, blue): what JPEG and WEBP are for."""
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "rgb.pt", bands=3)


@pytest.fixture(scope="module")
def ckpt4(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "rgbn.pt")


@pytest.fixture(scope="module")
def holey(tmp_path_factory) -> Path:
    """A 300 x 280 land cover, a quarter of it nodata (value 0)."""
    root = tmp_path_factory.mktemp("lc")
    return make_landscape(root / "lc.tif", root / "im.tif", 300, 280, feature_scale=0.3,
                          nodata_fraction=0.25, seed=2).landcover


def test_cli_codec_choices_are_the_writers():
    for command in (stitch_command, synthesize_command):
        (compress,) = [p for p in command.params if p.name == "compress"]
        assert tuple(compress.type.choices) == OUTPUT_CODECS


def test_parse_creation_options_as_rio_takes_them():
    assert parse_creation_options(["zlevel=9", "JPEG_QUALITY = 90", "A=b=c"]) == {
        "ZLEVEL": "9", "JPEG_QUALITY": "90", "A": "b=c"}
    with pytest.raises(GeospadeError, match="'ZLEVEL' is not KEY=VALUE"):
        parse_creation_options(["ZLEVEL"])
    with pytest.raises(GeospadeError, match="is not KEY=VALUE"):
        parse_creation_options(["=9"])


@pytest.mark.parametrize("options,cog,message", [
    ({"BOGUS": "1"}, False, "GTiff driver says driver GTiff does not support creation option "
                            "BOGUS"),
    ({"ZLEVEL": "9"}, True, "COG driver says driver COG does not support creation option ZLEVEL"),
    ({"ZLEVEL": "abc"}, False, "'abc' is an unexpected value for ZLEVEL"),
    ({"compress": "lzw"}, False, "COMPRESS is set with compress, not creation_options"),
    ({"BLOCKXSIZE": "64"}, False, "BLOCKXSIZE is set with block_size, not creation_options"),
    ({"TILED": "NO"}, True, "TILED is set with block_size"),
])
def test_gdal_refuses_bad_creation_options_before_any_work(options, cog, message):
    with pytest.raises(GeospadeError, match=message):
        check_creation_options(options, cog=cog, count=4, dtype="uint8")


def test_good_creation_options_pass_in_upper_case():
    assert check_creation_options({"zlevel": "9"}, cog=False, count=4, dtype="uint8") == {
        "ZLEVEL": "9"}
    assert check_creation_options({"QUALITY": "90"}, cog=True, count=3, dtype="uint8",
                                  compress="jpeg") == {"QUALITY": "90"}
    assert check_creation_options(None, cog=False, count=1, dtype="uint8") == {}


def test_block_size_and_lossy_codec_checks():
    assert check_block_size(512) == 512
    with pytest.raises(GeospadeError, match="^block_size 100 is not a multiple"):
        check_block_size(100)
    with pytest.raises(GeospadeError, match="must be a positive multiple of 16"):
        check_block_size(0)
    assert check_output_codec("jpeg", cog=True, count=3, dtype="uint8") == "jpeg"
    with pytest.raises(GeospadeError, match="jpeg is for 8-bit imagery with 3 bands; this output "
                                            "has 4 uint8"):
        check_output_codec("jpeg", count=4, dtype="uint8")
    with pytest.raises(GeospadeError, match="webp is for 8-bit imagery with 3 bands; this output "
                                            "has 3 uint16"):
        check_output_codec("webp", count=3, dtype="uint16")
    with pytest.raises(GeospadeError, match="unknown compression 'jxl': use one of deflate, "
                                            "zstd, lzw, none, jpeg, webp"):
        check_output_codec("jxl")


@pytest.mark.parametrize("cog", [False, True])
def test_creation_options_reach_the_file(tmp_path, ckpt4, holey, cog):
    out = tmp_path / "out.tif"
    # INTERLEAVE is a GTiff option (GDAL 3.10's COG driver is always pixel-interleaved);
    # OVERVIEWS=NONE a COG driver option.
    options = {"OVERVIEWS": "NONE"} if cog else {"INTERLEAVE": "PIXEL"}
    synthesize(ckpt4, holey, out, cog=cog, overlap=0, block_size=128, creation_options=options,
               quiet=True)
    with rasterio.open(out) as src:
        assert src.block_shapes[0] == (128, 128)
        assert src.interleaving.name.lower() == "pixel"
        assert src.overviews(1) == ([] if cog else [2, 4])  # down to one 128-px block
        if cog:
            assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"


def test_options_left_out_keep_the_default_bytes(tmp_path, ckpt4, holey):
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    synthesize(ckpt4, holey, a, overlap=0, quiet=True)
    synthesize(ckpt4, holey, b, overlap=0, block_size=256, creation_options={}, quiet=True)
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("codec,cog,raw", [("jpeg", False, True), ("jpeg", True, False),
                                           ("webp", True, True), ("webp", False, False)])
def test_lossy_rgb_keeps_nodata_in_an_internal_mask(tmp_path, rgb_ckpt, holey, monkeypatch,
                                                     codec, cog, raw):
    if not raw:  # rows compressed as they come, without the uncompressed intermediate
        monkeypatch.setattr(strip_writer, "disk_has_room", lambda path, nbytes: False)
    lossless, lossy = tmp_path / "deflate.tif", tmp_path / f"{codec}.tif"
    synthesize(rgb_ckpt, holey, lossless, overlap=8, quiet=True)
    synthesize(rgb_ckpt, holey, lossy, overlap=8, cog=cog, compress=codec, quiet=True)
    with rasterio.open(lossless) as ref, rasterio.open(lossy) as src, rasterio.open(holey) as lc:
        assert src.compression.name.lower() == codec
        assert src.nodata is None and ref.nodata == 0
        assert src.mask_flag_enums[0] == [MaskFlags.per_dataset]
        valid = lc.read(1) != 0
        assert np.array_equal(src.dataset_mask() > 0, valid)
        assert np.array_equal(ref.dataset_mask() > 0, valid)
        diff = np.abs(src.read().astype(int) - ref.read().astype(int))[:, valid]
        assert diff.mean() < 6  # lossy, but the same image
        assert src.overviews(1) == [2]
        assert src.tags()["GEOSPADE_SYNTHETIC"] == "YES"
        if codec == "jpeg":
            assert src.photometric.name.lower() == "ycbcr"
    assert lossy.stat().st_size < lossless.stat().st_size


def test_save_landcover_stays_lossless_with_a_lossy_codec(tmp_path, rgb_ckpt, holey):
    synthesize(rgb_ckpt, holey, tmp_path / "out.tif", compress="jpeg",
               save_landcover=tmp_path / "lc.tif", quiet=True)
    with rasterio.open(tmp_path / "lc.tif") as saved, rasterio.open(holey) as lc:
        assert saved.compression.name.lower() == "deflate"
        assert np.array_equal(saved.read(1), lc.read(1))


def test_cli_options_and_their_errors(tmp_path, capsys, ckpt4, rgb_ckpt, holey):
    code, out, _ = run_cli(["synthesize", "--help"], capsys)
    assert code == 0
    for flag in ("--co NAME=VALUE", "--blocksize", "--stac", "jpeg", "webp"):
        assert flag in out
    base = ["synthesize", str(ckpt4), str(holey), "-q"]
    cases = [
        (["--co", "ZLEVEL"], "--co 'ZLEVEL' is not KEY=VALUE, e.g. --co ZLEVEL=6"),
        (["--co", "BOGUS=1"], "does not support creation option BOGUS"),
        (["--co", "COMPRESS=LZW"], "COMPRESS is set with --compress, not --co"),
        (["--blocksize", "100"], "--blocksize 100 is not a multiple of 16"),
        (["--compress", "jpeg"], "--compress jpeg is for 8-bit imagery with 3 bands; this "
                                 "output has 4 uint8 band(s)"),
    ]
    for extra, message in cases:
        out_path = tmp_path / "bad.tif"
        code, _, err = run_cli([*base, "-o", str(out_path), *extra], capsys)
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err
        assert not out_path.exists()
    code, _, err = run_cli(["synthesize", str(rgb_ckpt), str(holey), "-q", "-o",
                            str(tmp_path / "ok.tif"), "--compress", "webp", "--co",
                            "WEBP_LEVEL=90", "--blocksize", "64"], capsys)
    assert code == 0, err
    with rasterio.open(tmp_path / "ok.tif") as src:
        assert src.compression.name.lower() == "webp" and src.block_shapes[0] == (64, 64)


def test_stitch_takes_the_same_options(tmp_path, capsys, rgb_ckpt, holey):
    synthesize(rgb_ckpt, holey, None, tiles_only=tmp_path / "tiles", overlap=8, quiet=True)
    tiles = sorted(str(p) for p in (tmp_path / "tiles").glob("*.tif"))
    code, _, err = run_cli(["stitch", *tiles, "-o", str(tmp_path / "s.tif"), "--cog",
                            "--compress", "jpeg", "--co", "QUALITY=90", "--blocksize", "128",
                            "-q"], capsys)
    assert code == 0, err
    with rasterio.open(tmp_path / "s.tif") as src, rasterio.open(holey) as lc:
        assert src.compression.name.lower() == "jpeg" and src.block_shapes[0] == (128, 128)
        assert np.array_equal(src.dataset_mask() > 0, lc.read(1) != 0)
    with pytest.raises(GeospadeError, match="driver GTiff does not support creation option "
                                            "QUALITY"):
        stitch(tiles, tmp_path / "t.tif", creation_options={"QUALITY": "90"}, quiet=True)
    code, _, err = run_cli(["stitch", *tiles, "-o", str(tmp_path / "u.tif"), "--blocksize",
                            "24"], capsys)
    assert code == 1 and "--blocksize 24 is not a multiple of 16" in err
    assert not (tmp_path / "t.tif").exists() and not (tmp_path / "u.tif").exists()
