"""Downstream utility (TSTR): geospade.evaluation.utility on made-up chips whose answer is known.

The images encode the class in their bands (band k is +1 where the class is k, -1 elsewhere)
plus noise, so a U-Net trained on them segments the test chips well, one trained on noise
cannot, and one trained on the very same images is the very same network.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from geospade.errors import GeospadeError
from geospade.evaluation.segmenter import (
    SegmenterSettings,
    UNet,
    array_chips,
    predict,
    train_segmenter,
    uniform_batches,
)
from geospade.evaluation.utility import (
    CONDITIONS,
    UtilitySettings,
    downstream_utility,
    format_utility,
    mixed_batches,
)

K = 3  # classes, one band each
SIZE = 16
TINY = UtilitySettings(steps=40, batch_size=4, base_channels=4, depth=1, lr=1e-2, seeds=(0, 1))


def make_chips(n: int, seed: int, classes: int = K) -> tuple[np.ndarray, np.ndarray]:
    """``n`` chips: masks of 4x4-pixel blocks of random classes, images that encode them."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, classes, (n, SIZE // 4, SIZE // 4))
    masks = blocks.repeat(4, axis=1).repeat(4, axis=2).astype(np.uint8)
    images = np.where(masks[:, None] == np.arange(K)[None, :, None, None], 1.0, -1.0)
    images = images + rng.normal(0, 0.4, images.shape)
    masks[:, :2, :2] = 255  # an ignored corner in every chip
    return images.astype(np.float32), masks


def class_means(masks: np.ndarray) -> np.ndarray:
    """The noise-free class encoding: what a class-mean painter returns for these chips."""
    return np.where(masks[:, None] == np.arange(K)[None, :, None, None], 1.0, -1.0).astype(
        np.float32) * (masks[:, None] != 255)


@pytest.fixture(scope="module")
def chips():
    train_images, train_masks = make_chips(12, seed=1)
    test_images, test_masks = make_chips(4, seed=2)
    return train_images, train_masks, test_images, test_masks


@pytest.fixture(scope="module")
def identical(chips):
    """TSTR where the "synthetic" images are the real train images."""
    x, m, tx, tm = chips
    return downstream_utility(x, m, x.copy(), class_means(m), tx, tm, K, TINY)


def test_real_training_segments_class_encoded_bands_well(identical):
    real = identical.conditions["real"]
    assert len(real.miou.values) == 2
    assert real.miou.mean > 0.8
    assert identical.conditions["class_mean"].miou.mean > 0.6


def test_synthetic_equal_to_real_gives_utility_ratio_exactly_one(identical):
    assert identical.conditions["synthetic"].iou == identical.conditions["real"].iou
    assert identical.utility_ratio.values == (1.0, 1.0)
    assert identical.utility_ratio.mean == 1.0 and identical.utility_ratio.sd == 0.0
    # The mixed condition adds copies of the real chips to the real batches: about as good.
    assert abs(identical.augmentation_gain.mean) < 0.1


def test_noise_as_synthetic_gives_low_utility_ratio(chips, identical):
    x, m, tx, tm = chips
    noise = np.random.default_rng(3).normal(0, 1, x.shape).astype(np.float32)
    result = downstream_utility(x, m, noise, class_means(m), tx, tm, K, TINY)
    assert result.conditions["real"].iou == identical.conditions["real"].iou
    assert result.utility_ratio.mean < 0.6
    assert result.conditions["synthetic"].miou.mean < 0.5


def test_same_inputs_and_settings_give_identical_numbers(chips, identical):
    x, m, tx, tm = chips
    again = downstream_utility(x, m, x.copy(), class_means(m), tx, tm, K, TINY)
    assert again.to_dict() == identical.to_dict()


def test_summary_statistics_are_per_seed_then_mean_and_sample_sd(identical):
    real = identical.conditions["real"].miou.values
    mixed = identical.conditions["real_synthetic"].miou.values
    gains = [b - a for a, b in zip(real, mixed, strict=True)]
    assert identical.augmentation_gain.values == pytest.approx(gains)
    assert identical.augmentation_gain.sd == pytest.approx(np.std(gains, ddof=1))
    ratio = [c / r for c, r in zip(identical.conditions["class_mean"].miou.values, real,
                                   strict=True)]
    assert identical.class_mean_ratio.mean == pytest.approx(np.mean(ratio))


def test_classes_absent_from_test_masks_are_left_out_of_miou(chips):
    x, m, _, _ = chips
    tx, tm = make_chips(3, seed=4, classes=2)  # class 2 never in the test masks
    settings = UtilitySettings(steps=20, batch_size=4, base_channels=4, depth=1, seeds=(0,))
    result = downstream_utility(x, m, x, class_means(m), tx, tm, K, settings)
    iou = result.conditions["real"].iou[0]
    assert math.isnan(iou[2]) and all(math.isfinite(v) for v in iou[:2])
    assert result.conditions["real"].miou.values[0] == pytest.approx((iou[0] + iou[1]) / 2)
    data = result.to_dict()
    assert data["conditions"]["real"]["iou"]["mean"][2] is None
    assert data["conditions"]["real"]["miou"]["sd"] is None  # one seed: no spread
    json.dumps(data, allow_nan=False)  # strict JSON


def test_to_dict_and_table(identical):
    data = identical.to_dict()
    assert list(data["conditions"]) == list(CONDITIONS)
    assert data["settings"]["seeds"] == [0, 1]
    assert data["train_chips"] == 12 and data["test_chips"] == 4
    assert data["utility_ratio"] == {"mean": 1.0, "sd": 0.0, "per_seed": [1.0, 1.0]}
    assert len(data["conditions"]["real"]["iou"]["per_seed"]) == 2
    assert len(data["conditions"]["real"]["iou"]["mean"]) == K
    json.dumps(data, allow_nan=False)
    lines = format_utility(identical).splitlines()
    # The utility ratio leads, then the gain and the class-mean floor, then each source's mIoU.
    assert "utility ratio" in lines[1] and lines[1].endswith("1.000 ± 0.000")
    assert "augmentation gain" in lines[2] and "1:1" in lines[2]
    assert lines[2].endswith(f"{identical.augmentation_gain.mean:+.3f} ± "
                             f"{identical.augmentation_gain.sd:.3f}")
    assert "class-mean ratio" in lines[3]
    assert "4 real chips" in lines[4] and "12 chips" in lines[4]
    assert [line.split()[0] for line in lines[5:9]] == [
        "real", "synthetic", "class-mean", "real+synthetic"]
    real = identical.conditions["real"].miou
    assert lines[5].endswith(f"{real.mean:.3f} ± {real.sd:.3f}")


@pytest.mark.parametrize("ratio, batch, steps, synthetic", [
    (1.0, 8, 5, 40),  # 8 real + 8 synthetic in every batch
    (1 / 4, 8, 4, 8),  # 2 synthetic added to every batch
    (0.1, 8, 11, 9),  # 9 of 88 + 9 chips: 1 in most batches, 0 in a few
])
def test_mixed_batches_add_synthetic_chips_to_the_real_batches(ratio, batch, steps, synthetic):
    import torch

    draw = mixed_batches(10, 10, batch, ratio, seed=3)
    uniform = uniform_batches(10, batch)
    gen, same = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    batches = [draw(step, gen) for step in range(steps)]
    # Each batch starts with exactly the real chips of the real condition's batch...
    assert [b[:batch] for b in batches] == [uniform(step, same) for step in range(steps)]
    # ...and adds the ratio's synthetic chips (indices 10..19) after them.
    assert all(10 <= i < 20 for b in batches for i in b[batch:])
    assert sum(len(b) - batch for b in batches) == synthetic


def test_precision_auto_resolves_per_device_and_is_reported(chips, identical):
    from geospade.models.precision import cpu_supports_bf16, resolve_precision

    expected = "bf16" if cpu_supports_bf16() else "none"
    assert resolve_precision("auto", "cpu").value == expected
    assert identical.settings.precision == expected
    assert identical.to_dict()["settings"]["precision"] == expected
    assert resolve_precision("none", "cpu").value == "none"
    with pytest.raises(GeospadeError, match="TSTR precision"):
        UtilitySettings(precision="fp8")
    # float32 U-Nets learn the class-encoded bands as well.
    x, m, tx, tm = chips
    fp32 = UtilitySettings(**{**TINY.__dict__, "precision": "none"})
    result = downstream_utility(x, m, x.copy(), class_means(m), tx, tm, K, fp32)
    assert result.settings.precision == "none"
    assert result.conditions["real"].miou.mean > 0.8
    assert result.utility_ratio.values == (1.0, 1.0)


def test_too_few_test_chips_or_labels_or_no_train_chips_are_one_line_errors(chips):
    x, m, tx, tm = chips
    with pytest.raises(GeospadeError, match=r"^an evaluation split with too few chips for TSTR"):
        downstream_utility(x, m, x, x, tx[:1], tm[:1], K, TINY)
    with pytest.raises(GeospadeError, match="too few chips for TSTR: its masks have no labelled"):
        downstream_utility(x, m, x, x, tx, np.full_like(tm, 255), K, TINY)
    with pytest.raises(GeospadeError, match="train split has no chips for TSTR"):
        downstream_utility(x[:0], m[:0], x[:0], x[:0], tx, tm, K, TINY)
    with pytest.raises(GeospadeError, match="synthetic images have shape"):
        downstream_utility(x, m, x[:5], x, tx, tm, K, TINY)
    with pytest.raises(GeospadeError, match="train masks hold class 7, outside 0..2"):
        downstream_utility(x, np.where(m == 1, 7, m), x, x, tx, tm, K, TINY)
    with pytest.raises(GeospadeError, match="seeds"):
        UtilitySettings(seeds=())


def test_train_segmenter_from_arrays_is_fixed_by_its_seed(chips):
    x, m, tx, _ = chips
    settings = SegmenterSettings(steps=5, batch_size=4, base_channels=4, depth=1, seed=7)
    nets = [train_segmenter(array_chips(x, m), len(x), K, K, settings) for _ in range(2)]
    assert all(isinstance(n, UNet) and not n.training for n in nets)
    a, b = (n.state_dict() for n in nets)
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    # Predicting in batches of one gives the same classes as all at once.
    assert np.array_equal(predict(nets[0], tx, batch_size=1), predict(nets[0], tx))


class DictCache:
    """A ScoreCache in memory that keeps only the conditions it is told to."""

    def __init__(self, keep=("real",)):
        self.keep, self.scores, self.puts = keep, {}, []

    def get(self, condition, seed):
        return self.scores.get((condition, seed))

    def put(self, condition, seed, iou):
        self.puts.append((condition, seed))
        if condition in self.keep:
            self.scores[(condition, seed)] = iou


def test_cached_scores_replace_their_trainings(chips, identical, monkeypatch):
    from geospade.evaluation import utility

    x, m, tx, tm = chips
    cache = DictCache()
    first = downstream_utility(x, m, x.copy(), class_means(m), tx, tm, K, TINY, cache=cache)
    assert first.to_dict()["conditions"] == identical.to_dict()["conditions"]
    assert len(cache.puts) == 8 and first.cached == ()
    trained = []
    real_train = utility.train_segmenter
    monkeypatch.setattr(utility, "train_segmenter",
                        lambda *a, **k: trained.append(a[1]) or real_train(*a, **k))
    cache.scores[("real", 1)] = (0.5, 0.5, math.nan)  # a stand-in: it must be used as is
    again = downstream_utility(x, m, x.copy(), class_means(m), tx, tm, K, TINY, cache=cache)
    assert len(trained) == 6  # 3 conditions x 2 seeds; "real" came from the cache
    cached_iou = again.conditions["real"].iou[1]
    assert cached_iou[:2] == (0.5, 0.5) and math.isnan(cached_iou[2])
    assert again.conditions["real"].miou.values[1] == 0.5
    assert again.cached == (("real", 0), ("real", 1))
    assert again.to_dict()["cached"] == {"real": [0, 1]}


def test_chip_store_cache_keeps_store_conditions_and_ignores_damaged_files(chip_store,
                                                                          tmp_path):
    import shutil

    from geospade.evaluation.utility import ChipStoreScoreCache

    store = tmp_path / "chips"
    shutil.copytree(chip_store, store)
    cache = ChipStoreScoreCache(store, "val", TINY)
    cache.put("real", 0, (0.25, math.nan, 1.0))
    cache.put("synthetic", 0, (0.5, 0.5, 0.5))  # depends on the model: never kept
    assert cache.written == [cache.paths("real", 0)[0]]
    got = cache.get("real", 0)
    assert got[0] == 0.25 and math.isnan(got[1]) and got[2] == 1.0
    assert cache.get("synthetic", 0) is None and cache.get("real", 1) is None
    # Another split or other settings are other files.
    assert ChipStoreScoreCache(store, "test", TINY).get("real", 0) is None
    other = UtilitySettings(steps=41, batch_size=4, base_channels=4, depth=1, seeds=(0,))
    assert ChipStoreScoreCache(store, "val", other).get("real", 0) is None
    # Another precision is another file.
    fp32 = UtilitySettings(**{**TINY.__dict__, "precision": "none"})
    bf16 = UtilitySettings(**{**TINY.__dict__, "precision": "bf16"})
    assert ChipStoreScoreCache(store, "val", fp32).paths("real", 0) != ChipStoreScoreCache(
        store, "val", bf16).paths("real", 0)
    # A different augmentation ratio or other seeds do not change what "real" scores.
    same = UtilitySettings(**{**TINY.__dict__, "augmentation_ratio": 3.0, "seeds": (0, 5)})
    assert ChipStoreScoreCache(store, "val", same).get("real", 0) == pytest.approx(got,
                                                                                   nan_ok=True)
    cache.written[0].write_text("{not json")
    assert cache.get("real", 0) is None


def test_train_subset_is_all_chips_or_a_fixed_sorted_sample():
    from geospade.evaluation.utility import train_subset

    assert train_subset(5, 10).tolist() == [0, 1, 2, 3, 4]
    sub = train_subset(100, 10)
    assert len(set(sub.tolist())) == 10 and sub.tolist() == sorted(sub.tolist())
    assert sub.tolist() == train_subset(100, 10).tolist() and sub.max() < 100
