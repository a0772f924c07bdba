"""`geospade generate`: a synthetic chip store, painted by a trained generator over the masks of
a real one.

The output is a chip store like ``geospade tile``'s (docs/design.md, "Chip store"; written
through :mod:`geospade.formats.chip_store`), so anything that trains on chips
(:class:`geospade.data.ChipDataset`, torchgeo) reads it, alone or mixed with the real store:

* every mask chip of the chosen split is copied byte for byte, once per variant, with the same
  georeferencing, split, offsets and class fractions in ``index.gpkg``;
* each variant's image is the generator's painting of that mask in the real store's dtype and
  bands, converted as ``geospade synthesize`` converts (:func:`~geospade.normalization.denormalize`
  with the checkpoint's band statistics); pixels the mask ignores (255) are the imagery's nodata
  where it has one;
* variant ``k`` of chip ``ID`` is chip ``ID_vk``; its noise (generators trained with
  ``noise_dim``) and style code (``use_vae``) are drawn from a seed made of ``seed``, ``ID``
  and ``k``, so a chip's variants differ, and the same seed gives the same store whatever the
  batch size;
* ``manifest.json`` is the real store's with the counts of the new store, and a ``synthetic``
  key that marks it (:func:`is_synthetic`): the checkpoint and its SHA-256 and step, the real
  store's identity (:func:`~geospade.formats.chip_store.manifest_sha256`), variants, seed and
  the rare-class oversampling.

**Rare classes** (``oversample_rare=F``): a class is rare when its pixel frequency in the real
store's train split is below the median frequency of the classes present there (a class the
train split lacks is rare too). A chip holding at least one pixel of a rare class gets
``ceil(F * variants)`` variants instead of ``variants``; F = 1 (the default) oversamples
nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from affine import Affine

from geospade.errors import ArgumentError, GeospadeError, check_seed
from geospade.formats import chip_store
from geospade.formats.chip_store import SYNTHETIC, ChipStore, check_real_chips, open_chip_store
from geospade.io_errors import reading, writing
from geospade.log import progress
from geospade.normalization import denormalize
from geospade.outputs import CHIP_STORE, OutputLock, check_not_an_input, check_replaceable
from geospade.provenance import file_sha256
from geospade.schemes import IGNORE_INDEX
from geospade.synthesis.model import SynthesisModel, paints_variants

SPLIT_CHOICES = (*chip_store.SPLITS, "all")
AUX = ".aux.xml"  # a mask chip's sidecar (its class names), copied with it


def is_synthetic(store: ChipStore | str | Path) -> bool:
    """Whether a chip store (open, or its folder) was painted by ``geospade generate``."""
    return (store if isinstance(store, ChipStore) else open_chip_store(store)).is_synthetic


@dataclass
class GenerateSummary:
    """What :func:`generate` wrote.

    Attributes:
        out: the synthetic chip store.
        counts: synthetic chips per split.
        masks: real chips (masks) they were painted over.
        variants: variants of an ordinary chip.
        rare_variants: variants of a chip holding a rare class.
        rare_classes: names of the rare classes (empty without oversampling).
        rare_chips: masks holding a rare class.
        seconds: wall time.
    """

    out: Path
    counts: dict[str, int]
    masks: int
    variants: int
    rare_variants: int
    rare_classes: list[str] = field(default_factory=list)
    rare_chips: int = 0
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def describe(self) -> str:
        """A short report: chips written, variants, rare-class oversampling."""
        lines = [f"wrote {self.total} synthetic chips to {self.out} ({self.variants} "
                 f"variant(s) of {self.masks} masks) in {self.seconds:.1f} s",
                 "  chips per split: " + ", ".join(f"{k} {v}" for k, v in self.counts.items())]
        if self.rare_variants > self.variants:
            lines.append(f"  {self.rare_chips} masks hold a rare class "
                         f"({', '.join(self.rare_classes) or 'none'}): "
                         f"{self.rare_variants} variants each")
        return "\n".join(lines)


def rare_classes(class_pixels: Sequence[int]) -> list[int]:
    """Indices of the classes rarer than the median class frequency.

    Args:
        class_pixels: pixels per class index (a split's ``class_pixels`` in the manifest).

    Returns:
        The indices whose pixel count is below the median count of the classes present
        (count > 0); absent classes are rare. Empty when no class is present.
    """
    counts = np.asarray(class_pixels, dtype=np.float64)
    present = counts[counts > 0]
    if present.size == 0:
        return []
    median = float(np.median(present))
    return [int(i) for i in np.flatnonzero(counts < median)]


def rare_variant_count(variants: int, oversample_rare: float) -> int:
    """Variants of a chip holding a rare class: ``ceil(oversample_rare * variants)``."""
    # A small tolerance, so 1.1 * 10 is 11 and not 12 from rounding.
    return max(variants, math.ceil(oversample_rare * variants - 1e-9))


def generate(
    checkpoint: str | Path,
    chips: str | Path,
    out: str | Path,
    *,
    variants: int = 1,
    oversample_rare: float = 1.0,
    split: str = "train",
    seed: int = 0,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    amp: str = "auto",
    overwrite: bool = False,
    quiet: bool = False,
) -> GenerateSummary:
    """Write a synthetic chip store: ``variants`` generated images per mask of ``chips``.

    Args:
        checkpoint: a ``geospade train`` checkpoint whose scheme and bands are the store's.
        chips: a real chip store (``geospade tile``'s output; not a synthetic one).
        out: the synthetic chip store to create (not inside ``chips``).
        variants: images per mask (more than one needs a generator with noise or a style
            code: without, every variant would be the same image).
        oversample_rare: chips holding a class rarer than the train split's median class
            frequency get ``ceil(oversample_rare * variants)`` variants (1: no oversampling).
        split: the split whose masks are painted (``train``, ``val``, ``test`` or ``all``);
            chips keep their split.
        seed: seed of the noise and style codes.
        batch_size: chips per generator call.
        device: ``cpu``, ``cuda``, ``auto`` … (default: CUDA when available).
        amp: inference precision, as for ``synthesize`` (``auto``, ``bf16``, ``none``).
        overwrite: replace ``out`` if it is a chip store.
        quiet: no progress bar.

    Returns:
        A :class:`GenerateSummary`.

    Raises:
        GeospadeError: bad options, a synthetic ``chips``, a checkpoint whose scheme, bands or
            chip size do not fit the store, an empty split, or an ``out`` that is an input or
            may not be replaced (all before anything is written).
    """
    _check_options(variants, oversample_rare, split, seed, batch_size)
    checkpoint, chips, out = Path(checkpoint), Path(chips), Path(out)
    store = open_chip_store(chips)
    check_real_chips(store, "geospade generate")
    check_not_an_input(out, [("the checkpoint", checkpoint), ("the real chip store", chips)],
                       hint="write the synthetic store to a new folder")
    check_replaceable(out, CHIP_STORE, overwrite)
    with OutputLock(out, "chip store"):
        return _generate(checkpoint, store, out, _Settings(
            variants, oversample_rare, split, seed, batch_size, device, amp, quiet))


def _check_options(variants: int, oversample_rare: float, split: str, seed: int,
                   batch_size: int) -> None:
    check_seed(seed)
    if isinstance(variants, bool) or not isinstance(variants, int) or variants < 1:
        raise ArgumentError("variants", f"must be a whole number >= 1, not {variants!r}")
    if not (isinstance(oversample_rare, (int, float)) and math.isfinite(oversample_rare)
            and oversample_rare >= 1):
        raise ArgumentError("oversample_rare", f"must be a factor >= 1, not "
                                               f"{oversample_rare!r}")
    if split not in SPLIT_CHOICES:
        raise ArgumentError("split", f"must be one of {', '.join(SPLIT_CHOICES)}, not "
                                     f"{split!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ArgumentError("batch_size", f"must be at least 1, not {batch_size!r}")


@dataclass(frozen=True)
class _Settings:
    """The options of one :func:`generate` run, checked."""

    variants: int
    oversample_rare: float
    split: str
    seed: int
    batch_size: int
    device: Any
    amp: str
    quiet: bool


@dataclass(frozen=True)
class _Chip:
    """One real chip to paint: its index row and how many variants it gets."""

    row: dict[str, Any]
    count: int


def _generate(checkpoint: Path, store: ChipStore, out: Path, settings: _Settings
              ) -> GenerateSummary:
    """The steps of :func:`generate` once its inputs are checked and ``out`` is locked."""
    from geospade.formats.checkpoint import check_fits_store
    from geospade.synthesis.model import load_synthesis_model

    start = time.perf_counter()
    model = load_synthesis_model(checkpoint, settings.device, amp=settings.amp,
                                 seed=settings.seed)
    check_fits_store(checkpoint, model.scheme, model.bands, store)
    identity = {"checkpoint": str(checkpoint.resolve()),
                "checkpoint_sha256": _checkpoint_sha256(checkpoint),
                "checkpoint_step": model.step}
    rows = [r for r in chip_store.read_index(store.root)
            if settings.split == "all" or r["split"] == settings.split]
    if not rows:
        raise GeospadeError(f"chip store {store.root} has no {settings.split!r} chips")
    rare = _rare_for(store, settings)
    plan = _plan(store, rows, rare, settings)
    _check_model(model, store, checkpoint, max(c.count for c in plan))
    with chip_store.new_store(out) as folder:
        sink = _StoreSink(folder, out, store, _chip_tags(store, identity, settings.seed))
        painter = _Painter(model, store, settings.seed)
        _paint_all(plan, painter, sink, settings)
        sink.close()
        manifest = _manifest(store, sink, settings, rare, identity)
        chip_store.write_manifest(folder / chip_store.MANIFEST, manifest)
    return GenerateSummary(
        out=out, counts=sink.counts, masks=len(plan), variants=settings.variants,
        rare_variants=rare_variant_count(settings.variants, settings.oversample_rare),
        rare_classes=[store.scheme.names[i] for i in rare],
        rare_chips=sum(c.count > settings.variants for c in plan),
        seconds=time.perf_counter() - start)


def _check_model(model: SynthesisModel, store: ChipStore, checkpoint: Path,
                 most_variants: int) -> None:
    """The generator takes the store's chip size, and can make different variants."""
    generator = model.generator
    size = store.chip_size
    if size % generator.stride:
        raise GeospadeError(f"chip store {store.root} has {size}-px chips, not a multiple of "
                            f"the stride {generator.stride} of checkpoint {checkpoint}")
    if generator.use_vae and size != generator.crop_size:
        raise GeospadeError(f"checkpoint {checkpoint} (with a style encoder) paints "
                            f"{generator.crop_size}-px chips only; chip store {store.root} has "
                            f"{size}-px chips")
    if most_variants > 1 and not paints_variants(generator):
        raise ArgumentError(
            "variants", f"checkpoint {checkpoint} has no noise input or style code (trained "
            f"with noise_dim 0 and without use_vae): its {most_variants} variants of a mask "
            "would be the same image; use variants=1 without oversample_rare, or a checkpoint "
            "trained with noise_dim > 0", others=("oversample_rare",), leading=False)


def _rare_for(store: ChipStore, settings: _Settings) -> list[int]:
    """The rare class indices (none without oversampling)."""
    if rare_variant_count(settings.variants, settings.oversample_rare) == settings.variants:
        return []
    train = (store.manifest.get("class_pixels") or {}).get("train")
    if not train or not any(train):
        raise ArgumentError("oversample_rare", f"measures class frequencies on the train "
                            f"split, and chip store {store.root} has no train pixels")
    return rare_classes(train)


def _plan(store: ChipStore, rows: list[dict[str, Any]], rare: list[int],
          settings: _Settings) -> list[_Chip]:
    """How many variants each chip gets (reads the masks only when some classes are rare)."""
    if not rare:
        return [_Chip(r, settings.variants) for r in rows]
    many = rare_variant_count(settings.variants, settings.oversample_rare)
    plan = []
    for row in rows:
        mask = _read_mask(store.root / row["mask"])
        holds_rare = bool(np.isin(mask.pixels, rare).any())
        plan.append(_Chip(row, many if holds_rare else settings.variants))
    return plan


def _paint_all(plan: list[_Chip], painter: _Painter, sink: _StoreSink,
               settings: _Settings) -> None:
    """Paint every variant of every chip, ``batch_size`` masks at a time."""
    with progress(total=sum(c.count for c in plan), desc="generate", unit="chip",
                  quiet=settings.quiet, logger="generate") as bar:
        for first in range(0, len(plan), settings.batch_size):
            batch = plan[first:first + settings.batch_size]
            masks = [_read_mask(painter.root / c.row["mask"]) for c in batch]
            for variant in range(max(c.count for c in batch)):
                todo = [i for i, c in enumerate(batch) if c.count > variant]
                labels = np.stack([masks[i].pixels for i in todo])
                images = painter.paint(labels, [batch[i].row["id"] for i in todo], variant)
                for image, i in zip(images, todo, strict=True):
                    sink.add(batch[i].row, variant, masks[i], image)
                bar.update(len(todo))


@dataclass(frozen=True)
class _Mask:
    """A real mask chip: its class indices, transform, and the bytes of its file and of its
    ``.aux.xml`` sidecar (class names; None when it has none), copied as they are."""

    pixels: np.ndarray
    transform: Affine
    raw: bytes
    aux: bytes | None


def _read_mask(path: Path) -> _Mask:
    """The mask chip at ``path``."""
    aux = Path(f"{path}{AUX}")
    with reading(path, "mask chip"):
        raw = path.read_bytes()
        with rasterio.open(path) as src:
            pixels, transform = src.read(1), src.transform
    return _Mask(pixels, transform, raw, aux.read_bytes() if aux.is_file() else None)


class _Painter:
    """The generator turning masks into image chips in the store's dtype, with per-chip noise
    and style codes."""

    def __init__(self, model: SynthesisModel, store: ChipStore, seed: int) -> None:
        self.model = model
        self.root = store.root
        self.seed = seed
        self.nodata = store.bands[0].nodata

    def paint(self, masks: np.ndarray, ids: list[str], variant: int) -> np.ndarray:
        """Masks ``(N, S, S)`` uint8 -> images ``(N, bands, S, S)`` in the bands' dtype."""
        raw = self.model.paint_variant(masks, ids, self.seed, variant)
        return np.stack([self._finish(denormalize(x, self.model.bands), m)
                         for x, m in zip(raw, masks, strict=True)])

    def _finish(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Ignored pixels are the imagery's nodata (where it has one); no valid pixel is."""
        if self.nodata is None:
            return image
        if not math.isnan(self.nodata):
            image[image == self.nodata] = _next_to(self.nodata, image.dtype)
        image[:, mask == IGNORE_INDEX] = self.nodata
        return image


def _next_to(nodata: float, dtype: np.dtype) -> float:
    """The valid value next to ``nodata`` that a pixel equal to it becomes."""
    if np.issubdtype(dtype, np.integer):
        return nodata + 1 if nodata < np.iinfo(dtype).max else nodata - 1
    return float(np.nextafter(np.asarray(nodata, dtype=dtype), np.asarray(np.inf, dtype=dtype)))


class _StoreSink:
    """Writes the synthetic chips (masks copied, images written as the real store's), their
    index records and their counts into the store's temporary ``folder``."""

    def __init__(self, folder: Path, out: Path, store: ChipStore, tags: dict[str, str]
                 ) -> None:
        self.folder, self.out, self.store = folder, out, store
        self.counts = {s: 0 for s in chip_store.SPLITS}
        self.class_pixels = {s: [0] * store.num_classes for s in chip_store.SPLITS}
        self.images = _image_writer(store, tags)
        # The fraction columns of the real index: by class name, or (older stores) by index.
        classes = (store.scheme.names if "class_fraction_columns" in store.manifest
                   else store.num_classes)
        self.index = chip_store.IndexWriter(folder / chip_store.INDEX, classes,
                                            self.images.profile["crs"],
                                            shown_as=out / chip_store.INDEX)

    def add(self, row: dict[str, Any], variant: int, mask: _Mask, image: np.ndarray) -> None:
        """Write variant ``variant`` of the real chip ``row``: its mask and ``image``."""
        cid = f"{row['id']}_v{variant}"
        image_rel = f"{chip_store.IMAGES}/{cid}.tif"
        mask_rel = f"{chip_store.MASKS}/{cid}.tif"
        with writing(self.out / image_rel) as target:
            self.images.write(self.folder / image_rel, image, mask.transform)
            target.switch(self.out / mask_rel)
            (self.folder / mask_rel).write_bytes(mask.raw)
            if mask.aux is not None:
                Path(f"{self.folder / mask_rel}{AUX}").write_bytes(mask.aux)
        k = self.store.num_classes
        hist = np.bincount(mask.pixels.ravel(), minlength=256)
        self.counts[row["split"]] += 1
        totals = self.class_pixels[row["split"]]
        for i in range(k):
            totals[i] += int(hist[i])
        height, width = mask.pixels.shape
        self.index.add([{
            "id": cid, "split": row["split"], "row_off": row["row_off"],
            "col_off": row["col_off"], "width": width, "height": height,
            "nodata_fraction": 1.0 - int(hist[:k].sum()) / mask.pixels.size,
            "class_fractions": (hist[:k] / mask.pixels.size).tolist(),
            "image": image_rel, "mask": mask_rel,
            "bounds": rasterio.transform.array_bounds(height, width, mask.transform),
        }])

    def close(self) -> None:
        """Write the index records still pending."""
        self.index.close()


def _image_writer(store: ChipStore, tags: dict[str, str]) -> chip_store.ChipWriter:
    """A writer of image chips like the store's own (its first image chip's dtype, bands,
    CRS, nodata, colour interpretation and band names, and the store's chip codec), tagged
    ``tags``."""
    first = chip_store.read_index(store.root)[0]
    path = store.root / first["image"]
    with reading(path, "image chip"), rasterio.open(path) as src:
        rgb = [c.name for c in src.colorinterp[:3]] == ["red", "green", "blue"]
        profile = chip_store.image_profile(
            src.count, src.dtypes[0], src.crs, src.nodata, rgb,
            (store.manifest.get("options") or {}).get("compress", "none"))
        return chip_store.ChipWriter(profile, descriptions=list(src.descriptions), tags=tags)


def _manifest(store: ChipStore, sink: _StoreSink, settings: _Settings, rare: list[int],
              identity: dict[str, Any]) -> dict[str, Any]:
    """The real store's manifest with the synthetic store's counts and its ``synthetic``
    table."""
    from geospade import __version__

    manifest = dict(store.manifest)
    manifest.update(
        geospade_version=__version__,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        counts=sink.counts, class_pixels=sink.class_pixels,
    )
    manifest[SYNTHETIC] = {
        **identity,
        "source_chips": chip_store.manifest_sha256(store.root),
        "source_store": str(store.root.resolve()),
        "split": settings.split,
        "variants": settings.variants,
        "seed": settings.seed,
        "oversample_rare": float(settings.oversample_rare),
        "rare_classes": rare,
        "rare_variants": rare_variant_count(settings.variants, settings.oversample_rare),
    }
    return manifest


def _chip_tags(store: ChipStore, identity: dict[str, Any], seed: int) -> dict[str, str]:
    """The GeoTIFF tags of every synthetic image chip: synthetic, made by which checkpoint
    with which seed, over which land cover (:mod:`geospade.provenance`)."""
    from geospade.provenance import Provenance

    landcover = ((store.manifest.get("sources") or {}).get("landcover") or {}).get("path")
    return Provenance(checkpoint_sha256=identity["checkpoint_sha256"],
                      checkpoint_step=identity["checkpoint_step"], seed=seed,
                      source_landcover=Path(landcover).name if landcover else None).tags()


def _checkpoint_sha256(path: Path) -> str:
    """:func:`geospade.provenance.file_sha256`, with a read failure in one line."""
    with reading(path, "checkpoint"):
        return file_sha256(path)
