"""Several files per input, and GDAL paths/URLs (geospade/raster/sources.py).

A land cover cut into 4 tiles on its grid and imagery (in another CRS) cut into 3 tiles give the
same chips as the two single files (pixels, grid, bands, tags; only the provenance tags naming
the sources differ), whether the tiles are given as a glob, a list
file, a VRT, or served over HTTP (a local server that answers range requests, as GDAL's
/vsicurl/ needs).
"""

from __future__ import annotations

import http.server
import re
import threading
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from cli_runner import run_cli
from rasterio.warp import Resampling, calculate_default_transform, reproject
from rasterio.windows import Window

from geospade.errors import GeospadeError
from geospade.landscape import make_landscape
from geospade.outputs import check_not_an_input, is_local, same_file
from geospade.provenance import SOURCE_IMAGERY, SOURCE_LANDCOVER
from geospade.raster.alignment import open_raster
from geospade.raster.sources import gap_nodata, gdal_path, input_files, source_record
from geospade.raster.tiling import tile

CHIP = 64


def _write_window(src: rasterio.DatasetReader, window: Window, path: Path, **changes) -> Path:
    profile = src.profile | {"width": int(window.width), "height": int(window.height),
                             "transform": src.window_transform(window)} | changes
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(src.read(window=window))
        dst.colorinterp = src.colorinterp
    return path


def _cut(path: Path, windows: list[Window], stem: str, **changes) -> list[Path]:
    """``path`` cut into one file per window, on its grid."""
    with rasterio.open(path) as src:
        return [_write_window(src, w, path.parent / f"{stem}_{i}.tif", **changes)
                for i, w in enumerate(windows)]


def _reproject(path: Path, out: Path, crs: str) -> Path:
    """``path`` warped to ``crs`` (nodata 0 around it), as one file."""
    with rasterio.open(path) as src:
        transform, width, height = calculate_default_transform(
            src.crs, crs, src.width, src.height, *src.bounds)
        profile = src.profile | {"crs": crs, "transform": transform, "width": width,
                                 "height": height, "nodata": 0}
        with rasterio.open(out, "w", **profile) as dst:
            for b in src.indexes:
                reproject(rasterio.band(src, b), rasterio.band(dst, b),
                          resampling=Resampling.bilinear)
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory, landscape_pair) -> dict:
    """The single files and their tiles, all in one folder (served over HTTP too).

    The imagery reaches 32 px beyond the land cover on every side, so no chip sees its edge.
    """
    root = tmp_path_factory.mktemp("tiles")
    lc = root / "landcover.tif"
    lc.write_bytes(Path(landscape_pair[0]).read_bytes())
    with rasterio.open(lc) as src:
        x0, y0 = src.transform.c, src.transform.f
    wide = make_landscape(root / "unused.tif", root / "wide.tif", width=320, height=320,
                          origin=(x0 - 32, y0 + 32), seed=1, feature_scale=0.3).imagery
    img = _reproject(wide, root / "imagery.tif", "EPSG:4326")
    with rasterio.open(img) as src:
        w, h = src.width, src.height
    third = h // 3
    return {
        "root": root, "lc": lc, "img": img, "wide": wide, "third": third,
        "lc_tiles": _cut(lc, [Window(c, r, 128, 128) for r in (0, 128) for c in (0, 128)],
                         "lc"),
        "img_tiles": _cut(img, [Window(0, 0, w, third), Window(0, third, w, third),
                                Window(0, 2 * third, w, h - 2 * third)], "im"),
    }


@dataclass(frozen=True, eq=False)
class _Chip:
    """A chip file: everything in it but the names of its sources (provenance tags, which
    differ by design between a single file and a glob)."""

    meta: tuple
    pixels: np.ndarray

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, _Chip) and self.meta == other.meta
                and np.array_equal(self.pixels, other.pixels))


def _chips(store: Path) -> dict[str, _Chip]:
    """Every chip of a store (images and masks), by relative path."""
    chips = {}
    for path in sorted((store / "images").glob("*.tif")) + sorted((store / "masks").glob("*.tif")):
        with rasterio.open(path) as src:
            tags = {k: v for k, v in src.tags().items()
                    if k not in (SOURCE_LANDCOVER, SOURCE_IMAGERY)}
            meta = (dict(src.profile), src.descriptions, src.colorinterp, sorted(tags.items()),
                    src.colormap(1) if path.parent.name == "masks" else None)
            chips[str(path.relative_to(store))] = _Chip(meta, src.read())
    return chips


def _tile(landcover, imagery, out: Path, **options) -> dict[str, _Chip]:
    tile(landcover, imagery, out, size=CHIP, max_nodata=1.0, quiet=True, **options)
    return _chips(out)


@pytest.fixture(scope="module")
def single(data, tmp_path_factory) -> dict[str, _Chip]:
    """The chips of the two single files (16 chips: the imagery covers the land cover)."""
    chips = _tile(data["lc"], data["img"], tmp_path_factory.mktemp("single") / "chips")
    assert len(chips) == 2 * 16
    return chips


def _list_file(path: Path, entries: list[str]) -> Path:
    path.write_text("# tiles\n\n" + "\n".join(entries) + "\n")
    return path


# -- local tiles --------------------------------------------------------------------------------


def test_mosaic_reads_the_pixels_grid_and_bands_of_the_single_file(data):
    with open_raster(str(data["root"] / "im_*.tif"), "imagery") as mosaic, \
            rasterio.open(data["img"]) as single:
        assert mosaic.name.startswith("/vsimem/") and mosaic.name.endswith("/im.vrt")
        assert (mosaic.crs, mosaic.transform, mosaic.shape) == (
            single.crs, single.transform, single.shape)
        assert (mosaic.nodata, mosaic.colorinterp, mosaic.dtypes) == (
            single.nodata, single.colorinterp, single.dtypes)
        np.testing.assert_array_equal(mosaic.read(), single.read())
        window = Window(100, 60, 50, 40)  # across the seam of tiles 0 and 1
        np.testing.assert_array_equal(mosaic.read(window=window), single.read(window=window))


def test_glob_list_file_and_vrt_give_the_chips_of_the_single_files(data, single, tmp_path):
    root = data["root"]
    glob_chips = _tile(str(root / "lc_*.tif"), str(root / "im_*.tif"), tmp_path / "glob")
    assert glob_chips == single
    # A list file: relative paths from its folder, in any order.
    lc_list = _list_file(tmp_path / "lc.txt",
                         [f"../{root.name}/{p.name}" for p in reversed(data["lc_tiles"])])
    img_list = _list_file(tmp_path / "img.txt", [str(p) for p in data["img_tiles"]])
    assert tmp_path.parent == root.parent
    assert _tile(lc_list, img_list, tmp_path / "list", workers=2) == single
    # A GDAL VRT file on disk (the mosaic as gdalbuildvrt would write it).
    vrts = []
    for spec, name in ((lc_list, "lc.vrt"), (img_list, "img.vrt")):
        with open_raster(spec, "input") as src:
            rasterio.shutil.copy(src, tmp_path / name, driver="VRT")
        vrts.append(tmp_path / name)
    assert _tile(*vrts, tmp_path / "vrt") == single


def test_manifest_source_record_lists_every_file(data):
    record = source_record(str(data["root"] / "lc_*.tif"))
    assert record["path"] == str(data["root"] / "lc_*.tif")
    assert record["files"] == [str(p) for p in data["lc_tiles"]]
    assert source_record(Path("https://example.com/a.tif")) == {
        "path": "https://example.com/a.tif", "files": ["https://example.com/a.tif"]}


def test_imagery_tiles_in_two_crs_are_each_warped_onto_the_land_cover(data, single, tmp_path):
    """The last imagery tile in another CRS (overlapping its neighbour by 4 px, as tiles of
    two UTM zones do): each grid is warped on its own and the later lies over the earlier, so
    the chips cover the same pixels, and only pixels where the odd tile was warped twice (and
    the bilinear kernel sees one side of the seam) differ from the single file."""
    with rasterio.open(data["img"]) as src:
        third = data["third"]
        part = _write_window(src, Window(0, 2 * third - 4, src.width, src.height - 2 * third + 4),
                             tmp_path / "im_2.tif")
    odd = _reproject(part, tmp_path / "im_2_utm.tif", "EPSG:32618")
    specs = _list_file(tmp_path / "img.txt", [str(p) for p in data["img_tiles"][:2]]
                       + [str(odd)])
    chips = _tile(str(data["root"] / "lc_*.tif"), specs, tmp_path / "two_crs", workers=2)
    assert chips.keys() == single.keys()
    masks = [k for k in chips if k.startswith("masks/")]
    assert all(chips[k] == single[k] for k in masks)  # labels untouched, coverage the same
    diff = np.stack([np.abs(chips[k].pixels.astype(int) - single[k].pixels.astype(int))
                     for k in chips if k.startswith("images/")])
    assert diff.max() > 0  # the odd tile really was warped twice
    assert (diff > 0).mean() < 0.5 and diff.mean() < 2.0


def test_pixels_between_tiles_are_nodata(data, tmp_path):
    # Land cover with a nodata value: the missing tile reads as that value.
    with open_raster(_list_file(tmp_path / "lc.txt", [str(p) for p in data["lc_tiles"][:3]]),
                     "land cover") as lc:
        assert lc.shape == (256, 256) and lc.nodata == 0
        assert (lc.read(1)[128:, 128:] == 0).all()
    # Land cover without one: it gets the dtype's largest value as nodata.
    bare = _cut(data["lc"], [Window(0, 0, 128, 128), Window(128, 128, 128, 128)], "bare",
                nodata=None)
    with open_raster(_list_file(tmp_path / "bare.txt", [str(p) for p in bare]),
                     "land cover") as lc:
        assert lc.nodata == gap_nodata("uint8") == 255
        labels = lc.read(1)
        assert (labels[:128, 128:] == 255).all() and (labels[:128, :128] != 255).all()
    # Imagery without nodata (nor alpha band): the dataset mask marks the gap.
    tiles = _cut(data["wide"], [Window(0, 0, 50, 50), Window(100, 0, 50, 50)], "bare_im",
                 nodata=None)
    with open_raster(_list_file(tmp_path / "im.txt", [str(p) for p in tiles]),
                     "imagery") as im:
        assert im.nodata is None and im.shape == (50, 150)
        mask = im.dataset_mask()
        assert (mask[:, 50:100] == 0).all() and (mask[:, :50] == 255).all()


def test_an_odd_land_cover_tile_is_one_error_naming_it(data, tmp_path, capsys):
    with rasterio.open(data["lc_tiles"][3]) as src:
        odd = _write_window(src, Window(0, 0, 64, 64), tmp_path / "lc_3.tif",
                            transform=src.transform * src.transform.scale(2))
    specs = _list_file(tmp_path / "lc.txt", [str(p) for p in data["lc_tiles"][:3]] + [str(odd)])
    with pytest.raises(GeospadeError, match=r"land cover files must share one grid.*lc_3\.tif "
                                            r"has 2 x 2 pixels, not 1 x 1 like .*lc_0\.tif"):
        open_raster(specs, "land cover")
    code, _, err = run_cli(["tile", str(specs), str(data["img"]), "-o",
                            str(tmp_path / "chips")], capsys)
    assert code == 1 and err.count("\n") == 1 and "lc_3.tif" in err
    assert not (tmp_path / "chips").exists()


def test_missing_files_of_a_spec_are_one_line(data, tmp_path):
    with pytest.raises(GeospadeError, match=r"^no imagery file matches .*nothing_\*\.tif$"):
        input_files(str(tmp_path / "nothing_*.tif"), "imagery")
    listing = _list_file(tmp_path / "lc.txt", ["lc_0.tif"])
    with pytest.raises(GeospadeError, match=r"^land cover file not found: .*lc_0\.tif "
                                            r"\(listed in .*lc\.txt\)$"):
        input_files(listing, "land cover")
    with pytest.raises(GeospadeError, match="land cover files must have the same bands"):
        open_raster(_list_file(tmp_path / "mixed.txt", [str(data["lc_tiles"][0]),
                                                          str(data["img_tiles"][0])]),
                    "land cover")


def test_an_output_holding_an_input_tile_is_refused(data, tmp_path):
    with pytest.raises(GeospadeError, match="holds the land cover"):
        check_not_an_input(data["root"], [("the land cover", str(data["root"] / "lc_*.tif"))])
    listing = _list_file(tmp_path / "lc.txt", [str(data["lc_tiles"][0])])
    with pytest.raises(GeospadeError, match="is the land cover"):
        check_not_an_input(data["lc_tiles"][0], [("the land cover", listing)])
    check_not_an_input(tmp_path / "chips", [("the land cover", listing),
                                            ("the imagery", "https://example.com/a.tif")])


# -- GDAL paths and URLs ------------------------------------------------------------------------


def test_urls_are_not_local_and_keep_their_slashes():
    assert gdal_path("https://h:8/a/b.tif?x=1") == "/vsicurl/https://h:8/a/b.tif?x=1"
    assert gdal_path("s3://bucket/key.tif") == "/vsis3/bucket/key.tif"
    assert gdal_path(Path("https://h/a.tif")) == "/vsicurl/https://h/a.tif"
    assert gdal_path("/vsizip/a.zip/b.tif") == "/vsizip/a.zip/b.tif"
    assert gdal_path("lc/a.tif") == "lc/a.tif"
    for text in ("https://h/a.tif", "https:/h/a.tif", "s3://b/k", "/vsicurl/http://h/a"):
        assert not is_local(text)
    assert is_local("lc/a.tif") and is_local("/data/a:b.tif") and is_local("C:/data/a.tif")
    assert same_file("https://h/a.tif", "https://h/a.tif")
    assert not same_file("https://h/a.tif", "https://h/b.tif")


def test_a_url_output_is_refused(data, capsys):
    url = "https://127.0.0.1:9/chips"
    with pytest.raises(GeospadeError, match=r"output https://127\.0\.0\.1:9/chips is a URL"):
        tile(data["lc"], data["img"], url, quiet=True)
    code, _, err = run_cli(["tile", str(data["lc"]), str(data["img"]), "-o", url], capsys)
    assert code == 1 and err.count("\n") == 1 and "writes local files only" in err
    assert not Path("https:").exists()


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with ``Range: bytes=a-b`` (206 Partial Content), as GDAL's /vsicurl/
    needs; Python's own handler always sends the whole file."""

    ranges = 0  # range requests answered, by the class

    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start, end = 0, len(data) - 1
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if match and (match[1] or match[2]):
            if match[1]:
                start, end = int(match[1]), min(int(match[2] or end), end)
            else:  # the last N bytes
                start = max(0, len(data) - int(match[2]))
            type(self).ranges += 1
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        if body:
            self.wfile.write(data[start:end + 1])


@pytest.fixture()
def server(data, monkeypatch):
    """``http://127.0.0.1:PORT`` serving the tiles' folder for one test."""
    # No directory listing for sidecar files: one request per file opened, not per folder.
    monkeypatch.setenv("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR")
    handler = partial(_RangeHandler, directory=str(data["root"]))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _RangeHandler.ranges = 0
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_tiles_over_http_give_the_chips_of_the_single_files(data, single, server, tmp_path):
    lc_urls = _list_file(tmp_path / "lc.txt",
                         [f"{server}/{p.name}" for p in data["lc_tiles"]])
    img_vsicurl = _list_file(tmp_path / "img.txt",
                             [f"/vsicurl/{server}/{p.name}" for p in data["img_tiles"]])
    assert _tile(lc_urls, img_vsicurl, tmp_path / "http") == single
    assert _RangeHandler.ranges > 0  # read by ranges, not whole files
    # One file per input, as a URL and as a /vsicurl/ path.
    assert _tile(f"{server}/landcover.tif", f"/vsicurl/{server}/imagery.tif",
                 tmp_path / "one") == single


def test_a_vector_file_over_http_is_read(data, server):
    import geopandas as gpd
    import shapely

    from geospade.vectors import read_vector

    aoi = gpd.GeoDataFrame({"name": ["a", "b"]}, geometry=[shapely.box(0, 0, 1, 1),
                                                            shapely.box(2, 2, 3, 4)],
                           crs="EPSG:4326")
    aoi.to_file(data["root"] / "aoi.geojson", driver="GeoJSON")
    for path in (f"{server}/aoi.geojson", f"/vsicurl/{server}/aoi.geojson"):
        frame = read_vector(path, "AOI", "EPSG:4326")
        assert list(frame["name"]) == ["a", "b"]
        assert [g.area for g in frame.geometry] == [1.0, 2.0]


def test_a_missing_url_is_one_line(server, data, capsys, tmp_path):
    code, _, err = run_cli(["tile", f"{server}/nope.tif", str(data["img"]), "-o",
                            str(tmp_path / "chips")], capsys)
    assert code == 1 and err.count("\n") == 1
    assert f"land cover {server}/nope.tif is not a readable raster (HTTP response code: 404)" \
        in err
    with pytest.raises(GeospadeError, match=f"^land cover {server}/nope.tif is not a readable "
                                            r"raster \(HTTP response code: 404\)$"):
        open_raster(f"{server}/nope.tif", "land cover")


# -- synthesize ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    from test_synthesize import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def _synthesized(ckpt: Path, landcover, out: Path) -> tuple:
    from geospade.synthesis import synthesize

    synthesize(ckpt, landcover, out, overlap=0, device="cpu", quiet=True)
    with rasterio.open(out) as src:
        return src.crs, src.transform, src.read()


def test_synthesize_reads_land_cover_tiles_as_the_single_file(data, ckpt, tmp_path):
    listing = _list_file(tmp_path / "lc.txt", [str(p) for p in data["lc_tiles"]])
    crs, transform, pixels = _synthesized(ckpt, data["lc"], tmp_path / "single.tif")
    tiled = _synthesized(ckpt, listing, tmp_path / "tiles.tif")
    assert (tiled[0], tiled[1]) == (crs, transform)
    np.testing.assert_array_equal(tiled[2], pixels)


def test_synthesize_reads_a_glob_of_land_cover_tiles(data, ckpt, tmp_path):
    _, _, pixels = _synthesized(ckpt, data["lc"], tmp_path / "single.tif")
    _, _, tiled = _synthesized(ckpt, str(data["root"] / "lc_*.tif"), tmp_path / "glob.tif")
    np.testing.assert_array_equal(tiled, pixels)
