"""Painters: what turns a batch of masks into the normalised images an evaluation measures.

A painter takes class-index masks ``(N, H, W)`` uint8 and the chips' indices in their split (the
evaluated split; the train split when TSTR has the model paint the train masks), and returns
images ``(N, C, H, W)`` float32 normalised with the chip store's band stats, so that every method
is measured like a real chip (docs/design.md, "Evaluation report").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from geospade.normalization import BandStats, denormalize, normalize

if TYPE_CHECKING:
    from geospade.synthesis.model import SynthesisModel

Painter = Callable[[np.ndarray, Sequence[int]], np.ndarray]
"""``(masks (N, H, W) uint8, chip indices in their split) -> normalised images (N, C, H, W)
float32``."""

VariantPainter = Callable[[np.ndarray, Sequence[str], int], np.ndarray]
"""``(masks (N, H, W) uint8, their chip IDs, variant) -> normalised images (N, C, H, W)
float32``: variant ``k`` of each chip, as ``geospade generate`` paints it (TSTR's synthetic
train chips)."""


def synthesis_painter(model: SynthesisModel, store_bands: Sequence[BandStats]) -> Painter:
    """A painter running the generator exactly as ``synthesize`` runs it.

    Args:
        model: from :func:`geospade.synthesis.model.load_synthesis_model` (its precision,
            layout and fixed style code are those of ``synthesize``).
        store_bands: the chip store's bands.

    Returns:
        A painter whose output is mapped to the source dtype with the checkpoint's stats (what
        ``synthesize`` writes) and normalised back with the chip store's.
    """

    def paint(masks: np.ndarray, indices: Sequence[int]) -> np.ndarray:
        return _store_normalized(model(masks), model, store_bands)

    return paint


def variant_painter(model: SynthesisModel, store_bands: Sequence[BandStats],
                    seed: int) -> VariantPainter:
    """A variant painter giving the images ``geospade generate --seed SEED`` writes (chip ``ID``'s
    variant ``k`` is its chip ``ID_vk``; see
    :meth:`~geospade.synthesis.model.SynthesisModel.paint_variant`), normalised with the chip
    store's stats as :func:`synthesis_painter`'s are."""

    def paint(masks: np.ndarray, ids: Sequence[str], variant: int) -> np.ndarray:
        return _store_normalized(model.paint_variant(masks, ids, seed, variant), model,
                                 store_bands)

    return paint


def _store_normalized(out: np.ndarray, model: SynthesisModel,
                      store_bands: Sequence[BandStats]) -> np.ndarray:
    """Generator output in [-1, 1] -> the source dtype (the checkpoint's stats, what
    ``synthesize`` writes) -> normalised with the chip store's stats."""
    return np.stack([normalize(denormalize(o, model.bands), store_bands) for o in out])


def class_mean_painter(means: np.ndarray) -> Painter:
    """Paint each pixel with its class's mean normalised spectrum ``means (K, C)``; ignore -> 0."""

    def paint(masks: np.ndarray, indices: Sequence[int]) -> np.ndarray:
        table = np.zeros((256, means.shape[1]), dtype=np.float32)
        table[: len(means)] = means
        return np.ascontiguousarray(np.moveaxis(table[masks], -1, 1))

    return paint


def derangement(n: int, seed: int = 0) -> np.ndarray | None:
    """A fixed permutation of ``range(n)`` with no fixed point (None when ``n < 2``)."""
    if n < 2:
        return None
    order = np.random.default_rng(seed).permutation(n)
    perm = np.empty(n, dtype=np.int64)
    perm[order] = np.roll(order, -1)
    return perm


def shuffled_painter(load_image: Callable[[int], np.ndarray], perm: np.ndarray) -> Painter:
    """Give chip ``i`` the real image of chip ``perm[i]``."""

    def paint(masks: np.ndarray, indices: Sequence[int]) -> np.ndarray:
        return np.stack([load_image(int(perm[i])) for i in indices])

    return paint
