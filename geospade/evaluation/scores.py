"""One pass over a split: every method's images scored against the real ones, batch by batch.

Each method (and the real images) has a :class:`MethodScores` accumulator: per-class/per-band
histograms (Wasserstein distance), texture statistics, a confusion matrix of the segmenter's
predictions and Inception features for FID. :func:`measure` fills them; :func:`method_entry`
turns one into its ``methods`` entry of ``report.json`` (docs/design.md, "Evaluation report").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from geospade import log
from geospade.evaluation import metrics
from geospade.evaluation.painters import Painter
from geospade.evaluation.segmenter import ConfusionMatrix, predict
from geospade.evaluation.split_source import ChipBatch, SplitSource

FIGURE_SAMPLES = 4


@dataclass(frozen=True)
class Judges:
    """The networks that score images beside the histograms.

    Attributes:
        device: where they run.
        segmenter: the U-Net of segmentation consistency (None: not measured).
        inception: Inception v3 for FID (None: not measured).
        rgb: the bands Inception sees (with ``inception``).
    """

    device: torch.device
    segmenter: torch.nn.Module | None = None
    inception: torch.nn.Module | None = None
    rgb: list[int] | None = None


class MethodScores:
    """The accumulators of one painter (or of the real images)."""

    def __init__(self, num_classes: int, bands: int, bins: int, seg: bool):
        self.hist = metrics.SpectralHistograms(num_classes, bands, bins)
        self.texture = metrics.TextureStats(num_classes)
        self.confusion = ConfusionMatrix(num_classes) if seg else None
        self.features: list[np.ndarray] = []

    def add(self, images: np.ndarray, masks: np.ndarray, judges: Judges) -> None:
        """Score a batch of normalised images ``(N, C, H, W)`` painted for ``masks``."""
        for image, mask in zip(images, masks, strict=True):
            self.hist.add(image, mask)
            self.texture.add(image, mask)
        if self.confusion is not None:
            self.confusion.add(masks, predict(judges.segmenter, images, judges.device))
        if judges.inception is not None:
            self.features.append(metrics.inception_features(
                judges.inception, images[:, judges.rgb], str(judges.device)))


@dataclass
class FigureSamples:
    """The first few chips, for the figure: mask, real image and the model's image."""

    mask: list[np.ndarray] = field(default_factory=list)
    real: list[np.ndarray] = field(default_factory=list)
    model: list[np.ndarray] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)

    def add(self, batch: ChipBatch, model: np.ndarray) -> None:
        for j, chip_id in enumerate(batch.ids):
            if len(self.mask) >= FIGURE_SAMPLES:
                return
            self.mask.append(batch.masks[j])
            self.real.append(batch.images[j])
            self.model.append(model[j])
            self.ids.append(chip_id)

    def as_dict(self) -> dict[str, list]:
        """The report's ``_samples`` (what :func:`~geospade.evaluation.figure.write_figure`
        reads)."""
        return {"mask": self.mask, "real": self.real, "model": self.model, "ids": self.ids}


@dataclass
class Measurements:
    """What one pass over the split gathered.

    Attributes:
        real: the real images' accumulators.
        methods: each painter's accumulators, by method name.
        samples: the figure's chips.
        bins: histogram bins per band.
    """

    real: MethodScores
    methods: dict[str, MethodScores]
    samples: FigureSamples
    bins: int


def measure(source: SplitSource, painters: Mapping[str, Painter], judges: Judges,
            batch_size: int, progress: bool = False) -> Measurements:
    """Paint every batch of the split with each painter and score it with the real images.

    ``painters`` must hold ``model`` (its images are the figure's samples).
    """
    bins = metrics.bins_for_dtype(source.bands[0].dtype)
    k, c, seg = source.num_classes, len(source.bands), judges.segmenter is not None
    real = MethodScores(k, c, bins, seg)
    methods = {name: MethodScores(k, c, bins, seg) for name in painters}
    samples = FigureSamples()
    batches = source.batches(batch_size)
    total = math.ceil(len(source) / batch_size)
    for batch in log.progress(batches, total=total, desc="evaluate", unit="batch",
                              quiet=not progress, logger="evaluate"):
        outputs = {name: paint(batch.masks, batch.indices) for name, paint in painters.items()}
        real.add(batch.images, batch.masks, judges)
        for name, images in outputs.items():
            methods[name].add(images, batch.masks, judges)
        samples.add(batch, outputs["model"])
    return Measurements(real, methods, samples, bins)


def _row_mean(values: np.ndarray) -> np.ndarray:
    """Mean over the last axis of the finite values; NaN for rows with none."""
    ok = np.isfinite(values)
    total = np.where(ok, values, 0.0).sum(axis=-1)
    count = ok.sum(axis=-1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def real_miou(real: MethodScores) -> float:
    """The segmenter's mIoU on the real images (NaN without a segmenter)."""
    return real.confusion.miou() if real.confusion is not None else float("nan")


def method_entry(scores: MethodScores, real: MethodScores, span: np.ndarray,
                 with_fid: bool) -> dict[str, Any]:
    """A method's entry of the report's ``methods``.

    Args:
        scores: the method's accumulators.
        real: the real images' accumulators.
        span: half the value range of each band in source units (normalised -> source units).
        with_fid: whether Inception features were gathered.

    Returns:
        ``wasserstein``, ``texture``, and ``segmentation`` / ``fid`` when measured (numpy values;
        NaN where a class has no pixels).
    """
    w = scores.hist.distance(real.hist)  # (K, C) normalised
    w_src = w * span[None, :]
    tex = scores.texture.ratio(real.texture)
    per_class = _row_mean(w)
    entry: dict[str, Any] = {
        "wasserstein": {
            "per_class": w, "per_class_source": w_src, "per_class_mean": per_class,
            "mean": metrics.nanmean(per_class),
            "mean_source": metrics.nanmean(_row_mean(w_src)),
        },
        "texture": {
            "per_class_gradient": scores.texture.mean(), "per_class_ratio": tex,
            "mean_ratio": metrics.nanmean(tex),
        },
    }
    if scores.confusion is not None:
        miou, reference = scores.confusion.miou(), real_miou(real)
        entry["segmentation"] = {
            "miou": miou, "per_class_iou": scores.confusion.iou(),
            "ratio": miou / reference if reference > 0 else float("nan"),
        }
    if with_fid:
        feats = np.concatenate(scores.features)
        entry["fid"] = (metrics.frechet_distance(np.concatenate(real.features), feats)
                        if len(feats) >= 2 else None)
    return entry
