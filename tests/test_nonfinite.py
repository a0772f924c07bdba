"""Non-finite imagery (NaN, +inf, -inf) is no data everywhere (issue 16, item 6).

`geospade tile` masks such pixels (255) and counts them toward ``--max-nodata``; the band stats
and the manifest only ever hold finite numbers (the manifest is strict JSON). Chip stores written
before this fix can still hold non-finite pixels under a class index: the dataset masks them and
maps them to a finite value, so neither training nor evaluation ever sees a NaN, and the
evaluation metrics skip non-finite pixels of any image they are given (a custom painter's too).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import rasterio
from cli_runner import run_cli
from test_train_chipstore import make_chip_store

from geospade.data.chips import ChipDataset, open_chip_store
from geospade.errors import GeospadeError
from geospade.evaluation.metrics import SpectralHistograms, TextureStats
from geospade.evaluation.report import evaluate_painter
from geospade.formats import chip_store
from geospade.normalization import BandStats, normalize
from geospade.schemes import IGNORE_INDEX

SIZE = 64  # 256 x 256 landscape: 16 chips


def strict_json(text: str):
    """Parse JSON as a strict parser would: NaN, Infinity and -Infinity are errors."""

    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def float_imagery(landscape_pair, path, nodata=None, fill=None):
    """The landscape's imagery as float32 reflectance with non-finite patches.

    Four chips are touched: (0, 0) NaN in all bands, (64, 128) +inf in band 1 only,
    (192, 64) -inf in band 4 only, (128, 192) one pixel NaN in band 2 only.
    """
    with rasterio.open(landscape_pair[1]) as src:
        profile, data = src.profile, src.read().astype(np.float32) / 255.0 * 0.8 + 0.05
    data[:, 4:24, 4:24] = np.nan if fill is None else fill
    data[0, 70:90, 130:150] = np.inf
    data[3, 200:220, 70:90] = -np.inf
    data[1, 130, 200] = np.nan
    profile.update(dtype="float32", nodata=nodata, photometric="minisblack")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return data


def tile_cli(landscape_pair, imagery, out, capsys, *extra):
    code, _, err = run_cli(["tile", str(landscape_pair[0]), str(imagery), "-o", str(out),
                            "--size", str(SIZE), "-q", *extra], capsys)
    assert code == 0, err
    return strict_json((out / "manifest.json").read_text())


def finite_pixel_stats(data: np.ndarray, b: int) -> tuple[float, float, float, float]:
    """mean, std, 2nd and 98th percentile of band ``b`` over pixels finite in every band."""
    ok = np.isfinite(data).all(axis=0)
    values = data[b][ok].astype(np.float64)
    low, high = np.percentile(values, [2, 98])
    return values.mean(), values.std(), low, high


def test_max_nodata_0_drops_every_chip_touching_a_nonfinite_pixel(tmp_path, landscape_pair,
                                                                  capsys):
    image = tmp_path / "float.tif"
    float_imagery(landscape_pair, image)
    manifest = tile_cli(landscape_pair, image, tmp_path / "chips", capsys, "--max-nodata", "0")
    assert manifest["dropped"]["nodata"] == 4
    assert manifest["counts"]["train"] == 12
    ids = {p.stem for p in (tmp_path / "chips" / "images").glob("*.tif")}
    assert not ids & {"000000_000000", "000064_000128", "000192_000064", "000128_000192"}
    for path in (tmp_path / "chips" / "images").glob("*.tif"):
        with rasterio.open(path) as chip:
            assert np.isfinite(chip.read()).all(), path.name


def test_looser_max_nodata_masks_exactly_the_nonfinite_pixels(tmp_path, landscape_pair, capsys):
    image = tmp_path / "float.tif"
    data = float_imagery(landscape_pair, image)
    out = tmp_path / "chips"
    manifest = tile_cli(landscape_pair, image, out, capsys, "--max-nodata", "0.2")
    assert manifest["counts"]["train"] == 16 and manifest["dropped"]["nodata"] == 0
    bad = ~np.isfinite(data).all(axis=0)
    for row in range(0, 256, SIZE):
        for col in range(0, 256, SIZE):
            with rasterio.open(out / "masks" / f"{chip_store.chip_id(row, col)}.tif") as m:
                mask = m.read(1)
            np.testing.assert_array_equal(mask == IGNORE_INDEX,
                                          bad[row : row + SIZE, col : col + SIZE])
    # Band stats: finite, and those of the finite pixels (from a sample, hence the tolerance).
    for b, band in enumerate(manifest["bands"]):
        assert band["nodata"] is None
        for key in ("mean", "std", "low", "high"):
            assert isinstance(band[key], float) and math.isfinite(band[key]), (b, key)
        mean, std, low, high = finite_pixel_stats(data, b)
        spread = high - low
        assert band["mean"] == pytest.approx(mean, abs=0.1 * spread)
        assert band["std"] == pytest.approx(std, abs=0.1 * spread)
        assert band["low"] == pytest.approx(low, abs=0.15 * spread)
        assert band["high"] == pytest.approx(high, abs=0.15 * spread)
    # What training reads: finite images, and the non-finite pixels ignored.
    ds = ChipDataset(out, "all")
    for i in range(len(ds)):
        item = ds[i]
        assert bool(np.isfinite(item["image"].numpy()).all())


def test_imagery_whose_nodata_is_nan(tmp_path, landscape_pair, capsys):
    image = tmp_path / "nan_nodata.tif"
    data = float_imagery(landscape_pair, image, nodata=float("nan"))
    out = tmp_path / "chips"
    manifest = tile_cli(landscape_pair, image, out, capsys, "--max-nodata", "0.2")
    # Every band NaN (the file's nodata) and NaN in one band only are both no data.
    with rasterio.open(out / "masks" / "000128_000192.tif") as m:
        mask = m.read(1)
    assert mask[2, 8] == IGNORE_INDEX and (mask == IGNORE_INDEX).sum() == 1
    with rasterio.open(out / "masks" / "000000_000000.tif") as m:
        assert ((m.read(1) == IGNORE_INDEX) == ~np.isfinite(data[:, :SIZE, :SIZE]).all(0)).all()
    # The manifest says the nodata is NaN without being invalid JSON; it reads back as NaN.
    bands = open_chip_store(out).bands
    assert all(math.isnan(b.nodata) for b in bands)
    assert all(math.isfinite(b.mean) and math.isfinite(b.low) for b in bands)
    assert manifest["sources"]["imagery"]["nodata"] == "nan"
    with rasterio.open(out / "images" / "000000_000000.tif") as chip:
        assert math.isnan(chip.nodata)


def test_imagery_with_a_finite_nodata_gets_it_at_nonfinite_pixels(tmp_path, landscape_pair,
                                                                  capsys):
    image = tmp_path / "nodata.tif"
    float_imagery(landscape_pair, image, nodata=-9999.0, fill=-9999.0)
    out = tmp_path / "chips"
    manifest = tile_cli(landscape_pair, image, out, capsys, "--max-nodata", "0.2")
    assert manifest["bands"][0]["nodata"] == -9999.0
    with rasterio.open(out / "images" / "000064_000128.tif") as chip:
        pixels = chip.read()
    assert np.isfinite(pixels).all()
    assert (pixels[:, 6:26, 2:22] == -9999.0).all()  # the whole pixel, not only band 1


def test_write_manifest_refuses_nan(tmp_path):
    path = tmp_path / chip_store.MANIFEST
    with pytest.raises(ValueError):
        chip_store.write_manifest(path, {"bands": [{"mean": float("nan")}]})
    assert list(tmp_path.iterdir()) == []


def test_band_stats_dicts_are_strict_json_and_read_back():
    band = BandStats("red", "float32", 0.0, 1.0, 0.5, 0.1, nodata=float("nan"))
    data = strict_json(json.dumps(band.to_dict(), allow_nan=False))
    back = BandStats.from_dict(data)
    assert math.isnan(back.nodata) and back.low == 0.0 and back.high == 1.0
    assert BandStats.from_dict(dict(data, nodata=-9999.0)).nodata == -9999.0
    # Stats of an older manifest: non-finite informational stats are dropped, a non-finite
    # range is an error (normalising with it would turn every pixel into NaN).
    assert BandStats.from_dict(dict(data, mean=float("nan"), std=float("inf"))).mean is None
    for key in ("low", "high"):
        with pytest.raises(GeospadeError, match="tile"):
            BandStats.from_dict(dict(data, **{key: float("nan")}))


def test_normalize_never_returns_nan():
    bands = [BandStats("a", "float32", 0.0, 10.0)]
    image = np.array([[[np.nan, np.inf, -np.inf, 5.0]]], dtype=np.float32)
    np.testing.assert_array_equal(normalize(image, bands), [[[-1.0, 1.0, -1.0, 0.0]]])


@pytest.fixture()
def old_store(tmp_path):
    """A float32 store as an older geospade wrote it: non-finite pixels under class indices."""
    root = make_chip_store(tmp_path / "old", n_train=4, n_val=3, size=32, dtype="float32",
                           ignore_corner=False)
    bad = {}
    for cid in ("r000", "r004", "r005"):  # one train chip, two val chips
        path = root / "images" / f"{cid}.tif"
        with rasterio.open(path, "r+") as dst:
            image = dst.read()
            image[:, 5:8, 5:8] = np.nan
            image[0, 10, 10] = np.inf
            image[2, 12, 3] = -np.inf
            dst.write(image)
        bad[cid] = ~np.isfinite(image).all(axis=0)
    return root, bad


def test_dataset_masks_nonfinite_pixels_of_an_older_store(old_store):
    root, bad = old_store
    ds = ChipDataset(root, "all")
    for i, cid in enumerate(ds.ids):
        item = ds[i]
        image, mask = item["image"].numpy(), item["mask"].numpy()
        assert np.isfinite(image).all() and image.min() >= -1.0 and image.max() <= 1.0
        expected = bad.get(cid, np.zeros(mask.shape, dtype=bool))
        np.testing.assert_array_equal(mask == IGNORE_INDEX, expected)


def test_evaluation_ignores_nonfinite_real_pixels(old_store):
    root, bad = old_store
    val = ChipDataset(root, "val")

    def real(masks, indices):
        return np.stack([val[i]["image"].numpy() for i in indices])

    report = evaluate_painter(real, root, "val", segmenter=None, device="cpu", quiet=True)
    pixels = 0
    for cid in val.ids:
        with rasterio.open(root / "masks" / f"{cid}.tif") as m:
            mask = m.read(1)
        pixels += int(((mask < 6) & ~bad.get(cid, False)).sum())
    assert sum(report["class_pixels"]) == pixels
    model = report["methods"]["model"]
    assert model["wasserstein"]["mean"] == 0.0
    assert model["texture"]["mean_ratio"] == pytest.approx(1.0)
    assert report["methods"]["class_mean"]["wasserstein"]["mean"] is not None


def test_metrics_skip_nonfinite_pixels_of_any_image():
    mask = np.zeros((4, 4), dtype=np.uint8)
    image = np.zeros((2, 4, 4), dtype=np.float32)
    image[0, 0, 0] = np.nan
    image[1, 3, 3] = np.inf
    hist = SpectralHistograms(num_classes=1, bands=2, bins=16)
    hist.add(image, mask)
    assert hist.pixels().tolist() == [14]
    texture = TextureStats(num_classes=1)
    texture.add(image, mask)
    assert texture.count.tolist() == [8] and texture.mean().tolist() == [0.0]
