"""Downstream utility: Train on Synthetic, Test on Real (TSTR).

Is generated imagery useful as *training data*? The same small U-Net
(:class:`geospade.evaluation.segmenter.UNet`) is trained, with the same seed and the same number
of steps, on four sources over the same train masks, and each is tested on the real test chips:

- ``real``: the real train images;
- ``synthetic``: the generator's images of the train masks;
- ``class_mean``: each pixel painted with its class's mean spectrum (the floor: a generator that
  only learned one colour per class);
- ``real_synthetic``: the real condition's batches, each with ``augmentation_ratio`` synthetic
  chips per real one added (augmentation adds data to the real set; it takes none away).

The utility ratio ``mIoU(synthetic) / mIoU(real)`` (1.0: synthetic chips train as well as real
ones) and the class-mean ratio are computed per seed, then summarised over seeds; so is the
augmentation gain ``mIoU(real_synthetic) - mIoU(real)``. The protocol follows classification
accuracy scores for generative models (Ravuri & Vinyals 2019, https://arxiv.org/abs/1905.10887)
applied to segmentation.

Every training of a seed starts from the same initial weights and draws the same batches (the
mixed condition the same real chips, augmented the same way, plus its synthetic ones), so the
conditions differ only in the pixels they learn from.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from geospade import log
from geospade.atomic import atomic_path
from geospade.errors import GeospadeError
from geospade.evaluation.segmenter import (
    BatchDraw,
    ConfusionMatrix,
    SegmenterSettings,
    UNet,
    array_chips,
    cache_locations,
    predict,
    train_segmenter,
)
from geospade.models.precision import parse_precision, resolve_precision
from geospade.schemes import IGNORE_INDEX

CONDITIONS = ("real", "synthetic", "class_mean", "real_synthetic")
"""The training sources, in the order they are trained and reported."""

CONDITION_LABELS = {
    "real": "real", "synthetic": "synthetic", "class_mean": "class-mean",
    "real_synthetic": "real+synthetic",
}

MIN_TEST_CHIPS = 2
"""Test chips TSTR needs at least (fewer cannot say anything about a segmenter)."""


class TooFewChipsError(GeospadeError):
    """A split has too few chips (or labelled pixels) for TSTR."""


def check_chip_counts(train_chips: int, test_chips: int) -> None:
    """Raise :class:`TooFewChipsError` unless TSTR can train on ``train_chips`` and test on
    ``test_chips`` (callers check before any work; :func:`downstream_utility` checks again).
    """
    if train_chips < 1:
        raise TooFewChipsError("the train split has no chips for TSTR")
    if test_chips < MIN_TEST_CHIPS:
        raise TooFewChipsError(f"an evaluation split with too few chips for TSTR ({test_chips};"
                               f" at least {MIN_TEST_CHIPS})")


def train_subset(num_chips: int, max_chips: int) -> np.ndarray:
    """The train chips TSTR uses: all of them, or a fixed random subset of ``max_chips``
    (the same for every checkpoint evaluated on the store, in index order)."""
    if num_chips <= max_chips:
        return np.arange(num_chips)
    return np.sort(np.random.default_rng(0).choice(num_chips, max_chips, replace=False))


@dataclass(frozen=True)
class UtilitySettings:
    """How the TSTR U-Nets are trained.

    Measured on the demo's chip store (173 train and 30 val chips of 64 px, 4 bands, 8 classes),
    one thread of a 2-core AMD EPYC with AVX512-BF16, bf16: 4 sources x 3 seeds (the mixed
    source's batches twice as big) took 55 s at 80 steps, 106 s at 150, 138 s at 200 and 203 s
    at 300 (the other core training a generator); float32 took 1.7x as long. The longer the
    U-Nets train, the more they learn beyond each class's colour: the class-mean ratio fell
    from 0.78 at 80 steps to 0.73 at 200 and 0.69 at 300, while the real-trained mIoU rose from
    0.19 to 0.22 and 0.23. 200 steps is the default: below it, flat class colours score almost
    as well as real imagery, and the test says little.

    Args:
        steps: optimiser steps per training.
        batch_size: chips per step.
        base_channels: channels of the U-Net's first level.
        depth: the U-Net's down-sampling levels.
        lr: Adam learning rate (cosine-annealed to 0).
        seeds: one training per source and seed; the spread over seeds is reported.
        augmentation_ratio: synthetic chips per real chip in the ``real_synthetic`` batches.
        variants: generated images per train mask (a generator with noise or a style code
            paints ``geospade generate``'s variants 0..variants-1); the ``synthetic`` U-Net
            trains on all of them, and the ``real_synthetic`` one draws its synthetic chips
            from all of them. ``variants=4, augmentation_ratio=4`` measures mixing a
            ``generate --variants 4`` store into the real one.
        max_train_chips: at most this many train chips (a fixed subset of a larger train
            split; see :func:`train_subset`): each is painted by the generator once, and
            ``steps x batch_size`` draws see only so many anyway.
        precision: the U-Nets' autocast precision: ``auto`` (bf16 where the device computes
            it natively, else float32: a U-Net step of these settings took 45 ms in bf16
            with channels-last feature maps, 100 ms in float32, one thread of a 2-core AMD
            EPYC with AVX512-BF16), ``none``, ``bf16`` or ``fp16`` (CUDA). The precision used
            is part of the result and of the cache key.
    """

    steps: int = 200
    batch_size: int = 8
    base_channels: int = 16
    depth: int = 2
    lr: float = 3e-3
    seeds: tuple[int, ...] = (0, 1, 2)
    augmentation_ratio: float = 1.0
    variants: int = 1
    max_train_chips: int = 1024
    precision: str = "auto"

    def __post_init__(self):
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        for name in ("steps", "batch_size", "base_channels", "depth", "variants",
                     "max_train_chips"):
            if getattr(self, name) < 1:
                raise GeospadeError(f"TSTR {name} must be at least 1, not {getattr(self, name)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise GeospadeError(f"TSTR seeds must be distinct and at least one, not {self.seeds}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise GeospadeError(f"TSTR lr must be a positive number, not {self.lr}")
        parse_precision(self.precision, what="TSTR precision")
        if not (self.augmentation_ratio > 0 and math.isfinite(self.augmentation_ratio)):
            raise GeospadeError("TSTR augmentation_ratio must be a positive number, not "
                                f"{self.augmentation_ratio}")

    def resolved(self, device: str | torch.device) -> UtilitySettings:
        """These settings with ``precision`` resolved for ``device`` (see
        :func:`~geospade.models.precision.resolve_precision`)."""
        return replace(self, precision=resolve_precision(self.precision, device,
                                                         "TSTR precision").value)

    def segmenter(self, seed: int) -> SegmenterSettings:
        """The segmenter settings of one training."""
        return SegmenterSettings(steps=self.steps, batch_size=self.batch_size,
                                 base_channels=self.base_channels, depth=self.depth, lr=self.lr,
                                 seed=seed)


DEFAULT_UTILITY = UtilitySettings()


@dataclass(frozen=True)
class Spread:
    """Values over seeds, with their mean and sample standard deviation.

    NaN values (a class absent from the test masks, a ratio over a zero mIoU) are left out of
    both; the mean is NaN when no value is finite, the sd when fewer than two are.
    """

    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        finite = [v for v in self.values if math.isfinite(v)]
        return float(np.mean(finite)) if finite else math.nan

    @property
    def sd(self) -> float:
        finite = [v for v in self.values if math.isfinite(v)]
        return float(np.std(finite, ddof=1)) if len(finite) > 1 else math.nan

    def to_dict(self) -> dict:
        """``{"mean", "sd", "per_seed"}``, NaN written as None (strict JSON)."""
        return {"mean": _json(self.mean), "sd": _json(self.sd),
                "per_seed": [_json(v) for v in self.values]}


@dataclass(frozen=True)
class ConditionScores:
    """One training source's scores on the real test chips.

    Args:
        iou: per seed, the IoU of each class (NaN: the class is absent from the test masks).
    """

    iou: tuple[tuple[float, ...], ...]

    @property
    def miou(self) -> Spread:
        """mIoU per seed: the mean IoU of the classes present in the test masks."""
        return Spread(tuple(_nanmean(row) for row in self.iou))

    def class_iou(self, k: int) -> Spread:
        """Class ``k``'s IoU over seeds."""
        return Spread(tuple(row[k] for row in self.iou))

    def to_dict(self) -> dict:
        """``{"miou": Spread, "iou": {"mean": [K], "sd": [K], "per_seed": [[K] per seed]}}``."""
        classes = [self.class_iou(k) for k in range(len(self.iou[0]))]
        return {
            "miou": self.miou.to_dict(),
            "iou": {"mean": [_json(c.mean) for c in classes], "sd": [_json(c.sd) for c in classes],
                    "per_seed": [[_json(v) for v in row] for row in self.iou]},
        }


@dataclass(frozen=True)
class UtilityResult:
    """What :func:`downstream_utility` measured.

    Args:
        settings: how the U-Nets were trained.
        num_classes: classes of the masks.
        train_chips: chips of each training source.
        test_chips: real chips tested on.
        conditions: the scores of each of :data:`CONDITIONS`.
        cached: the ``(condition, seed)`` trainings whose scores came from a cache.
    """

    settings: UtilitySettings
    num_classes: int
    train_chips: int
    test_chips: int
    conditions: Mapping[str, ConditionScores]
    cached: tuple[tuple[str, int], ...] = field(default=())

    def _ratio(self, name: str) -> Spread:
        pairs = zip(self.conditions[name].miou.values, self.conditions["real"].miou.values,
                    strict=True)
        return Spread(tuple(v / r if r > 0 else math.nan for v, r in pairs))

    @property
    def utility_ratio(self) -> Spread:
        """mIoU(synthetic) / mIoU(real), per seed."""
        return self._ratio("synthetic")

    @property
    def class_mean_ratio(self) -> Spread:
        """mIoU(class_mean) / mIoU(real), per seed."""
        return self._ratio("class_mean")

    @property
    def augmentation_gain(self) -> Spread:
        """mIoU(real_synthetic) - mIoU(real), per seed."""
        pairs = zip(self.conditions["real_synthetic"].miou.values,
                    self.conditions["real"].miou.values, strict=True)
        return Spread(tuple(m - r for m, r in pairs))

    def to_dict(self) -> dict:
        """The result as strict JSON values (NaN -> None), for ``report.json``."""
        return {
            "protocol": "train on synthetic, test on real (U-Net, mIoU)",
            "settings": {**asdict(self.settings), "seeds": list(self.settings.seeds)},
            "num_classes": self.num_classes,
            "train_chips": self.train_chips,
            "test_chips": self.test_chips,
            "conditions": {name: self.conditions[name].to_dict() for name in CONDITIONS},
            "utility_ratio": self.utility_ratio.to_dict(),
            "class_mean_ratio": self.class_mean_ratio.to_dict(),
            "augmentation_gain": self.augmentation_gain.to_dict(),
            "cached": {name: [seed for n, seed in self.cached if n == name]
                       for name in CONDITIONS if any(n == name for n, _ in self.cached)},
        }


def downstream_utility(
    train_images: np.ndarray,
    train_masks: np.ndarray,
    synthetic_images: np.ndarray,
    class_mean_images: np.ndarray,
    test_images: np.ndarray,
    test_masks: np.ndarray,
    num_classes: int,
    settings: UtilitySettings = DEFAULT_UTILITY,
    device: str | torch.device = "cpu",
    progress: bool = False,
    cache: ScoreCache | None = None,
) -> UtilityResult:
    """Train on synthetic, test on real: the same U-Net trained on each of :data:`CONDITIONS`.

    For each seed of ``settings``, one U-Net per source is trained (same initial weights, same
    steps) and tested on the real test chips. The mixed source trains on the real source's
    batches, the same chips augmented the same way, with synthetic chips added to each
    (:func:`mixed_batches`): the gain is what adding synthetic data to a real training set
    does, at the same number of steps and real chips. (Replacing half of each batch with
    synthetic chips instead measured -0.004 ± 0.004 on the demo: it tests whether synthetic
    chips are as good as real ones, which the utility ratio already says.)

    The demo's timings are in ``UtilitySettings``' docstring.

    Args:
        train_images: real train images ``(N, C, H, W)``, normalised (float).
        train_masks: their class indices ``(N, H, W)`` (255 = ignore).
        synthetic_images: generated images of ``train_masks``, ``(V x N, C, H, W)``,
            normalised: ``V >= 1`` variants, variant ``v`` of mask ``i`` at ``v * N + i``.
        class_mean_images: class-mean paintings of ``train_masks``, ``(N, C, H, W)``.
        test_images: real test images ``(M, C, H, W)``, normalised.
        test_masks: their class indices ``(M, H, W)`` (255 = ignore).
        num_classes: classes; mask values are ``0..num_classes-1`` or 255.
        settings: training settings and seeds.
        device: torch device.
        progress: show a progress bar over the trainings.
        cache: where the test IoUs of a ``(condition, seed)`` may already be, and are kept
            (:class:`ChipStoreScoreCache` keeps those that depend only on the chip store).

    Returns:
        The :class:`UtilityResult`. Classes absent from the test masks have NaN IoUs and are
        left out of the mIoU.

    Raises:
        GeospadeError: arrays of mismatched shapes, mask values outside the classes, non-finite
            pixels, no train chips or labelled train pixels, or fewer than
            :data:`MIN_TEST_CHIPS` test chips or no labelled test pixels.
    """
    settings = settings.resolved(device)
    sources = {"real": train_images, "synthetic": synthetic_images,
               "class_mean": class_mean_images}
    sources = {name: _images(a, name) for name, a in sources.items()}
    test_images = _images(test_images, "test")
    train_masks, test_masks = _check_inputs(sources, train_masks, test_images, test_masks,
                                            num_classes, settings.variants)
    runs = [(seed, name) for seed in settings.seeds for name in CONDITIONS]
    ious: dict[str, list[tuple[float, ...]]] = {name: [] for name in CONDITIONS}
    cached = []
    for seed, name in log.progress(runs, desc="TSTR", unit="run", quiet=not progress,
                                   logger="evaluate"):
        iou = cache.get(name, seed) if cache is not None else None
        if iou is not None and len(iou) == num_classes:
            cached.append((name, seed))
        else:
            net = _train(name, sources, train_masks, num_classes, settings, seed, device)
            iou = _test_iou(net, test_images, test_masks, num_classes, device,
                            settings.precision)
            if cache is not None:
                cache.put(name, seed, iou)
        ious[name].append(iou)
    return UtilityResult(settings, num_classes, len(train_masks), len(test_masks),
                         {name: ConditionScores(tuple(ious[name])) for name in CONDITIONS},
                         tuple(cached))


def mixed_batches(num_real: int, num_synthetic: int, batch_size: int, ratio: float,
                  seed: int = 0) -> BatchDraw:
    """Batches of ``batch_size`` real chips ``0..num_real-1`` drawn as
    :func:`~geospade.evaluation.segmenter.uniform_batches` draws them, followed by ``ratio``
    synthetic chips per real one (``num_real..``), drawn by a generator of their own (seeded
    with ``seed``), so the real chips are those of a uniform draw from the same generator.

    The synthetic count of a step is the rounded running total's increment, so every batch adds
    ``batch_size * ratio`` synthetic chips, rounded, and the total over the steps is exact (1:1
    at batch size 8: 8 real and 8 synthetic in every batch).
    """
    share = batch_size * ratio
    own = torch.Generator().manual_seed(seed)

    def draw(step: int, gen: torch.Generator) -> list[int]:
        synthetic = math.floor((step + 1) * share + 0.5) - math.floor(step * share + 0.5)
        real = torch.randint(0, num_real, (batch_size,), generator=gen)
        fake = torch.randint(0, num_synthetic, (synthetic,), generator=own) + num_real
        return real.tolist() + fake.tolist()

    return draw


def format_utility(result: UtilityResult) -> str:
    """A table: the ratios and the gain, then each source's mIoU (mean ± sd over seeds)."""
    return "\n".join(utility_lines(result.to_dict()))


def utility_lines(entry: Mapping[str, Any], split: str = "") -> list[str]:
    """The lines of :func:`format_utility` from a :meth:`UtilityResult.to_dict` (the ``utility``
    of ``report.json``); ``split`` names the tested split."""
    s = entry["settings"]
    tested = f"{entry['test_chips']} real {split + ' ' if split else ''}chips"
    lines = [
        f"usefulness as training data (train on synthetic, test on real; mean ± sd over "
        f"{len(s['seeds'])} seeds x {s['steps']} U-Net steps)",
        f"  utility ratio      (synthetic / real mIoU)           {_pm(entry['utility_ratio'])}",
        f"  augmentation gain  (real+synthetic {s['augmentation_ratio']:g}:1 - real mIoU)  "
        f"{_pm(entry['augmentation_gain'], sign=True)}",
        f"  class-mean ratio   (class-mean / real mIoU; a floor) "
        f"{_pm(entry['class_mean_ratio'])}",
        f"  mIoU on {tested}, trained on {entry['train_chips']} chips of:",
    ]
    variants = s.get("variants", 1)  # reports before variants existed painted one
    if variants > 1:
        lines[-1] = (f"  mIoU on {tested}, trained on {entry['train_chips']} chips "
                     f"({variants} generated variants of each) of:")
    for name in CONDITIONS:
        lines.append(f"    {CONDITION_LABELS[name]:<16} "
                     f"{_pm(entry['conditions'][name]['miou'])}")
    return lines


# -- caching the scores that depend only on the chip store ---------------------------------------


STORE_CONDITIONS = ("real", "class_mean")
"""The conditions whose training data come from the chip store alone (not from the model)."""

SCORE_CACHE_FORMAT = "geospade-tstr-scores"
SCORE_CACHE_VERSION = "1"
"""Part of every cache key: bump it when a change to the training or the test changes what the
same settings score."""


class ScoreCache(Protocol):
    """Test IoUs of a ``(condition, seed)`` kept between evaluations."""

    def get(self, condition: str, seed: int) -> tuple[float, ...] | None:
        """The kept IoUs, or None (then the U-Net is trained)."""

    def put(self, condition: str, seed: int, iou: tuple[float, ...]) -> None:
        """Keep the IoUs of a training just done."""


class ChipStoreScoreCache:
    """Keeps the test IoUs of :data:`STORE_CONDITIONS` beside the segmenter cache of a chip store.

    A real-trained or class-mean-trained U-Net depends only on the store, the evaluated split and
    the training settings, so a second checkpoint evaluated on the same store trains only the
    conditions that use its images. The files are JSON, one per condition and seed, in
    ``CHIPS/.geospade-cache`` (or the user's cache folder when the store cannot be written; see
    :func:`geospade.evaluation.segmenter.cache_locations`), keyed by the store's manifest hash,
    the split, the seed's training settings and :data:`SCORE_CACHE_VERSION`.

    Args:
        chips: the chip store.
        split: the split the U-Nets are tested on.
        settings: the TSTR settings (their seeds and ``augmentation_ratio`` are not in the key;
            the precision they resolve to on ``device`` is).
        device: the device the U-Nets train on.
    """

    def __init__(self, chips: str | Path, split: str, settings: UtilitySettings,
                 device: str | torch.device = "cpu"):
        self.chips, self.split = Path(chips), split
        self.settings = settings.resolved(device)
        self.written: list[Path] = []

    def paths(self, condition: str, seed: int) -> tuple[Path, Path]:
        """The file of a condition and seed: in the store, and in the user's cache."""
        key = {**asdict(self.settings.segmenter(seed)),
               "max_train_chips": self.settings.max_train_chips,
               "precision": self.settings.precision}
        return cache_locations(self.chips, f"tstr-{condition}", key, self.split,
                               SCORE_CACHE_VERSION, suffix=".json", folder="tstr")

    def get(self, condition: str, seed: int) -> tuple[float, ...] | None:
        if condition not in STORE_CONDITIONS:
            return None
        for path in self.paths(condition, seed):
            iou = _read_scores(path, condition, seed)
            if iou is not None:
                return iou
        return None

    def put(self, condition: str, seed: int, iou: tuple[float, ...]) -> None:
        if condition not in STORE_CONDITIONS:
            return
        text = json.dumps({"format": SCORE_CACHE_FORMAT, "condition": condition, "seed": seed,
                           "split": self.split, "iou": [_json(v) for v in iou]})
        for path in self.paths(condition, seed):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(path) as tmp:
                    tmp.write_text(text + "\n")
            except OSError:  # read-only, not permitted, full: try the next place
                continue
            self.written.append(path)
            return


def _read_scores(path: Path, condition: str, seed: int) -> tuple[float, ...] | None:
    """The IoUs of a cache file, or None when it is missing or unusable (then retrained)."""
    try:
        data = json.loads(path.read_text())
        if (data.get("format") != SCORE_CACHE_FORMAT or data.get("condition") != condition
                or data.get("seed") != seed):
            return None
        return tuple(math.nan if v is None else float(v) for v in data["iou"])
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def _train(name: str, sources: dict[str, np.ndarray], masks: np.ndarray, num_classes: int,
           settings: UtilitySettings, seed: int, device: str | torch.device) -> UNet:
    """Train the U-Net of one source and seed."""
    n, bands = sources["real"].shape[:2]
    seg = settings.segmenter(seed)
    if name == "synthetic":  # every variant of every mask
        synthetic = sources[name]
        return train_segmenter(_variant_chips(synthetic, masks), len(synthetic), bands,
                               num_classes, seg, device, amp=settings.precision)
    if name != "real_synthetic":
        load = array_chips(sources[name], masks)
        return train_segmenter(load, n, bands, num_classes, seg, device, amp=settings.precision)
    real, synthetic = array_chips(sources["real"], masks), _variant_chips(sources["synthetic"],
                                                                          masks)

    def load(i: int) -> tuple[np.ndarray, np.ndarray]:
        return real(i) if i < n else synthetic(i - n)

    m = len(sources["synthetic"])
    draw = mixed_batches(n, m, settings.batch_size, settings.augmentation_ratio, seed)
    return train_segmenter(load, n + m, bands, num_classes, seg, device, draw=draw,
                           amp=settings.precision)


def _variant_chips(images: np.ndarray, masks: np.ndarray
                   ) -> Callable[[int], tuple[np.ndarray, np.ndarray]]:
    """A ``load_chip`` over ``V x N`` variant images: chip ``i`` is variant ``i // N`` of mask
    ``i % N``."""
    n = len(masks)

    def load(i: int) -> tuple[np.ndarray, np.ndarray]:
        return images[i], masks[i % n]

    return load


def _test_iou(net: UNet, images: np.ndarray, masks: np.ndarray, num_classes: int,
              device: str | torch.device, amp: str) -> tuple[float, ...]:
    confusion = ConfusionMatrix(num_classes)
    confusion.add(masks, predict(net, images, device, amp=amp))
    return tuple(float(v) for v in confusion.iou())


def _images(array: np.ndarray, role: str) -> np.ndarray:
    """``array`` as contiguous float32 ``(N, C, H, W)`` with finite pixels."""
    array = np.ascontiguousarray(array, dtype=np.float32)
    if array.ndim != 4:
        raise GeospadeError(f"TSTR {role} images must be (N, C, H, W), not shape {array.shape}")
    if not np.isfinite(array).all():
        raise GeospadeError(f"TSTR {role} images hold non-finite pixels (NaN or infinite)")
    return array


def _check_inputs(sources: dict[str, np.ndarray], train_masks: np.ndarray,
                  test_images: np.ndarray, test_masks: np.ndarray, num_classes: int,
                  variants: int) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes and mask values; return the masks as uint8."""
    shape = sources["real"].shape
    for name, images in sources.items():
        count = shape[0] * (variants if name == "synthetic" else 1)
        if images.shape != (count, *shape[1:]):
            what = f" ({variants} variants of each)" if count != shape[0] else ""
            raise GeospadeError(f"TSTR {name} images have shape {images.shape}, not "
                                f"{(count, *shape[1:])} like the real train images{what}")
    for role, images, masks in (("train", sources["real"], train_masks),
                                ("test", test_images, test_masks)):
        if np.shape(masks) != images.shape[:1] + images.shape[2:]:
            raise GeospadeError(f"TSTR {role} masks have shape {np.shape(masks)}, their images "
                                f"{images.shape}")
    if test_images.shape[1] != shape[1]:
        raise GeospadeError(f"TSTR test images have {test_images.shape[1]} bands, the train "
                            f"images {shape[1]}")
    check_chip_counts(shape[0], len(test_masks))
    checked = []
    for role, masks in (("train", train_masks), ("test", test_masks)):
        masks = np.asarray(masks)
        bad = (masks != IGNORE_INDEX) & ((masks < 0) | (masks >= num_classes))
        if bad.any():
            raise GeospadeError(f"TSTR {role} masks hold class {int(masks[bad][0])}, outside "
                                f"0..{num_classes - 1} ({IGNORE_INDEX} = ignore)")
        if not (masks != IGNORE_INDEX).any():
            raise TooFewChipsError("the train split has no labelled pixels for TSTR" if role ==
                                   "train" else "an evaluation split with too few chips for "
                                   "TSTR: its masks have no labelled pixels")
        checked.append(masks.astype(np.uint8))
    return checked[0], checked[1]


def _nanmean(values: tuple[float, ...]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _json(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _pm(spread: Mapping[str, float | None], sign: bool = False) -> str:
    """``mean ± sd`` of a :meth:`Spread.to_dict` with 3 decimals; ``n/a`` for no value, no ±
    for a single seed."""
    mean, sd = spread["mean"], spread["sd"]
    if mean is None:
        return "n/a"
    text = f"{mean:+.3f}" if sign else f"{mean:.3f}"
    return text + (f" ± {sd:.3f}" if sd is not None else "")
