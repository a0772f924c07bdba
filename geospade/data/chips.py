"""A torch ``Dataset`` over a chip store written by ``geospade tile`` (docs/design.md, "Chip
store"; read through :mod:`geospade.formats.chip_store`).

Each sample is one chip: its class-index mask (255 = ignore), its image normalised per band to
[-1, 1] with the manifest's stats, and its id. Non-finite image pixels are ignored in the mask and
finite in the image (:func:`~geospade.normalization.normalize`), whatever wrote the store.
Augmentation is one of the eight symmetries of the square (flips and 90° rotations), applied to
mask and image together; these only move pixels, so the mask is never interpolated.

The augmentation drawn for a chip depends only on ``(seed, epoch, index)``, never on worker
processes or the order samples are asked for, so a resumed training run sees the same samples as a
run that was never interrupted.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from torch.utils.data import Dataset

from geospade.errors import GeospadeError
from geospade.formats.chip_store import SPLITS, ChipStore, open_chip_store, read_index
from geospade.io_errors import reading
from geospade.normalization import BandStats, normalize
from geospade.schemes import IGNORE_INDEX, ClassScheme

# The index reader under the name it had before the chip store got one owner (issue 15).
read_chip_index = read_index


def dihedral(array: torch.Tensor, code: int) -> torch.Tensor:
    """Apply symmetry ``code`` (0..7) of the square to the last two axes of ``array``.

    ``code % 4`` quarter turns, then a left-right flip when ``code >= 4``. Pixels are only moved,
    never interpolated. Code 0 is the identity.
    """
    out = torch.rot90(array, code % 4, dims=(-2, -1)) if code % 4 else array
    return torch.flip(out, dims=(-1,)) if code >= 4 else out


class ChipDataset(Dataset):
    """Mask/image chips of one split of a chip store.

    Args:
        root: the chip store folder (``geospade tile``'s output).
        split: ``train``, ``val``, ``test`` or ``all``.
        augment: apply a random flip/90° rotation to each sample (mask and image together).
        seed: seed of the augmentation draws.

    Each item is ``{"mask": LongTensor (H, W) of class indices (255 = ignore), "image": float32
    (C, H, W) in [-1, 1], "id": str}``.

    Raises:
        GeospadeError: missing or incomplete store, unknown split, a split with no chips, or chip
            files missing from the store.
    """

    def __init__(
        self, root: str | Path, split: str = "train", augment: bool = False, seed: int = 0
    ):
        if split not in (*SPLITS, "all"):
            raise GeospadeError(f"unknown split {split!r} (choose from {', '.join(SPLITS)}, all)")
        self.store: ChipStore = open_chip_store(root)
        self.root = self.store.root
        self.split = split
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        rows = read_index(self.root)
        self.rows = [r for r in rows if split == "all" or r["split"] == split]
        if not self.rows:
            raise GeospadeError(f"chip store {self.root} has no {split!r} chips")
        absent = [
            r["id"]
            for r in self.rows
            if not (self.root / r["image"]).is_file() or not (self.root / r["mask"]).is_file()
        ]
        if absent:
            raise GeospadeError(
                f"chip store {self.root} is incomplete: {len(absent)} chip file(s) missing "
                f"(first: {absent[0]})"
            )

    @property
    def scheme(self) -> ClassScheme:
        return self.store.scheme

    @property
    def bands(self) -> tuple[BandStats, ...]:
        return self.store.bands

    @property
    def chip_size(self) -> int:
        return self.store.chip_size

    @property
    def ids(self) -> list[str]:
        return [r["id"] for r in self.rows]

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose augmentation draws ``__getitem__`` makes."""
        self.epoch = int(epoch)

    def augmentation_code(self, index: int) -> int:
        """The symmetry (0..7, see :func:`dihedral`) item ``index`` gets in the current epoch."""
        if not self.augment:
            return 0
        return int(np.random.default_rng([self.seed, self.epoch, index]).integers(8))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        size = self.store.chip_size
        mask = self._read(row["mask"], "mask chip")[0]
        image = self._read(row["image"], "image chip")
        if mask.shape != (size, size) or image.shape[1:] != (size, size):
            raise GeospadeError(
                f"chip {row['id']} is {image.shape[2]}x{image.shape[1]} px, "
                f"the manifest says {size}"
            )
        mask = mask.astype(np.int64)
        if image.dtype.kind == "f":
            # Stores tiled before issue 16 may hold NaN/inf pixels under a class: they are no
            # data, so ignore them (normalize maps them to finite values).
            mask[~np.isfinite(image).all(axis=0)] = IGNORE_INDEX
        image = torch.from_numpy(normalize(image, self.store.bands))
        mask = torch.from_numpy(mask)
        # Out-of-scheme indices would index past the one-hot map: treat them as unlabelled.
        mask[(mask >= self.store.num_classes) & (mask != IGNORE_INDEX)] = IGNORE_INDEX
        code = self.augmentation_code(index)
        if code:
            image, mask = dihedral(image, code).contiguous(), dihedral(mask, code).contiguous()
        return {"mask": mask, "image": image, "id": row["id"]}

    def _read(self, name: str, role: str) -> np.ndarray:
        """All bands of the chip file ``name`` (relative to the store); a truncated or corrupt
        file is one error naming it, without GDAL's warnings (a file cut inside its header
        has no georeferencing left, which is no news once it is reported damaged)."""
        path = self.root / name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with reading(path, role), rasterio.open(path) as src:
                return src.read()
