"""Evaluation metrics on constructed images: exact distances, texture of flat and real images."""

import numpy as np
import pytest
import torch

from geospade.errors import GeospadeError
from geospade.evaluation.metrics import (
    SpectralHistograms,
    TextureStats,
    find_inception_weights,
    frechet_distance,
    gradient_magnitude,
    inception_features,
    load_inception,
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


def test_frechet_distance_of_a_scaled_copy_is_its_mean_norm_plus_trace():
    # X against 2X: |mu|^2 + tr(C) + tr(4C) - 2 tr(sqrt(4 C^2)) = |mu|^2 + tr(C).
    feats = np.random.default_rng(4).normal(loc=0.5, size=(300, 6)) @ np.diag([1, 2, 3, 1, 1, 4])
    expected = feats.mean(axis=0) @ feats.mean(axis=0) + np.trace(np.cov(feats, rowvar=False))
    assert frechet_distance(feats, 2 * feats) == pytest.approx(expected, rel=1e-6)
    # Rounding never makes it negative.
    assert frechet_distance(feats, feats[::-1]) >= 0.0


class _Recorder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inputs = []

    def forward(self, x):
        self.inputs.append(x.clone())
        return x.mean(dim=(2, 3))


def test_inception_features_pass_images_in_minus_one_to_one_at_299_px():
    # torchvision's Inception weights expect [-1, 1] inputs (what transform_input=True makes of
    # ImageNet-normalised ones): a constant image must reach the net unchanged.
    images = np.stack([np.full((3, 16, 16), v, np.float32) for v in (-1.0, -0.25, 0.5)])
    images[1, 2] = 1.0
    net = _Recorder()
    feats = inception_features(net, images, batch=2)
    assert [tuple(x.shape) for x in net.inputs] == [(2, 3, 299, 299), (1, 3, 299, 299)]
    np.testing.assert_allclose(feats, [[-1, -1, -1], [-0.25, -0.25, 1.0], [0.5, 0.5, 0.5]],
                               atol=1e-6)
    assert feats.dtype == np.float64


def test_inception_weights_are_found_locally_and_bad_files_fail_in_one_line(tmp_path,
                                                                             monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("GEOSPADE_INCEPTION_WEIGHTS", raising=False)
    assert find_inception_weights() is None
    with pytest.raises(GeospadeError, match="Inception weights not found"):
        find_inception_weights(tmp_path / "missing.pth")
    # torchvision's own file name in the torch hub cache.
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "inception_v3_google-0cc3c7bd.pth").write_bytes(b"not a state dict")
    assert find_inception_weights() == hub / "inception_v3_google-0cc3c7bd.pth"
    env = tmp_path / "mine.pth"
    torch.save({"conv.weight": torch.zeros(1)}, env)
    monkeypatch.setenv("GEOSPADE_INCEPTION_WEIGHTS", str(env))
    assert find_inception_weights() == env
    for bad, message in ((hub / "inception_v3_google-0cc3c7bd.pth", "not a readable Inception"),
                         (env, "does not hold torchvision's Inception v3 weights")):
        with pytest.raises(GeospadeError, match=message) as info:
            load_inception(bad)
        assert "\n" not in str(info.value).strip()
    # A mistyped variable is an error, not a silent "FID skipped".
    monkeypatch.setenv("GEOSPADE_INCEPTION_WEIGHTS", str(tmp_path / "typo.pth"))
    with pytest.raises(GeospadeError, match="typo.pth .from .GEOSPADE_INCEPTION_WEIGHTS"):
        find_inception_weights()
