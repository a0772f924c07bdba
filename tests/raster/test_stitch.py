"""The blending writer on its own and `geospade stitch`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from cli_runner import run_cli
from rasterio.transform import from_origin

from geospade.raster.blend import edge_overlaps, ramp
from geospade.raster.blending_writer import BlendingWriter
from geospade.raster.grid import Grid
from geospade.raster.stitch import stitch

ORIGIN = from_origin(500000.0, 4000000.0, 2.0, 2.0)


def write_tile(path: Path, data: np.ndarray, row: int, col: int, crs: str = "EPSG:32618",
               transform: Affine = ORIGIN, nodata: float | None = None) -> Path:
    count, h, w = data.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=count,
                       dtype=data.dtype, crs=crs,
                       transform=transform * Affine.translation(col, row),
                       nodata=nodata) as dst:
        dst.write(data)
    return path




def test_ramps_cross_fade_to_one_and_never_vanish():
    left, right = ramp(50, 0, 20), ramp(50, 20, 0)
    np.testing.assert_allclose(left[30:] + right[:20], 1.0, atol=1e-12)
    assert (left > 0).all() and (right > 0).all()
    assert (left[:30] == 1).all()            # flat at the raster's own edge
    assert np.all(np.diff(right[:20]) > 0)   # smooth rise
    assert (ramp(10) == 1).all()


def test_edge_overlaps_of_a_row_of_windows():
    starts = np.array([0, 48, 86])
    lead, trail = edge_overlaps(starts, starts + 64)
    assert lead.tolist() == [0, 16, 26] and trail.tolist() == [16, 26, 0]


def test_blending_writer_holds_only_the_rows_still_touched(tmp_path):
    grid = Grid(None, ORIGIN, 40, 1000)
    held = []
    with BlendingWriter(tmp_path / "w.tif", grid, 1, "uint8", overviews=False) as writer:
        for row in range(0, 1000 - 20 + 1, 10):
            writer.add(np.full((1, 20, 40), row % 250 + 1, np.float32), row, 0)
            held.append(writer._weight.shape[0])
    assert max(held) <= 20  # memory bounded by a piece's height, not by the raster's
    with rasterio.open(tmp_path / "w.tif") as src:
        data = src.read(1)
    assert data[0, 0] == 1 and data[995, 0] == 980 % 250 + 1
    assert data[15, 0] == 6  # rows 10..19: mean of the pieces at 0 and 10 (values 1 and 11)


def test_blending_writer_raises_a_write_error_and_leaves_no_file(tmp_path):
    grid = Grid(None, ORIGIN, 40, 100)
    calls = []

    def failing(values: np.ndarray) -> np.ndarray:
        calls.append(values.shape[1])
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return np.clip(np.rint(values), 0, 255).astype(np.uint8)

    writer = BlendingWriter(tmp_path / "w.tif", grid, 1, "uint8", to_output=failing,
                            overviews=False)
    with pytest.raises(RuntimeError, match="disk full"):
        with writer:
            for row in range(0, 100, 10):
                writer.add(np.full((1, 10, 40), 7, np.float32), row, 0)
    assert calls[:2] == [10, 10]
    assert list(tmp_path.iterdir()) == []  # neither the output nor its temporary file


def test_blending_writer_writes_rows_in_order(tmp_path):
    grid = Grid(None, ORIGIN, 8, 300)
    with BlendingWriter(tmp_path / "w.tif", grid, 1, "uint16", overviews=False,
                        block_size=16) as writer:
        for row in range(0, 300, 3):
            writer.add(np.full((1, 3, 8), row + 1, np.float32), row, 0)
    with rasterio.open(tmp_path / "w.tif") as src:
        data = src.read(1)
    assert (data[:, 0] == np.repeat(np.arange(1, 301, 3), 3)).all()


def test_final_full_width_pieces_write_the_same_file(tmp_path):
    # Strips that no later piece touches go straight to the file: same pixels as summing them,
    # nodata gaps included, and a piece reaching back into written rows is refused.
    grid = Grid(None, ORIGIN, 40, 100)
    rng = np.random.default_rng(0)
    strips = [(row, rng.uniform(0, 250, (2, 10, 40)).astype(np.float32))
              for row in (0, 10, 30, 40, 90)]  # rows 20-29 and 50-89 get no piece
    for final in (False, True):
        with BlendingWriter(tmp_path / f"{final}.tif", grid, 2, "uint8", overviews=False,
                            nodata=0) as writer:
            for row, data in strips:
                writer.add(data, row, 0, final=final)
    with rasterio.open(tmp_path / "False.tif") as a, rasterio.open(tmp_path / "True.tif") as b:
        summed, direct = a.read(), b.read()
    assert np.array_equal(summed, direct)
    assert (direct[:, 20:30] == 0).all() and (direct[:, 50:90] == 0).all()
    assert (direct[:, :20] > 0).all()  # valid values never equal nodata
    with BlendingWriter(tmp_path / "x.tif", grid, 2, "uint8", overviews=False) as writer:
        writer.add(strips[0][1], 0, 0, final=True)
        with pytest.raises(ValueError, match="written already"):
            writer.add(strips[1][1], 5, 0)
        writer.add(strips[1][1], 10, 0)
        for row in range(20, 100, 10):
            writer.add(strips[1][1], row, 0, final=True)


def test_stitch_writes_the_codec_asked_for(tmp_path, capsys):
    a = write_tile(tmp_path / "a.tif", np.full((1, 30, 50), 100, np.uint8), 0, 0)
    code, _, _ = run_cli(["stitch", str(a), "-o", str(tmp_path / "m.tif"), "--compress", "zstd",
                          "-q"], capsys)
    assert code == 0
    with rasterio.open(tmp_path / "m.tif") as src:
        assert src.compression.name.lower() == "zstd" and (src.read(1) == 100).all()


def test_stitch_cross_fades_two_overlapping_tiles(tmp_path, capsys):
    a = write_tile(tmp_path / "a.tif", np.full((1, 30, 50), 100, np.uint8), 0, 0)
    b = write_tile(tmp_path / "b.tif", np.full((1, 30, 50), 200, np.uint8), 0, 30)
    code, out, _ = run_cli(["stitch", str(b), str(a), "-o", str(tmp_path / "m.tif")], capsys)
    assert code == 0 and "2 tile(s)" in out
    with rasterio.open(tmp_path / "m.tif") as src:
        assert (src.width, src.height) == (80, 30)
        assert src.transform == ORIGIN and src.crs == "EPSG:32618"
        m = src.read(1).astype(int)
    assert (m[:, :30] == 100).all() and (m[:, 50:] == 200).all()
    fade = m[0, 30:50]
    assert np.all(np.diff(fade) >= 0) and fade[0] < 105 and fade[-1] > 195 and 145 < fade[10] < 155


def test_stitch_fills_nodata_from_other_tiles_and_marks_gaps(tmp_path):
    first = np.full((1, 20, 20), 50, np.uint8)
    first[:, :, 10:] = 0  # nodata on its right half
    a = write_tile(tmp_path / "a.tif", first, 0, 0, nodata=0)
    b = write_tile(tmp_path / "b.tif", np.full((1, 20, 20), 90, np.uint8), 0, 10, nodata=0)
    c = write_tile(tmp_path / "c.tif", np.full((1, 10, 10), 70, np.uint8), 30, 0, nodata=0)
    summary = stitch([a, b, c], tmp_path / "m.tif", quiet=True)
    assert summary["tiles"] == 3
    with rasterio.open(tmp_path / "m.tif") as src:
        m = src.read(1)
        assert src.nodata == 0 and (src.width, src.height) == (30, 40)
    assert (m[:20, :10] == 50).all() and (m[:20, 10:] == 90).all()  # b fills a's nodata
    assert (m[20:30] == 0).all() and (m[30:, 10:] == 0).all()      # nothing covers these
    assert (m[30:, :10] == 70).all()


def test_stitch_a_single_tile_keeps_its_bytes_values(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(1, 255, (3, 37, 45), dtype=np.uint8)
    a = write_tile(tmp_path / "a.tif", data, 5, 7)
    stitch([a], tmp_path / "m.tif", cog=True, quiet=True)
    with rasterio.open(tmp_path / "m.tif") as src:
        np.testing.assert_array_equal(src.read(), data)
        assert src.transform == ORIGIN * Affine.translation(7, 5)
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"


@pytest.mark.parametrize("kind", ["crs", "pixel", "grid", "bands"])
def test_stitch_rejects_tiles_that_do_not_fit(tmp_path, capsys, kind):
    a = write_tile(tmp_path / "a.tif", np.ones((1, 10, 10), np.uint8), 0, 0)
    other = {"crs": {"crs": "EPSG:32617"},
             "pixel": {"transform": from_origin(500000.0, 4000000.0, 1.0, 1.0)},
             "grid": {"transform": from_origin(500000.5, 4000000.0, 2.0, 2.0)},
             "bands": {}}[kind]
    data = np.ones((2 if kind == "bands" else 1, 10, 10), np.uint8)
    b = write_tile(tmp_path / "b.tif", data, 0, 5, **other)
    code, _, err = run_cli(["stitch", str(a), str(b), "-o", str(tmp_path / "m.tif")], capsys)
    needle = {"crs": "another CRS", "pixel": "pixel size", "grid": "pixel grid",
              "bands": "bands"}[kind]
    assert code == 1 and err.startswith("geospade: error: ") and err.count("\n") == 1
    assert needle in err and str(b) in err
    assert not (tmp_path / "m.tif").exists()


def test_stitch_bad_inputs(tmp_path, capsys):
    a = write_tile(tmp_path / "a.tif", np.ones((1, 10, 10), np.uint8), 0, 0)
    code, _, err = run_cli(["stitch", str(tmp_path / "missing.tif"), "-o",
                            str(tmp_path / "m.tif")], capsys)
    assert code == 1 and "tile not found" in err and err.count("\n") == 1
    junk = tmp_path / "junk.tif"
    junk.write_text("no raster")
    code, _, err = run_cli(["stitch", str(a), str(junk), "-o", str(tmp_path / "m.tif")], capsys)
    assert code == 1 and "not a readable raster" in err and err.count("\n") == 1
    (tmp_path / "m.tif").write_text("old")
    code, _, err = run_cli(["stitch", str(a), "-o", str(tmp_path / "m.tif")], capsys)
    assert code == 1 and "--overwrite" in err
    assert (tmp_path / "m.tif").read_text() == "old"


def test_tile_weights_match_the_dense_all_pairs_definition():
    # Neighbours come from a spatial index; the ramp lengths must equal edge_overlaps over all
    # pairs (restricted to tiles that overlap on the other axis) for a messy layout.
    from geospade.raster.stitch import _Tile, tile_weights

    rng = np.random.default_rng(3)
    tiles = [_Tile(Path(f"{i}.tif"), int(rng.integers(0, 400)), int(rng.integers(0, 400)),
                   int(rng.integers(20, 120)), int(rng.integers(20, 120))) for i in range(150)]
    tiles += [_Tile(Path("grid.tif"), 64 * i - 8 * i, 0, 64, 64) for i in range(5)]  # a row
    r0 = np.array([t.row for t in tiles])
    r1 = r0 + [t.height for t in tiles]
    c0 = np.array([t.col for t in tiles])
    c1 = c0 + [t.width for t in tiles]
    rows_meet = (r0[:, None] < r1[None, :]) & (r0[None, :] < r1[:, None])
    cols_meet = (c0[:, None] < c1[None, :]) & (c0[None, :] < c1[:, None])
    lead_y, trail_y = edge_overlaps(r0, r1, across=cols_meet)
    lead_x, trail_x = edge_overlaps(c0, c1, across=rows_meet)
    expected = list(zip(lead_y.tolist(), trail_y.tolist(), lead_x.tolist(), trail_x.tolist(),
                        strict=True))
    assert tile_weights(tiles) == expected
    assert any(w != (0, 0, 0, 0) for w in expected)
