"""Class names GIS software shows: the class map's and mask chips' side-cars, index columns
named by class, and the store's RGB bands."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
from cli_runner import run_cli
from rasterio.crs import CRS
from rasterio.transform import from_origin
from test_synthesize import make_checkpoint

from geospade.errors import GeospadeError
from geospade.formats import chip_store
from geospade.formats.chip_store import class_fraction_columns, open_chip_store
from geospade.landscape import make_landscape
from geospade.raster.strip_writer import (
    RasterClass,
    aux_path,
    class_aux_xml,
    read_category_names,
)
from geospade.schemes import CHESAPEAKE7
from geospade.synthesis import synthesize


def rat_rows(path: Path) -> list[list[str]]:
    """The rows of band 1's raster attribute table in ``path``'s side-car."""
    root = ET.parse(aux_path(path)).getroot()
    table = root.find("./PAMRasterBand[@band='1']/GDALRasterAttributeTable")
    names = [f.findtext("Name") for f in table.findall("FieldDefn")]
    assert names == ["Value", "Class", "Red", "Green", "Blue", "Alpha"]
    return [[f.text for f in row.findall("F")] for row in table.findall("Row")]


def test_class_aux_xml_is_what_gdal_writes():
    xml = class_aux_xml([RasterClass(1, "water", (0, 0, 255, 255)),
                         RasterClass(3, "forest", (0, 128, 0, 255))])
    root = ET.fromstring(xml)
    names = [c.text or "" for c in root.iter("Category")]
    assert names == ["", "water", "", "forest"]  # indexed by pixel value
    fields = [(f.findtext("Name"), f.findtext("Type"), f.findtext("Usage"))
              for f in root.iter("FieldDefn")]
    # GDALRATFieldType 0 integer, 2 string; usages GFU_MinMax 5, GFU_Name 2, Red..Alpha 6..9.
    assert fields == [("Value", "0", "5"), ("Class", "2", "2"), ("Red", "0", "6"),
                      ("Green", "0", "7"), ("Blue", "0", "8"), ("Alpha", "0", "9")]
    assert root.find(".//GDALRasterAttributeTable").get("tableType") == "thematic"
    # Values too large for a list of names get the table only.
    big = ET.fromstring(class_aux_xml([RasterClass(60000, "x", (1, 2, 3, 255))]))
    assert big.find(".//CategoryNames") is None and big.find(".//Row") is not None


def test_saved_landcover_names_its_classes(tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "c.pt")
    lc = make_landscape(tmp_path / "lc.tif", tmp_path / "im.tif", 150, 100, feature_scale=0.3,
                        seed=1).landcover
    saved = tmp_path / "classes.tif"
    synthesize(ckpt, lc, tmp_path / "out.tif", save_landcover=saved, quiet=True)
    with rasterio.open(saved) as src:
        colormap = src.colormap(1)
    names = read_category_names(saved)
    assert names == {1: "water", 2: "tree canopy and shrubs", 3: "low vegetation",
                     4: "barren", 5: "impervious surfaces", 6: "impervious roads"}
    for value, name in names.items():  # the same colour as the colour table's
        row = next(r for r in rat_rows(saved) if r[0] == str(value))
        assert row[1] == name
        assert tuple(int(v) for v in row[2:]) == colormap[value]
    assert colormap[1][:3] == CHESAPEAKE7.classes[0].color
    code, out, _ = run_cli(["info", str(saved)], capsys)
    assert code == 0 and "  2  tree canopy and shrubs" in out.splitlines()
    # --overwrite writes the side-car again; an imagery output replaced loses its stale one.
    aux_path(saved).write_text("<PAMDataset/>")
    stale = aux_path(tmp_path / "out.tif")
    stale.write_text("<PAMDataset><Metadata/></PAMDataset>")
    synthesize(ckpt, lc, tmp_path / "out.tif", save_landcover=saved, overwrite=True,
               quiet=True)
    assert read_category_names(saved) == names
    assert not stale.exists()


def test_mask_chips_with_classes_get_named_categories(tmp_path):
    writer = chip_store.ChipWriter(chip_store.mask_profile(CRS.from_epsg(26918)),
                                   colormap=CHESAPEAKE7.colormap(),
                                   classes=chip_store.mask_classes(CHESAPEAKE7))
    mask = np.random.default_rng(0).integers(0, 6, size=(64, 64)).astype("uint8")
    for name, x in (("a", 0.0), ("b", 64.0)):  # the template's clone, too
        writer.write(tmp_path / f"{name}.tif", mask, from_origin(x, 64.0, 1.0, 1.0))
        assert read_category_names(tmp_path / f"{name}.tif") == dict(enumerate(CHESAPEAKE7.names))
        with rasterio.open(tmp_path / f"{name}.tif") as src:
            assert src.colormap(1)[0] == (0, 197, 255, 255)
            np.testing.assert_array_equal(src.read(1), mask)
    plain = chip_store.ChipWriter(chip_store.mask_profile(CRS.from_epsg(26918)))
    plain.write(tmp_path / "c.tif", mask, from_origin(0.0, 64.0, 1.0, 1.0))
    assert not aux_path(tmp_path / "c.tif").exists()


def test_class_fraction_columns_are_named_by_class():
    assert class_fraction_columns(CHESAPEAKE7.names) == [
        "frac_water", "frac_tree_canopy_and_shrubs", "frac_low_vegetation", "frac_barren",
        "frac_impervious_surfaces", "frac_impervious_roads"]
    assert class_fraction_columns(["Low-Veg", "low veg", "", "Ünïcode"]) == [
        "frac_low_veg", "frac_low_veg_1", "frac_2", "frac_n_code"]


def test_index_columns_named_by_class_and_read_through_the_manifest(tmp_path, chip_store):
    manifest = json.loads((chip_store / "manifest.json").read_text())
    store = open_chip_store(chip_store)
    assert manifest["class_fraction_columns"] == store.fraction_columns == (
        class_fraction_columns(CHESAPEAKE7.names))
    index = pyogrio.read_dataframe(chip_store / "index.gpkg", read_geometry=False)
    assert not [c for c in index.columns if c.startswith("frac_") and c[5:].isdigit()]
    total = index[store.fraction_columns].sum(axis=1) + index["nodata_fraction"]
    np.testing.assert_allclose(total, 1.0)
    # A store from before: no key in the manifest, frac_<index> columns.
    old = tmp_path / "old"
    shutil.copytree(chip_store, old)
    del manifest["class_fraction_columns"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert open_chip_store(old).fraction_columns == [f"frac_{i}" for i in range(6)]


def test_store_rgb_from_manifest_or_band_names(tmp_path, chip_store):
    assert open_chip_store(chip_store).rgb == (0, 1, 2)  # red, green, blue, nir
    copy = tmp_path / "copy"
    shutil.copytree(chip_store, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    for value, expected in (([2, 1, 0], (2, 1, 0)), (None, (1, 2, 3))):
        manifest["rgb"] = value
        if value is None:
            del manifest["rgb"]
            for band, name in zip(manifest["bands"], ["nir", "red", "green", "blue"],
                                  strict=True):
                band["name"] = name
        (copy / "manifest.json").write_text(json.dumps(manifest))
        assert open_chip_store(copy).rgb == expected
    manifest["rgb"] = [0, 1, 4]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(GeospadeError, match="'rgb' must be three band indices below 4"):
        open_chip_store(copy)


def test_info_of_a_chip_store_shows_version_sources_and_columns(capsys, chip_store):
    code, out, _ = run_cli(["info", "--json", str(chip_store)], capsys)
    facts = json.loads(out)
    assert code == 0 and facts["rgb"] == [0, 1, 2]
    assert facts["geospade_version"] and facts["fraction_columns"][0] == "frac_water"
    assert Path(facts["sources"]["landcover"]).name == "landcover.tif"
    assert Path(facts["sources"]["imagery"]).name == "imagery.tif"


def test_tiled_chips_carry_class_names_and_provenance(chip_store):
    """`geospade tile`'s mask chips name their classes (the .aux.xml GDAL and QGIS read) and
    every chip carries the geospade tags naming its sources."""
    from geospade.provenance import SOURCE_IMAGERY, SOURCE_LANDCOVER

    masks = sorted((chip_store / "masks").glob("*.tif"))
    assert masks and all(aux_path(m).is_file() for m in masks)
    assert read_category_names(masks[0]) == dict(enumerate(CHESAPEAKE7.names))
    image = chip_store / "images" / masks[0].name
    with rasterio.open(image) as src:
        tags = src.tags()
    assert tags[SOURCE_LANDCOVER] == "landcover.tif" and tags[SOURCE_IMAGERY] == "imagery.tif"
