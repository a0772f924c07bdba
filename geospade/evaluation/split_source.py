"""The chips an evaluation reads: one split of a chip store, in batches, and its train split.

The evaluated split gives the masks every method paints and the real images they are compared
with (and TSTR's test chips); the train split gives the class-mean baseline its spectra, the
segmenter and TSTR their training chips (docs/design.md, "Evaluation report"). Both must be real
chips: a store of generated chips (``geospade generate``) is refused.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geospade import log
from geospade.formats.chip_store import ChipStore, check_real_chips
from geospade.normalization import BandStats
from geospade.schemes import ClassScheme


@dataclass(frozen=True)
class ChipBatch:
    """Consecutive chips of the evaluated split.

    Attributes:
        indices: their indices in the split.
        ids: their chip ids.
        masks: class indices ``(N, H, W)`` uint8 (255 = ignore).
        images: the real images ``(N, C, H, W)`` float32, normalised.
    """

    indices: list[int]
    ids: list[str]
    masks: np.ndarray
    images: np.ndarray


class SplitSource:
    """One split of a chip store to evaluate on, with the store's train split beside it.

    Args:
        chips: the chip store.
        split: the split whose masks are painted and whose images are the reference.
        dataset_cls: the dataset class to read chips with (default
            :class:`geospade.data.chips.ChipDataset`).

    Raises:
        GeospadeError: a missing or incomplete store, a synthetic store, or a split without
            chips.
    """

    def __init__(self, chips: Path, split: str, dataset_cls: Any = None):
        if dataset_cls is None:
            from geospade.data.chips import ChipDataset as dataset_cls
        self.chips = chips
        self.split = split
        self.data = dataset_cls(chips, split)
        check_real_chips(self.data.store, "evaluate")
        self.train = dataset_cls(chips, "train") if split != "train" else self.data

    @property
    def store(self) -> ChipStore:
        return self.data.store

    @property
    def scheme(self) -> ClassScheme:
        return self.store.scheme

    @property
    def bands(self) -> tuple[BandStats, ...]:
        return self.store.bands

    @property
    def num_classes(self) -> int:
        return self.scheme.num_classes

    def __len__(self) -> int:
        return len(self.data)

    def image(self, index: int) -> np.ndarray:
        """The normalised real image ``(C, H, W)`` of chip ``index`` of the split."""
        return self.data[index]["image"].numpy()

    def train_chip(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image ``(C, H, W)`` and uint8 mask ``(H, W)`` of chip ``index`` of the train split."""
        item = self.train[index]
        return item["image"].numpy(), item["mask"].numpy().astype(np.uint8)

    def train_arrays(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Images ``(N, C, H, W)`` float32 and uint8 masks ``(N, H, W)`` of train chips."""
        pairs = [self.train_chip(int(i)) for i in indices]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Images ``(N, C, H, W)`` float32 and uint8 masks ``(N, H, W)`` of the whole split."""
        batches = list(self.batches(64))
        return (np.concatenate([b.images for b in batches]),
                np.concatenate([b.masks for b in batches]))

    def batches(self, batch_size: int) -> Iterator[ChipBatch]:
        """The split's chips in order, ``batch_size`` at a time (the last batch may be short)."""
        n = len(self.data)
        for start in range(0, n, batch_size):
            indices = list(range(start, min(start + batch_size, n)))
            items = [self.data[i] for i in indices]
            masks = np.stack([it["mask"].numpy() for it in items]).astype(np.uint8)
            images = np.stack([it["image"].numpy() for it in items])
            yield ChipBatch(indices, [it["id"] for it in items], masks, images)

    def class_means(self, progress: bool = False) -> np.ndarray:
        """Mean normalised spectrum per class ``(K, C)`` over the train split (0 if never seen)."""
        k, c = self.num_classes, len(self.bands)
        total = np.zeros((k, c), dtype=np.float64)
        count = np.zeros(k, dtype=np.int64)
        for i in log.progress(range(len(self.train)), desc="class means", unit="chip",
                              quiet=not progress, logger="evaluate"):
            item = self.train[i]
            image, mask = item["image"].numpy(), item["mask"].numpy()
            valid = mask < k
            cls = mask[valid]
            for b in range(c):
                total[:, b] += np.bincount(cls, weights=image[b][valid], minlength=k)
            count += np.bincount(cls, minlength=k)
        return (total / np.maximum(count, 1)[:, None]).astype(np.float32)
