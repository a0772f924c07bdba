"""The synthetic landscape: coherent class regions, class-driven imagery, any CRS, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from geospade.errors import GeospadeError
from geospade.landscape import make_landscape
from geospade.schemes import CHESAPEAKE7, NLCD


def read_pair(paths):
    with rasterio.open(paths.landcover) as lc, rasterio.open(paths.imagery) as im:
        return lc.read(1), im.read(), lc.profile, im.profile


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("landscape")
    return make_landscape(root / "lc.tif", root / "img.tif", width=192, height=160, seed=4,
                          feature_scale=0.4)


def test_classes_form_coherent_regions_not_noise(pair):
    labels, _, _, _ = read_pair(pair)
    assert labels.shape == (160, 192)
    assert set(np.unique(labels)) <= set(CHESAPEAKE7.values)
    assert len(np.unique(labels)) >= 4
    same_right = (labels[:, 1:] == labels[:, :-1]).mean()
    same_down = (labels[1:, :] == labels[:-1, :]).mean()
    # Per-pixel noise over 4+ classes would give about 0.3; regions give nearly 1.
    assert same_right > 0.85 and same_down > 0.85


def test_imagery_is_aligned_and_depends_on_class(pair):
    labels, image, lc_profile, im_profile = read_pair(pair)
    assert im_profile["transform"] == lc_profile["transform"]
    assert im_profile["crs"] == lc_profile["crs"]
    assert image.shape == (4, 160, 192) and image.dtype == np.uint8
    nir = image[3].astype(float)
    means = {v: nir[labels == v].mean() for v in np.unique(labels)}
    within = np.mean([nir[labels == v].std() for v in means])
    between = np.std(list(means.values()))
    assert between > 2 * within
    assert means[2] > means[6] + 40  # tree canopy is bright in NIR, roads are dark
    # Texture and noise: not a flat class-mean painting.
    assert nir[labels == 2].std() > 2


def test_any_crs_and_uint16(tmp_path):
    geo = make_landscape(tmp_path / "lc.tif", tmp_path / "img.tif", width=64, height=48,
                         crs="EPSG:4326", dtype="uint16", bands=5, seed=1)
    labels, image, lc_profile, im_profile = read_pair(geo)
    assert lc_profile["crs"].to_epsg() == 4326
    assert lc_profile["transform"].a == pytest.approx(1e-5)
    assert -77 < lc_profile["transform"].c < -76 and 39 < lc_profile["transform"].f < 40
    assert image.dtype == np.uint16 and image.shape == (5, 48, 64)
    assert image.max() <= 10000 and image.max() > 255
    merc = make_landscape(tmp_path / "lc2.tif", tmp_path / "img2.tif", width=32, height=32,
                          crs="EPSG:3857", resolution=2.0, origin=(-8.5e6, 4.77e6))
    _, _, profile, _ = read_pair(merc)
    assert profile["crs"].to_epsg() == 3857 and profile["transform"].a == 2.0


def test_other_schemes_and_nodata_triangle(tmp_path):
    paths = make_landscape(tmp_path / "lc.tif", tmp_path / "img.tif", width=96, height=96,
                           scheme="nlcd", nodata_fraction=0.5, seed=2, feature_scale=0.3)
    labels, _, profile, _ = read_pair(paths)
    assert profile["nodata"] == 0
    assert set(np.unique(labels)) - {0} <= set(NLCD.values)
    assert labels[0, 0] == 0 and labels[0, 47] == 0 and labels[-1, 0] != 0
    assert 0.15 < (labels == 0).mean() < 0.35


def test_same_seed_same_bytes_other_seed_other_landscape(tmp_path):
    a = make_landscape(tmp_path / "a.tif", tmp_path / "ai.tif", width=64, height=64, seed=7)
    b = make_landscape(tmp_path / "b.tif", tmp_path / "bi.tif", width=64, height=64, seed=7)
    c = make_landscape(tmp_path / "c.tif", tmp_path / "ci.tif", width=64, height=64, seed=8)
    assert a.landcover.read_bytes() == b.landcover.read_bytes()
    assert a.imagery.read_bytes() == b.imagery.read_bytes()
    assert read_pair(a)[1].tobytes() != read_pair(c)[1].tobytes()


def test_bad_arguments_are_errors(tmp_path):
    with pytest.raises(GeospadeError, match="uint8 or uint16"):
        make_landscape(tmp_path / "a.tif", tmp_path / "b.tif", dtype="float32")
    with pytest.raises(GeospadeError, match="positive"):
        make_landscape(tmp_path / "a.tif", tmp_path / "b.tif", width=0)
