"""geospade.vectors.read_vector: the one reader of user vector files (AOI, edits)."""

from __future__ import annotations

import geopandas as gpd
import pytest
from rasterio.crs import CRS
from shapely.geometry import Polygon, box

from geospade.errors import GeospadeError
from geospade.vectors import read_vector

UTM = "EPSG:26918"


def _write(path, geometries, crs=UTM):
    gpd.GeoDataFrame({"cls": list(range(len(geometries)))}, geometry=geometries,
                     crs=crs).to_file(path)
    return path


def test_reprojects_to_the_crs_asked_for(tmp_path):
    path = _write(tmp_path / "a.gpkg", [box(360000, 4349990, 360010, 4350000)])
    frame = read_vector(path, "AOI", CRS.from_epsg(4326), onto="the land cover")
    assert frame.crs.to_epsg() == 4326
    left, bottom, right, top = frame.geometry.iloc[0].bounds
    assert left == pytest.approx(-76.623342, abs=1e-6)
    assert top == pytest.approx(39.288064, abs=1e-6)
    assert list(frame["cls"]) == [0]


def test_keeps_the_files_crs_without_one_asked_for_and_drops_empty_geometries(tmp_path):
    path = _write(tmp_path / "a.gpkg", [box(0, 0, 10, 10), Polygon(), box(5, 5, 6, 6)])
    frame = read_vector(path, "edits")
    assert frame.crs == UTM
    assert list(frame["cls"]) == [0, 2]
    assert frame.geometry.iloc[1].bounds == (5.0, 5.0, 6.0, 6.0)


def test_missing_and_unreadable_files_are_one_line_naming_role_and_path(tmp_path):
    with pytest.raises(GeospadeError, match=r"^edits file not found: .*nope\.gpkg$"):
        read_vector(tmp_path / "nope.gpkg", "edits")
    bad = tmp_path / "bad.gpkg"
    bad.write_text("not a GeoPackage")
    with pytest.raises(GeospadeError, match=r"^cannot read AOI .*bad\.gpkg: ") as info:
        read_vector(bad, "AOI")
    assert "\n" not in str(info.value)


def test_a_crs_is_needed_only_to_place_or_reproject(tmp_path):
    path = tmp_path / "nocrs.shp"  # a shapefile without its .prj
    with pytest.warns(UserWarning):
        _write(path, [box(0, 0, 10, 10)], crs=None)
    assert len(read_vector(path, "AOI")) == 1
    with pytest.raises(GeospadeError, match=f"^AOI {path} has no CRS; .* the land cover$"):
        read_vector(path, "AOI", CRS.from_epsg(4326), onto="the land cover")
    with pytest.raises(GeospadeError, match="has no CRS"):
        read_vector(path, "AOI", onto="the land cover")


def test_a_target_without_a_crs_is_refused(tmp_path):
    path = _write(tmp_path / "a.gpkg", [box(0, 0, 10, 10)])
    with pytest.raises(GeospadeError, match="^the land cover has no CRS, so edits .* cannot"):
        read_vector(path, "edits", None, onto="the land cover")
