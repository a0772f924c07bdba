"""Segmentation consistency (the SPADE paper's protocol, Park et al. 2019, section 4).

A compact U-Net is trained on the *real* train-split chips of a chip store to predict the class
map from the imagery. Its mIoU on generated images of the val masks, over its mIoU on the real
val images, says how much of the class structure a generator reproduces (1.0 is ideal). The same
U-Net, trained from in-memory chips (:func:`array_chips`), measures whether generated images are
useful training data (:mod:`geospade.evaluation.utility`).

The trained segmenter is cached in the chip store, ``CHIPS/.geospade-cache/segmenter-<key>.pt``,
where ``key`` hashes the manifest and the training settings: evaluating a second checkpoint on
the same chips reuses it, and re-tiling or other settings train a new one. When the chip store
cannot be written (a shared, read-only copy), the segmenter is cached in the user's cache folder
instead (``$XDG_CACHE_HOME/geospade/segmenters``, by default ``~/.cache/geospade/segmenters``),
under a key that also hashes the chip store's absolute path, so two stores never share a file.
TSTR keeps the scores of its store-only U-Nets in the same two places (:func:`cache_locations`,
:class:`geospade.evaluation.utility.ChipStoreScoreCache`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geospade import log
from geospade.atomic import atomic_path
from geospade.errors import GeospadeError
from geospade.formats.chip_store import manifest_sha256
from geospade.models.precision import Precision, autocast_context, parse_precision
from geospade.schemes import IGNORE_INDEX

SEGMENTER_FORMAT = "geospade-segmenter"
CACHE_DIR = ".geospade-cache"


@dataclass(frozen=True)
class SegmenterSettings:
    """How the segmenter is trained (part of its cache key).

    Args:
        steps: optimiser steps.
        batch_size: chips per step.
        base_channels: channels of the first U-Net level (doubled per level).
        depth: number of down-sampling levels.
        lr: Adam learning rate.
        seed: random seed (chip order, augmentation, initial weights).
    """

    steps: int = 400
    batch_size: int = 8
    base_channels: int = 16
    depth: int = 2
    lr: float = 2e-3
    seed: int = 0


DEFAULT_SEGMENTER = SegmenterSettings()


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """A compact U-Net (Ronneberger et al. 2015): ``depth`` levels of two 3x3 convs each.

    Args:
        in_channels: image bands.
        num_classes: output classes.
        base_channels: channels of the first level, doubled at each level down.
        depth: number of 2x down-samplings.
    """

    def __init__(self, in_channels: int, num_classes: int, base_channels: int = 16, depth: int = 2):
        super().__init__()
        chans = [base_channels * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        cin = in_channels
        for c in chans:
            self.down.append(_block(cin, c))
            cin = c
        self.up = nn.ModuleList(
            _block(chans[i + 1] + chans[i], chans[i]) for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(chans[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            if i > 0:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        skips.pop()
        for block in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)


def _cache_key(chips: Path, settings: Mapping[str, Any], *extra: str) -> str:
    # The store's identity (its manifest's hash): re-tiling writes a new manifest, so it trains a
    # new segmenter.
    h = hashlib.sha256(manifest_sha256(chips).encode())
    h.update(json.dumps(dict(settings), sort_keys=True).encode())
    for text in extra:
        h.update(text.encode())
    return h.hexdigest()[:16]


def cache_locations(chips: str | Path, name: str, settings: Mapping[str, Any], *extra: str,
                    suffix: str = ".pt", folder: str = "segmenters") -> tuple[Path, Path]:
    """Where something trained on a chip store is cached: in the store, and in the user's cache.

    Both names hash the store's manifest, ``settings`` and ``extra``; the user's also hashes the
    store's absolute path, so two stores never share a file there.

    Args:
        chips: the chip store.
        name: the file name's stem before the key (``segmenter``, ``tstr-real``, …).
        settings: the values the cached result depends on (JSON-serialisable).
        extra: further strings the result depends on.
        suffix: the file's suffix.
        folder: the subfolder of :func:`user_cache_dir`.

    Returns:
        ``(path in CHIPS/.geospade-cache, path in the user's cache)``, to be tried in that order.
    """
    chips = Path(chips)
    in_store = chips / CACHE_DIR / f"{name}-{_cache_key(chips, settings, *extra)}{suffix}"
    key = _cache_key(chips, settings, *extra, str(chips.resolve()))
    return in_store, user_cache_dir() / folder / f"{name}-{key}{suffix}"


def cache_path(chips: str | Path, settings: SegmenterSettings) -> Path:
    """Where the segmenter of this chip store and these settings is cached in the store."""
    return cache_locations(chips, "segmenter", asdict(settings))[0]


def user_cache_dir() -> Path:
    """geospade's folder in the user's cache: ``$XDG_CACHE_HOME/geospade`` or
    ``~/.cache/geospade``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "geospade"


def user_cache_path(chips: str | Path, settings: SegmenterSettings) -> Path:
    """Where the segmenter is cached when the chip store cannot be written: in
    :func:`user_cache_dir`, keyed by the store's manifest, absolute path and the settings."""
    return cache_locations(chips, "segmenter", asdict(settings))[1]


def load_cached_segmenter(chips: str | Path, settings: SegmenterSettings,
                          device: str | torch.device = "cpu") -> tuple[UNet | None, Path | None]:
    """The cached segmenter of this store and these settings and its file, or ``(None, None)``.

    The chip store's cache is looked in first, then the user's (see :func:`user_cache_path`).
    """
    for path in (cache_path(chips, settings), user_cache_path(chips, settings)):
        net = load_segmenter(path, device)
        if net is not None:
            return net, path
    return None, None


def cache_segmenter(chips: str | Path, net: UNet, settings: SegmenterSettings, bands: int,
                    num_classes: int) -> Path | None:
    """Cache a trained segmenter in the chip store, or in the user's cache folder when the store
    cannot be written; returns the file, or None when neither could be written."""
    for path in (cache_path(chips, settings), user_cache_path(chips, settings)):
        try:
            save_segmenter(path, net, settings, bands, num_classes)
        except OSError:  # read-only, not permitted, full: try the next place
            continue
        return path
    return None


def _augment(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator):
    k = int(torch.randint(0, 4, (1,), generator=gen))
    x, y = torch.rot90(x, k, (-2, -1)), torch.rot90(y, k, (-2, -1))
    if torch.rand(1, generator=gen) < 0.5:
        x, y = x.flip(-1), y.flip(-1)
    return x, y


BatchDraw = Callable[[int, torch.Generator], list[int]]
"""``(step, generator) -> indices of the chips of that step's batch``."""


def uniform_batches(num_chips: int, batch_size: int) -> BatchDraw:
    """Each batch: ``batch_size`` chips drawn uniformly, with replacement, from ``num_chips``."""

    def draw(step: int, gen: torch.Generator) -> list[int]:
        return torch.randint(0, num_chips, (batch_size,), generator=gen).tolist()

    return draw


def array_chips(images: np.ndarray,
                masks: np.ndarray) -> Callable[[int], tuple[np.ndarray, np.ndarray]]:
    """A ``load_chip`` for :func:`train_segmenter` over in-memory chips.

    Args:
        images: normalised images ``(N, C, H, W)`` float32.
        masks: class indices ``(N, H, W)`` (255 = ignore).
    """

    def load(i: int) -> tuple[np.ndarray, np.ndarray]:
        return images[i], masks[i]

    return load


def train_segmenter(
    load_chip: Callable[[int], tuple[np.ndarray, np.ndarray]],
    num_chips: int,
    bands: int,
    num_classes: int,
    settings: SegmenterSettings = DEFAULT_SEGMENTER,
    device: str | torch.device = "cpu",
    progress: bool = False,
    *,
    draw: BatchDraw | None = None,
    amp: Precision | str | None = None,
) -> UNet:
    """Train a :class:`UNet` on chips (from a chip store, or in memory with :func:`array_chips`).

    ``settings.seed`` fixes the initial weights, the batches and the augmentation: the same
    chips and settings give the same network on a CPU (run to run, cuDNN may pick
    non-deterministic algorithms). The first ``settings.batch_size`` chips of a step are
    augmented with the run's generator, the ones a ``draw`` adds beyond them with a second one:
    a draw that starts each batch like :func:`uniform_batches` and appends chips (the mixed TSTR
    condition, :func:`geospade.evaluation.utility.mixed_batches`) trains on exactly the same
    augmented chips plus the appended ones.

    Args:
        load_chip: ``i -> (normalised image (C, H, W) float32, mask (H, W) uint8)``.
        num_chips: number of chips ``load_chip`` accepts (0..num_chips-1).
        bands: image bands.
        num_classes: classes (mask values 0..K-1; 255 is ignored).
        settings: training settings.
        device: torch device.
        progress: show a progress bar.
        draw: which chips each step's batch holds (default :func:`uniform_batches`).
        amp: autocast precision (none, bf16, fp16; see
            :func:`geospade.models.precision.autocast_context`); with bf16 or fp16 the feature
            maps are channels-last.

    Returns:
        The trained network, in eval mode.
    """
    if num_chips == 0:
        raise GeospadeError("the train split has no chips to train the segmenter on")
    if draw is None:
        draw = uniform_batches(num_chips, settings.batch_size)
    torch.manual_seed(settings.seed)
    gen = torch.Generator().manual_seed(settings.seed)
    extra_gen = torch.Generator().manual_seed(settings.seed + EXTRA_SEED_OFFSET)
    net = UNet(bands, num_classes, settings.base_channels, settings.depth).to(device)
    layout = _layout(amp)
    opt = torch.optim.Adam(net.parameters(), lr=settings.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(settings.steps, 1))
    load = _bounded_cache(load_chip)
    net.train()
    for step in log.progress(range(settings.steps), desc="segmenter", quiet=not progress,
                             logger="evaluate"):
        xs, ys = [], []
        for n, i in enumerate(draw(step, gen)):
            x, y = _augment(*load(i), gen if n < settings.batch_size else extra_gen)
            xs.append(x)
            ys.append(y)
        x = torch.stack(xs).to(device).contiguous(memory_format=layout)
        with autocast_context(device, amp):
            logits = net(x)
        loss = F.cross_entropy(logits.float(), torch.stack(ys).to(device),
                               ignore_index=IGNORE_INDEX)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


EXTRA_SEED_OFFSET = 1_000_003
"""The seed of the generator that augments chips beyond a step's ``batch_size`` is the run's
seed plus this."""


def _layout(amp: Precision | str | None) -> torch.memory_format:
    """Channels-last under bf16/fp16 autocast (about 1.3x faster U-Net steps on a CPU with
    bf16 instructions, measured), contiguous in float32."""
    mixed = parse_precision(amp, (Precision.NONE, Precision.BF16, Precision.FP16))
    return torch.contiguous_format if mixed is Precision.NONE else torch.channels_last


def _bounded_cache(load_chip: Callable[[int], tuple[np.ndarray, np.ndarray]]
                   ) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
    """``load_chip`` as tensors, keeping the first 2048 chips in memory (bigger stores are
    re-read from disk)."""
    cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def load(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if i in cache:
            return cache[i]
        image, mask = load_chip(i)
        pair = (torch.from_numpy(image), torch.from_numpy(mask.astype(np.int64)))
        if len(cache) < 2048:
            cache[i] = pair
        return pair

    return load


def save_segmenter(path: Path, net: UNet, settings: SegmenterSettings, bands: int,
                   num_classes: int) -> None:
    """Atomically write a segmenter (plain tensors and values, loadable with weights_only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "format": SEGMENTER_FORMAT, "settings": asdict(settings), "bands": bands,
        "num_classes": num_classes, "state": {k: v.cpu() for k, v in net.state_dict().items()},
    }
    with atomic_path(path) as tmp:
        torch.save(data, tmp)


def load_segmenter(path: Path, device: str | torch.device = "cpu") -> UNet | None:
    """A cached segmenter, or None when the file is missing or unusable (it is then retrained)."""
    if not path.is_file():
        return None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        if data.get("format") != SEGMENTER_FORMAT:
            return None
        s = data["settings"]
        net = UNet(data["bands"], data["num_classes"], s["base_channels"], s["depth"])
        net.load_state_dict(data["state"])
    except Exception:  # noqa: BLE001 - a damaged cache file is simply rebuilt
        return None
    return net.to(device).eval()


class ConfusionMatrix:
    """Accumulates a ``K x K`` confusion matrix (rows: truth, columns: prediction)."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def add(self, truth: np.ndarray, pred: np.ndarray) -> None:
        keep = truth < self.num_classes
        k = self.num_classes
        flat = truth[keep].astype(np.int64) * k + pred[keep].astype(np.int64)
        self.matrix += np.bincount(flat, minlength=k * k).reshape(k, k)

    def iou(self) -> np.ndarray:
        """IoU per class; NaN for classes absent from the ground truth."""
        tp = np.diag(self.matrix).astype(np.float64)
        truth = self.matrix.sum(axis=1)
        union = truth + self.matrix.sum(axis=0) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = tp / union
        return np.where(truth > 0, iou, np.nan)

    def miou(self) -> float:
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


@torch.no_grad()
def predict(net: UNet, images: Sequence[np.ndarray] | np.ndarray,
            device: str | torch.device = "cpu", batch_size: int = 64,
            amp: Precision | str | None = None) -> np.ndarray:
    """Class predictions ``(N, H, W)`` uint8 for normalised images ``(N, C, H, W)``, computed
    ``batch_size`` images at a time (memory is bounded by the batch, not by ``N``), under
    ``amp`` autocast as in :func:`train_segmenter`."""
    out = []
    layout = _layout(amp)
    for start in range(0, len(images), batch_size):
        batch = np.stack(list(images[start:start + batch_size]))
        x = torch.from_numpy(np.ascontiguousarray(batch)).float().to(device)
        with autocast_context(device, amp):
            logits = net(x.contiguous(memory_format=layout))
        out.append(logits.argmax(dim=1).to(torch.uint8).cpu().numpy())
    return np.concatenate(out)
