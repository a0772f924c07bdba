"""Evaluation metrics on constructed images: exact distances, texture of flat and real images."""

import numpy as np
import pytest

from geospade.evaluation.metrics import (
    SpectralHistograms,
    TextureStats,
    frechet_distance,
    gradient_magnitude,
    wasserstein_1d,
)
from geospade.evaluation.segmenter import ConfusionMatrix


def _uint8_normalised(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float32) / 255.0 * 2.0 - 1.0


def test_histogram_distance_is_exact_for_uint8_values():
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 3, size=(40, 40)).astype(np.uint8)
    mask[:5, :5] = 255
    a = rng.integers(0, 256, size=(2, 40, 40))
    b = np.clip(a + rng.integers(-30, 40, size=a.shape), 0, 255)
    ha, hb = SpectralHistograms(3, 2, bins=256), SpectralHistograms(3, 2, bins=256)
    ha.add(_uint8_normalised(a), mask)
    hb.add(_uint8_normalised(b), mask)
    dist = ha.distance(hb)
    for k in range(3):
        for c in range(2):
            exact = wasserstein_1d(_uint8_normalised(a[c][mask == k]),
                                   _uint8_normalised(b[c][mask == k]))
            assert dist[k, c] == pytest.approx(exact, abs=1e-6)  # float32 inputs
    assert ha.pixels().tolist() == [int((mask == k).sum()) for k in range(3)]


def test_identical_images_have_zero_distance_and_texture_ratio_one():
    rng = np.random.default_rng(1)
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[:, 16:] = 1
    image = rng.uniform(-1, 1, size=(4, 32, 32)).astype(np.float32)
    h1, h2 = SpectralHistograms(2, 4), SpectralHistograms(2, 4)
    t1, t2 = TextureStats(2), TextureStats(2)
    for h, t in ((h1, t1), (h2, t2)):
        h.add(image, mask)
        t.add(image, mask)
    assert np.all(h1.distance(h2) == 0.0)
    np.testing.assert_allclose(t1.ratio(t2), [1.0, 1.0])


def test_distance_of_a_shift_is_the_shift_and_absent_classes_are_nan():
    mask = np.zeros((8, 8), dtype=np.uint8)
    a = np.full((1, 8, 8), -0.5, dtype=np.float32)
    ha, hb = SpectralHistograms(2, 1, bins=1025), SpectralHistograms(2, 1, bins=1025)
    ha.add(a, mask)
    hb.add(a + 0.25, mask)
    d = ha.distance(hb)
    assert d[0, 0] == pytest.approx(0.25, abs=1e-9)
    assert np.isnan(d[1, 0])


def test_flat_class_painting_has_zero_texture_even_across_class_edges():
    mask = np.zeros((16, 16), dtype=np.uint8)
    mask[4:12, 4:12] = 1
    flat = np.where(mask[None] == 1, 0.8, -0.8).astype(np.float32).repeat(3, axis=0)
    mag, cls = gradient_magnitude(flat, mask)
    assert mag.max() == 0.0
    assert set(np.unique(cls).tolist()) == {0, 1}
    real = flat + np.random.default_rng(2).normal(0, 0.1, flat.shape).astype(np.float32)
    tf, tr = TextureStats(2), TextureStats(2)
    tf.add(flat, mask)
    tr.add(real, mask)
    np.testing.assert_allclose(tf.ratio(tr), [0.0, 0.0])
    assert np.all(tr.mean() > 0.05)


def test_confusion_matrix_iou_and_miou():
    truth = np.array([[0, 0, 1, 1], [255, 2, 2, 2]], dtype=np.uint8)
    pred = np.array([[0, 1, 1, 1], [0, 2, 2, 0]], dtype=np.uint8)
    cm = ConfusionMatrix(4)
    cm.add(truth, pred)
    iou = cm.iou()
    # class 0: tp 1, truth 2, pred 2 -> 1/3; class 1: tp 2, truth 2, pred 3 -> 2/3;
    # class 2: tp 2, truth 3, pred 2 -> 2/3; class 3: absent -> NaN
    np.testing.assert_allclose(iou[:3], [1 / 3, 2 / 3, 2 / 3])
    assert np.isnan(iou[3])
    assert cm.miou() == pytest.approx(5 / 9)


def test_frechet_distance_is_zero_for_same_features_and_grows_with_a_shift():
    feats = np.random.default_rng(3).normal(size=(200, 8))
    assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(feats, feats + 2.0) == pytest.approx(8 * 4.0, rel=1e-6)
