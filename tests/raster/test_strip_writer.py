"""The strip writer's temporary files: whatever a killed run leaves, the next run removes."""

from __future__ import annotations

import pytest
from affine import Affine

import geospade.raster.strip_writer as strip_writer
from geospade.outputs import remove_stale_temporaries
from geospade.raster.grid import Grid
from geospade.raster.strip_writer import StripWriter

GRID = Grid("EPSG:26918", Affine(1, 0, 360000, 0, -1, 4350000), 40, 40)


@pytest.mark.parametrize("cog,overviews,room", [
    (False, False, True),   # rows go straight to the final layout (tiles, small rasters)
    (False, True, True),    # an uncompressed intermediate, then a compressed copy
    (True, True, False),    # a COG without room for the intermediate: compressed strips first
])
def test_a_killed_writers_temporaries_are_removed_by_the_next_run(tmp_path, monkeypatch, cog,
                                                                  overviews, room):
    monkeypatch.setattr(strip_writer, "disk_has_room", lambda path, nbytes: room)
    out = tmp_path / "out.tif"
    writer = StripWriter(out, GRID, 1, "uint8", cog=cog, overviews=overviews, block_size=16)
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".out.tif.")
    # The writer is never closed nor aborted (a kill -9); the next run, holding the output's
    # lock, clears the folder.
    assert [p.name for p in remove_stale_temporaries(out)] == left
    assert list(tmp_path.iterdir()) == []
    writer.abort()


@pytest.mark.parametrize("count", [1, 3])
def test_a_raster_with_overviews_through_the_uncompressed_intermediate(tmp_path, monkeypatch,
                                                                       count):
    # One band copied with its overviews gets GDAL's COG layout, which GDAL refuses to update
    # unless told: the overview tag is still written, and the pixels and overviews are kept.
    import numpy as np
    import rasterio

    monkeypatch.setattr(strip_writer, "disk_has_room", lambda path, nbytes: True)
    grid = Grid(GRID.crs, GRID.transform, 300, 230)
    rows = np.arange(count * 230 * 300, dtype=np.int64).reshape(count, 230, 300) % 7 + 1
    out = tmp_path / "classes.tif"
    with StripWriter(out, grid, count, "uint8", nodata=0, resampling="nearest") as writer:
        for top in range(0, 230, 50):
            writer.write(rows[:, top:top + 50].astype(np.uint8))
    with rasterio.open(out) as src:
        assert np.array_equal(src.read(), rows)
        assert src.overviews(1) == [2]
        assert src.tags(ns="rio_overview") == {"resampling": "nearest"}
        assert np.array_equal(src.read(out_shape=(count, 115, 150)), rows[:, ::2, ::2])
    assert [p.name for p in tmp_path.iterdir()] == ["classes.tif"]


def test_a_cog_is_pixel_interleaved_without_gdal_warnings(tmp_path, caplog, capfd):
    # GDAL's COG driver knows INTERLEAVE only from 3.11; before, passing it made GDAL warn on
    # every COG, and the file was pixel-interleaved anyway.
    import logging

    import numpy as np
    import rasterio

    rows = np.arange(3 * 40 * 40, dtype=np.int64).reshape(3, 40, 40).astype(np.uint8)
    out = tmp_path / "cog.tif"
    with caplog.at_level(logging.WARNING):
        with StripWriter(out, GRID, 3, "uint8", cog=True, block_size=16) as writer:
            writer.write(rows)
    with rasterio.open(out) as src:
        assert np.array_equal(src.read(), rows)
        assert src.interleaving.name.lower() == "pixel"
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
    gdal_said = capfd.readouterr().err + caplog.text
    assert "INTERLEAVE" not in gdal_said.upper(), gdal_said
