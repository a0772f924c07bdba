"""Input checks of synthesize and stitch (and --seed everywhere): an output never replaces an
input, options that cannot work stop with one line and leave nothing behind."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.transform import from_origin
from test_stitch import write_tile
from test_synthesize import make_checkpoint, run_cli, write_landcover

from geospade.errors import GeospadeError
from geospade.synthesis import synthesize
from geospade.synthesis.model import load_synthesis_model

ORIGIN = from_origin(360000.0, 4350000.0, 1.0, 1.0)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="module")
def vae_ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "vae.pt", use_vae=True)


@pytest.fixture()
def landcover(tmp_path) -> Path:
    """A 48 x 40 px chesapeake7 land cover (classes 1..6), a fresh copy per test."""
    labels = np.tile(np.arange(1, 7, dtype=np.uint8), (40, 8))
    return write_landcover(tmp_path / "lc.tif", labels)


def assert_one_line_error(code: int, err: str, *needles: str, exit_code: int = 1) -> None:
    assert code == exit_code, err
    assert err.startswith("geospade: error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err


def synth(capsys, ckpt, landcover, *extra) -> tuple[int, str, str]:
    return run_cli(["synthesize", str(ckpt), str(landcover), "-q", *extra], capsys)


def write_image(path: Path, dtype: str, driver: str = "GTiff") -> Path:
    """A 4-band 32 x 32 image without georeferencing."""
    data = np.random.default_rng(0).integers(1, 255, (4, 32, 32)).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver=driver, width=32, height=32, count=4,
                           dtype=dtype) as dst:
            dst.write(data)
    return path


def write_edits(path: Path, geometries: list, crs: str | None = "EPSG:26918") -> Path:
    import geopandas as gpd

    gpd.GeoDataFrame({"cls": ["water"] * len(geometries)}, geometry=geometries,
                     crs=crs).to_file(path)
    return path


# -- 1: an output is never an input, nor the other output ---------------------------------------


@pytest.mark.parametrize("spelling", ["same", "dotted", "symlink"])
def test_out_and_save_landcover_may_not_name_the_same_file(tmp_path, ckpt, landcover, capsys,
                                                           spelling):
    out = tmp_path / "x.tif"
    other = {"same": out, "dotted": tmp_path / "sub" / ".." / "x.tif",
             "symlink": tmp_path / "link.tif"}[spelling]
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.tif").symlink_to(out)  # dangling until x.tif is written
    code, _, err = synth(capsys, ckpt, landcover, "-o", str(out), "--save-landcover",
                         str(other))
    assert_one_line_error(code, err, "-o and --save-landcover name the same file")
    assert not out.exists()


@pytest.mark.parametrize("option,which", [
    ("-o", "landcover"), ("--save-landcover", "landcover"), ("-o", "checkpoint"),
    ("-o", "edits"), ("-o", "style"),
])
def test_an_output_never_replaces_an_input_even_with_overwrite(tmp_path, vae_ckpt, landcover,
                                                               capsys, option, which):
    from shapely.geometry import box

    edits = write_edits(tmp_path / "edits.gpkg", [box(360000, 4349990, 360010, 4350000)])
    style = write_image(tmp_path / "style.tif", "uint8")
    inputs = {"landcover": landcover, "checkpoint": vae_ckpt, "edits": edits, "style": style}
    before = inputs[which].read_bytes()
    outputs = {"-o": str(tmp_path / "out.tif"), "--save-landcover": str(tmp_path / "lc-out.tif")}
    outputs[option] = str(inputs[which])
    code, _, err = synth(capsys, vae_ckpt, landcover, "--edits", str(edits), "--edit-field",
                         "cls", "--style", str(style), "--overwrite",
                         *[a for o, path in outputs.items() for a in (o, path)])
    assert_one_line_error(code, err, f"output {inputs[which]} is the", "this command reads",
                          "--overwrite never replaces an input")
    assert inputs[which].read_bytes() == before
    assert not (tmp_path / "out.tif").exists() and not (tmp_path / "lc-out.tif").exists()


def test_stitch_output_may_not_be_one_of_the_tiles(tmp_path, capsys):
    a = write_tile(tmp_path / "a.tif", np.full((1, 8, 8), 10, np.uint8), 0, 0)
    b = write_tile(tmp_path / "b.tif", np.full((1, 8, 8), 20, np.uint8), 0, 6)
    before = a.read_bytes()
    code, _, err = run_cli(["stitch", str(a), str(b), "-o", str(tmp_path / "." / "a.tif"),
                            "--overwrite", "-q"], capsys)
    assert_one_line_error(code, err, "is a tile that this command reads")
    assert a.read_bytes() == before


# -- 2: --tiles-only needs a north-up land cover ------------------------------------------------


@pytest.fixture()
def rotated_landcover(tmp_path) -> Path:
    labels = np.tile(np.arange(1, 7, dtype=np.uint8), (40, 8))
    return write_landcover(tmp_path / "rotated.tif", labels,
                           transform=ORIGIN * Affine.rotation(30))


@pytest.mark.parametrize("extra", [[], ["--rank", "1", "--world-size", "2"]])
def test_tiles_only_refuses_a_rotated_landcover(tmp_path, ckpt, rotated_landcover, capsys,
                                                extra):
    tiles = tmp_path / "tiles"
    code, _, err = synth(capsys, ckpt, rotated_landcover, "--tiles-only", str(tiles), *extra)
    assert_one_line_error(code, err, "is rotated (not north-up)", "stitch",
                          "with -o instead", "gdalwarp")
    assert not tiles.exists()  # the folder the run made is taken back


def test_a_rotated_landcover_still_synthesizes_with_o(tmp_path, ckpt, rotated_landcover):
    synthesize(ckpt, rotated_landcover, tmp_path / "out.tif", quiet=True)
    with rasterio.open(rotated_landcover) as lc, rasterio.open(tmp_path / "out.tif") as out:
        assert out.transform == lc.transform and out.transform.b != 0
        assert (out.crs, out.width, out.height, out.count) == (lc.crs, 48, 40, 4)


# -- 3: --rank / --world-size -------------------------------------------------------------------


def test_world_size_and_rank_name_their_options(tmp_path, ckpt, landcover, capsys):
    tiles = str(tmp_path / "tiles")
    code, _, err = synth(capsys, ckpt, landcover, "--tiles-only", tiles, "--world-size", "0")
    assert_one_line_error(code, err, "'--world-size'", "x>=1", exit_code=2)
    code, _, err = synth(capsys, ckpt, landcover, "--tiles-only", tiles, "--rank", "2",
                         "--world-size", "2")
    assert_one_line_error(code, err, "--rank must be in 0..1 (--world-size 2), not 2")
    assert not (tmp_path / "tiles").exists()
    with pytest.raises(GeospadeError, match="^world_size must be at least 1, not 0"):
        synthesize(ckpt, landcover, None, tiles_only=tiles, world_size=0, quiet=True)


# -- 4: --seed is a non-negative integer everywhere ---------------------------------------------


@pytest.mark.parametrize("command", ["synthesize", "tile", "train", "evaluate"])
def test_every_command_refuses_a_negative_seed(tmp_path, ckpt, landcover, capsys, command):
    args = {"synthesize": [str(ckpt), str(landcover), "-o", str(tmp_path / "out.tif")],
            "tile": [str(landcover), str(landcover), "-o", str(tmp_path / "chips")],
            "train": [str(tmp_path), "-o", str(tmp_path / "run")],
            "evaluate": [str(ckpt), str(tmp_path)]}[command]
    code, _, err = run_cli([command, *args, "--seed", "-1"], capsys)
    assert_one_line_error(code, err, "'--seed'", "-1 is not in the range x>=0", exit_code=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lc.tif"]


def test_synthesize_api_refuses_a_negative_seed(tmp_path, vae_ckpt, landcover):
    with pytest.raises(GeospadeError, match="^seed must be a non-negative integer, not -1"):
        synthesize(vae_ckpt, landcover, tmp_path / "out.tif", seed=-1, quiet=True)
    with pytest.raises(GeospadeError, match="^seed must be"):
        load_synthesis_model(vae_ckpt, device="cpu", seed=-1)
    assert not (tmp_path / "out.tif").exists()


# -- 5: style images ----------------------------------------------------------------------------


def test_style_image_of_another_dtype_is_refused(tmp_path, vae_ckpt, landcover, capsys):
    style = write_image(tmp_path / "style16.tif", "uint16")
    out = tmp_path / "out.tif"
    code, _, err = synth(capsys, vae_ckpt, landcover, "-o", str(out), "--style", str(style))
    assert_one_line_error(code, err, "style image", "has uint16 bands, the checkpoint uint8")
    assert not out.exists()


def test_style_image_without_georeferencing_gives_no_warning(tmp_path, vae_ckpt, landcover,
                                                             capsys, recwarn):
    style = write_image(tmp_path / "style.png", "uint8", driver="PNG")
    out = tmp_path / "out.tif"
    code, _, err = synth(capsys, vae_ckpt, landcover, "-o", str(out), "--style", str(style))
    assert code == 0 and err == ""
    assert not [w for w in recwarn
                if issubclass(w.category, rasterio.errors.NotGeoreferencedWarning)]
    with rasterio.open(out) as src:
        assert (src.width, src.height, src.count) == (48, 40, 4)


# -- 6: edits -----------------------------------------------------------------------------------


def test_edit_field_without_edits_is_refused(tmp_path, ckpt, landcover, capsys):
    out = tmp_path / "out.tif"
    code, _, err = synth(capsys, ckpt, landcover, "-o", str(out), "--edit-field", "cls")
    assert_one_line_error(code, err, "--edit-field needs --edits")
    assert not out.exists()


def test_edits_that_are_not_polygons_are_refused(tmp_path, ckpt, landcover, capsys):
    from shapely.geometry import LineString, Point, box

    edits = write_edits(tmp_path / "edits.gpkg", [
        box(360000, 4349990, 360010, 4350000), Point(360005, 4349995),
        LineString([(360000, 4349990), (360010, 4350000)])])
    out = tmp_path / "out.tif"
    code, _, err = synth(capsys, ckpt, landcover, "-o", str(out), "--edits", str(edits),
                         "--edit-field", "cls")
    assert_one_line_error(code, err, "have LineString, Point geometries", "only polygons")
    assert not out.exists()


def test_edits_outside_the_landcover_warn_and_change_nothing(tmp_path, ckpt, landcover,
                                                            capsys):
    from shapely.geometry import box

    # One far away, one sharing only the raster's left edge.
    edits = write_edits(tmp_path / "edits.gpkg", [box(370000, 4349990, 370010, 4350000),
                                                  box(359990, 4349990, 360000, 4350000)])
    code, _, err = synth(capsys, ckpt, landcover, "-o", str(tmp_path / "edited.tif"),
                         "--edits", str(edits), "--edit-field", "cls")
    assert code == 0
    assert err.startswith("geospade: warning: no polygon of edits") and err.count("\n") == 1
    assert "the output is unedited" in err
    synthesize(ckpt, landcover, tmp_path / "plain.tif", quiet=True)
    with rasterio.open(tmp_path / "edited.tif") as a, rasterio.open(tmp_path / "plain.tif") as b:
        assert np.array_equal(a.read(), b.read())
    # Edits inside the raster: no warning.
    write_edits(tmp_path / "inside.gpkg", [box(360000, 4349990, 360010, 4350000)])
    code, _, err = synth(capsys, ckpt, landcover, "-o", str(tmp_path / "inside.tif"),
                         "--edits", str(tmp_path / "inside.gpkg"), "--edit-field", "cls")
    assert code == 0 and err == ""


# -- 7: --window and --bbox lie inside the raster -----------------------------------------------


@pytest.mark.parametrize("window", ["-10,0,50,50", "0,0,48,41", "40,0,10,10"])
def test_window_not_inside_the_landcover_is_refused(tmp_path, ckpt, landcover, capsys, window):
    out = tmp_path / "out.tif"
    code, _, err = synth(capsys, ckpt, landcover, "-o", str(out), "--window", window)
    assert_one_line_error(code, err, f"--window {window} reaches outside the land cover "
                                     "(48x40 px)")
    assert not out.exists()


def test_bbox_not_inside_the_landcover_is_refused(tmp_path, ckpt, landcover, capsys):
    out = tmp_path / "out.tif"
    code, _, err = synth(capsys, ckpt, landcover, "-o", str(out), "--bbox",
                         "359990,4349950,360010,4350000")
    assert_one_line_error(code, err, "--bbox 359990,4349950,360010,4350000 reaches outside",
                          "bounds 360000,4349960,360048,4350000 (48x40 px)")
    assert not out.exists()
    # The raster's own bounds are inside.
    synthesize(ckpt, landcover, out, bbox="360000,4349960,360048,4350000", quiet=True)
    with rasterio.open(out) as src:
        assert (src.width, src.height) == (48, 40) and src.transform == ORIGIN


# -- 8: tile --aoi needs a CRS ------------------------------------------------------------------


def test_tile_aoi_without_a_crs_is_refused(tmp_path, landscape_pair, capsys):
    from shapely.geometry import box

    landcover, imagery = landscape_pair
    aoi = tmp_path / "aoi.shp"  # a shapefile without its .prj
    with pytest.warns(UserWarning):
        write_edits(aoi, [box(0, 0, 10, 10)], crs=None)
    code, _, err = run_cli(["tile", str(landcover), str(imagery), "-o", str(tmp_path / "chips"),
                            "--size", "64", "--aoi", str(aoi), "-q"], capsys)
    assert_one_line_error(code, err, f"AOI {aoi} has no CRS")
    assert not (tmp_path / "chips").exists()


# -- 9: a failed run takes back the folders it created ------------------------------------------


def test_failed_synthesize_removes_the_output_folders_it_created(tmp_path, ckpt, landcover,
                                                                 capsys):
    out = tmp_path / "new" / "deeper" / "x.tif"
    (tmp_path / "kept").mkdir()
    code, _, err = synth(capsys, ckpt, landcover, "-o", str(out), "--save-landcover",
                         str(tmp_path / "kept" / "lc.tif"), "--window", "1,2,3")
    assert_one_line_error(code, err, "--window must be")
    assert not (tmp_path / "new").exists()
    assert (tmp_path / "kept").is_dir() and not any((tmp_path / "kept").iterdir())


def test_interrupted_synthesize_and_stitch_remove_their_new_folders(tmp_path, ckpt, landcover,
                                                                    capsys, monkeypatch):
    from geospade.raster.blending_writer import BlendingWriter
    from geospade.raster.stitch import stitch
    from geospade.synthesis.model import SynthesisModel

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(SynthesisModel, "__call__", crash)
    code, _, err = synth(capsys, ckpt, landcover, "-o", str(tmp_path / "new" / "x.tif"))
    assert code == 130 and err == "geospade: interrupted\n"
    assert not (tmp_path / "new").exists()

    tile = write_tile(tmp_path / "a.tif", np.full((1, 8, 8), 10, np.uint8), 0, 0)
    monkeypatch.setattr(BlendingWriter, "add", crash)
    with pytest.raises(KeyboardInterrupt):
        stitch([tile], tmp_path / "stitched" / "x.tif", quiet=True)
    assert not (tmp_path / "stitched").exists()


def test_tile_and_evaluate_apis_refuse_a_negative_seed(tmp_path, ckpt, landcover):
    from geospade import evaluate, tile

    with pytest.raises(GeospadeError, match="^seed must be a non-negative integer, not -1"):
        tile(landcover, landcover, tmp_path / "chips", seed=-1, quiet=True)
    with pytest.raises(GeospadeError, match="^seed must be a non-negative integer, not -3"):
        evaluate(ckpt, tmp_path, split="val", out=tmp_path / "report.json", seed=-3, quiet=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lc.tif"]


def test_tile_refuses_the_land_cover_as_its_own_imagery(tmp_path, landcover, capsys):
    code, _, err = run_cli(["tile", str(landcover), str(landcover), "-o", str(tmp_path / "c")],
                           capsys)
    assert_one_line_error(code, err, "the land cover and the imagery are the same file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lc.tif"]
