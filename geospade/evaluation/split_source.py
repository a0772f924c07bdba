"""The chips an evaluation reads: one split of a chip store, in batches, and its train split.

The evaluated split gives the masks every method paints and the real images they are compared
with; the train split gives the class-mean baseline its spectra and the segmenter its training
chips (docs/design.md, "Evaluation report").
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geospade.formats.chip_store import ChipStore
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
        GeospadeError: a missing or incomplete store, or a split without chips.
    """

    def __init__(self, chips: Path, split: str, dataset_cls: Any = None):
        if dataset_cls is None:
            from geospade.data.chips import ChipDataset as dataset_cls
        self.chips = chips
        self.split = split
        self.data = dataset_cls(chips, split)
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
        from tqdm.auto import tqdm

        k, c = self.num_classes, len(self.bands)
        total = np.zeros((k, c), dtype=np.float64)
        count = np.zeros(k, dtype=np.int64)
        for i in tqdm(range(len(self.train)), desc="class means", disable=not progress,
                      leave=False):
            item = self.train[i]
            image, mask = item["image"].numpy(), item["mask"].numpy()
            valid = mask < k
            cls = mask[valid]
            for b in range(c):
                total[:, b] += np.bincount(cls, weights=image[b][valid], minlength=k)
            count += np.bincount(cls, minlength=k)
        return (total / np.maximum(count, 1)[:, None]).astype(np.float32)
