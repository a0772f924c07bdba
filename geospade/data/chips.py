"""A torch ``Dataset`` over a chip store written by ``geospade tile`` (docs/design.md).

Each sample is one chip: its class-index mask (255 = ignore), its image normalised per band to
[-1, 1] with the manifest's stats, and its id. Augmentation is one of the eight symmetries of the
square (flips and 90° rotations), applied to mask and image together; these only move pixels, so
the mask is never interpolated.

The augmentation drawn for a chip depends only on ``(seed, epoch, index)``, never on worker
processes or the order samples are asked for, so a resumed training run sees the same samples as a
run that was never interrupted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from torch.utils.data import Dataset

from geospade.errors import GeospadeError
from geospade.normalization import BandStats, normalize
from geospade.schemes import IGNORE_INDEX, ClassScheme

CHIPS_FORMAT = "geospade-chips"
CHIPS_VERSION = 1
SPLITS = ("train", "val", "test")
_MANIFEST_KEYS = ("scheme", "bands", "chip_size")


@dataclass(frozen=True)
class ChipStore:
    """What a chip store's manifest says, validated.

    Args:
        root: the store's folder.
        manifest: the parsed ``manifest.json``.
        scheme: its class scheme.
        bands: its bands with their normalisation stats.
        chip_size: chip width and height in pixels.
    """

    root: Path
    manifest: dict[str, Any]
    scheme: ClassScheme
    bands: tuple[BandStats, ...]
    chip_size: int

    @property
    def num_classes(self) -> int:
        return self.scheme.num_classes


def open_chip_store(root: str | Path) -> ChipStore:
    """Read and validate a chip store's manifest.

    Raises:
        GeospadeError: the folder or its manifest is missing (an incomplete store: the manifest is
            written last), unreadable, or not a geospade chip store of a known version.
    """
    root = Path(root)
    if not root.is_dir():
        raise GeospadeError(f"chip store not found: {root}")
    path = root / "manifest.json"
    if not path.is_file():
        raise GeospadeError(
            f"{root} is not a complete chip store "
            "(no manifest.json; was `geospade tile` interrupted?)"
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GeospadeError(f"{path} is not readable JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != CHIPS_FORMAT:
        raise GeospadeError(
            f"{root} is not a geospade chip store (manifest format is not {CHIPS_FORMAT!r})"
        )
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > CHIPS_VERSION:
        raise GeospadeError(
            f"{root} has chip store format version {version}; "
            f"this geospade reads up to {CHIPS_VERSION}"
        )
    missing = [k for k in _MANIFEST_KEYS if k not in manifest]
    if missing:
        raise GeospadeError(f"{path} is incomplete (missing {', '.join(missing)})")
    scheme = ClassScheme.from_dict(manifest["scheme"])
    bands = tuple(BandStats.from_dict(b) for b in manifest["bands"])
    if not bands:
        raise GeospadeError(f"{path} lists no imagery bands")
    chip_size = manifest["chip_size"]
    if not isinstance(chip_size, int) or chip_size <= 0:
        raise GeospadeError(f"{path} has an invalid chip_size {chip_size!r}")
    return ChipStore(root, manifest, scheme, bands, chip_size)


def read_chip_index(root: str | Path) -> list[dict[str, Any]]:
    """The rows of ``index.gpkg`` (id, split, image, mask; no geometry), in file order."""
    import pyogrio

    path = Path(root) / "index.gpkg"
    if not path.is_file():
        raise GeospadeError(f"{root} is not a complete chip store (no index.gpkg)")
    try:
        table = pyogrio.read_dataframe(
            path, layer="chips", columns=["id", "split", "image", "mask"], read_geometry=False
        )
    except Exception as exc:  # noqa: BLE001 - pyogrio raises several types for a bad file
        raise GeospadeError(
            f"{path} is not a readable chip index ({' '.join(str(exc).split())})"
        ) from None
    return [
        {"id": str(r.id), "split": str(r.split), "image": str(r.image), "mask": str(r.mask)}
        for r in table.itertuples(index=False)
    ]


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
        self.store = open_chip_store(root)
        self.root = self.store.root
        self.split = split
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        rows = read_chip_index(self.root)
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
        with rasterio.open(self.root / row["mask"]) as src:
            mask = src.read(1)
        with rasterio.open(self.root / row["image"]) as src:
            image = src.read()
        if mask.shape != (size, size) or image.shape[1:] != (size, size):
            raise GeospadeError(
                f"chip {row['id']} is {image.shape[2]}x{image.shape[1]} px, "
                f"the manifest says {size}"
            )
        image = torch.from_numpy(normalize(image, self.store.bands))
        mask = torch.from_numpy(mask.astype(np.int64))
        # Out-of-scheme indices would index past the one-hot map: treat them as unlabelled.
        mask[(mask >= self.store.num_classes) & (mask != IGNORE_INDEX)] = IGNORE_INDEX
        code = self.augmentation_code(index)
        if code:
            image, mask = dihedral(image, code).contiguous(), dihedral(mask, code).contiguous()
        return {"mask": mask, "image": image, "id": row["id"]}
