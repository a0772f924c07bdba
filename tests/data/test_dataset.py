"""ChipDataset: values, normalisation, split filtering, mask-safe augmentation, bad stores."""

import json

import numpy as np
import pytest
import rasterio
import torch
from test_train_chipstore import make_chip_store

from geospade.data.chips import ChipDataset, dihedral
from geospade.errors import GeospadeError


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_chip_store(tmp_path_factory.mktemp("chips") / "store", n_train=5, n_val=2, size=16)


def test_sample_is_normalised_chip_with_mask_indices(store):
    ds = ChipDataset(store, split="train")
    sample = ds[0]
    with rasterio.open(store / "images" / "r000.tif") as src:
        raw = src.read().astype(np.float32)
    with rasterio.open(store / "masks" / "r000.tif") as src:
        raw_mask = src.read(1)
    assert sample["id"] == "r000"
    assert sample["image"].dtype == torch.float32 and sample["image"].shape == (4, 16, 16)
    np.testing.assert_allclose(sample["image"].numpy(), raw / 255.0 * 2 - 1, atol=1e-6)
    assert sample["mask"].dtype == torch.int64 and sample["mask"].shape == (16, 16)
    np.testing.assert_array_equal(sample["mask"].numpy(), raw_mask)
    assert (sample["mask"] == 255).sum() == 9  # the ignore corner of every third chip survives


def test_split_filter_selects_rows_of_that_split(store):
    assert ChipDataset(store, "train").ids == ["r000", "r001", "r002", "r003", "r004"]
    assert ChipDataset(store, "val").ids == ["r005", "r006"]
    assert len(ChipDataset(store, "all")) == 7


def test_augmentation_moves_mask_and_image_together_without_new_values(store):
    plain = ChipDataset(store, "train")
    aug = ChipDataset(store, "train", augment=True, seed=3)
    codes = set()
    for epoch in range(4):
        aug.set_epoch(epoch)
        for i in range(len(aug)):
            code = aug.augmentation_code(i)
            codes.add(code)
            a, p = aug[i], plain[i]
            torch.testing.assert_close(a["mask"], dihedral(p["mask"], code))
            torch.testing.assert_close(a["image"], dihedral(p["image"], code))
            assert set(a["mask"].unique().tolist()) == set(p["mask"].unique().tolist())
    assert len(codes) > 3  # several symmetries are drawn
    # The same (seed, epoch, index) always gives the same draw, whatever the order of requests.
    aug.set_epoch(2)
    first = [aug.augmentation_code(i) for i in range(len(aug))]
    assert [aug.augmentation_code(i) for i in reversed(range(len(aug)))] == first[::-1]


def test_dihedral_codes_are_the_eight_distinct_symmetries():
    x = torch.arange(9).reshape(3, 3)
    outs = {tuple(dihedral(x, c).flatten().tolist()) for c in range(8)}
    assert len(outs) == 8
    assert torch.equal(dihedral(x, 1), torch.rot90(x, 1, (0, 1)))
    assert torch.equal(dihedral(x, 4), x.flip(-1))


def test_uint16_bands_use_manifest_range(tmp_path):
    store = make_chip_store(tmp_path / "u16", n_train=2, n_val=1, size=8, dtype="uint16")
    ds = ChipDataset(store)
    with rasterio.open(store / "images" / "r000.tif") as src:
        raw = src.read().astype(np.float32)
    np.testing.assert_allclose(ds[0]["image"].numpy(), raw / (255 * 40.0) * 2 - 1, atol=1e-5)


def test_missing_store_and_missing_manifest_are_errors(tmp_path):
    with pytest.raises(GeospadeError, match="not found"):
        ChipDataset(tmp_path / "nope")
    store = make_chip_store(tmp_path / "s", n_train=2, n_val=1, size=8)
    (store / "manifest.json").unlink()
    with pytest.raises(GeospadeError, match="no manifest.json"):
        ChipDataset(store)


def test_foreign_manifest_missing_chip_and_empty_split_are_errors(tmp_path):
    store = make_chip_store(tmp_path / "s", n_train=2, n_val=0, size=8)
    with pytest.raises(GeospadeError, match="no 'val' chips"):
        ChipDataset(store, "val")
    with pytest.raises(GeospadeError, match="unknown split"):
        ChipDataset(store, "holdout")
    (store / "images" / "r001.tif").unlink()
    with pytest.raises(GeospadeError, match="1 chip file"):
        ChipDataset(store)
    (store / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(GeospadeError, match="not a geospade chip store"):
        ChipDataset(store)
    (store / "manifest.json").write_text("{not json")
    with pytest.raises(GeospadeError, match="not readable JSON"):
        ChipDataset(store)


def test_reads_the_store_geospade_tile_writes(chip_store):
    """The real chip store (the shared fixture made by `geospade tile`) reads as documented."""
    train, val = ChipDataset(chip_store, "train", augment=True), ChipDataset(chip_store, "val")
    assert (len(train), len(val)) == (12, 4)
    sample = val[0]
    assert sample["image"].shape == (4, 64, 64) and sample["mask"].shape == (64, 64)
    assert -1.0 <= float(sample["image"].min()) and float(sample["image"].max()) <= 1.0
    labels = set(sample["mask"].unique().tolist())
    assert labels <= set(range(6)) | {255}
    with rasterio.open(chip_store / val.rows[0]["mask"]) as src:
        np.testing.assert_array_equal(sample["mask"].numpy(), src.read(1))
