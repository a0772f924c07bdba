"""What ``geospade train --resume`` may continue: the checkpoint must fit the chip store, and
only options that do not change the model or the optimisation may change (docs/design.md, "Run
folder")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from geospade.data.chips import ChipDataset
from geospade.errors import ArgumentError, GeospadeError
from geospade.training.config import TrainConfig
from geospade.training.state import CHIPS_IDENTITY_KEY

RESUMABLE_CHANGES = frozenset({
    "steps", "epochs", "checkpoint_every", "preview_every", "val_every", "log_every", "workers",
    "threads", "device", "val_chips",
})
"""Options that may differ between a checkpoint and ``--resume`` (they do not change the model or
the optimisation already done)."""

_RESUME_STATES = ("discriminator", "optimizer_g", "optimizer_d", "rng", "generator_ema")


def check_resumable(ckpt: dict[str, Any], dataset: ChipDataset, path: Path, chips: str | Path,
                    chips_sha256: str, allow_other_chips: bool = False) -> str | None:
    """Refuse to resume ``ckpt`` on a chip store it cannot continue on.

    Bands, classes and chip size must agree; and the store must be the one the checkpoint was
    trained on (key ``chips_manifest_sha256``), unless ``allow_other_chips``.

    Args:
        ckpt: the loaded checkpoint.
        dataset: the train split of the chip store to continue on.
        path: the checkpoint file, for messages.
        chips: the chip store's folder, for messages.
        chips_sha256: the store's identity
            (:func:`geospade.formats.chip_store.manifest_sha256`).
        allow_other_chips: continue on another store with the same bands, classes and size.

    Returns:
        A warning to show (another store allowed, or a checkpoint that predates the identity
        key), or None.

    Raises:
        GeospadeError: the checkpoint does not fit the store, lacks a training state, or was
            trained on another store without ``allow_other_chips``.
    """
    _check_fits(ckpt, dataset, path)
    for key in _RESUME_STATES:
        if key not in ckpt:
            raise GeospadeError(f"{path} cannot be resumed (it has no {key} state)")
    trained_on = ckpt.get(CHIPS_IDENTITY_KEY)
    if trained_on is None:
        return (f"{path} does not record which chip store it was trained on (it predates "
                f"that check); continuing on {chips}")
    if trained_on == chips_sha256:
        return None
    message = (f"{path} was trained on another chip store than {chips} (its manifest.json "
               f"differs)")
    if not allow_other_chips:
        raise ArgumentError("allow_other_chips", f"{message}; resume on the run's own chips, "
                            "or pass allow_other_chips=True to continue on these",
                            leading=False)
    return f"{message}; continuing on it (--allow-other-chips)"


def _check_fits(ckpt: dict[str, Any], dataset: ChipDataset, path: Path) -> None:
    """Bands, classes and chip size of ``ckpt`` are the chip store's."""
    bands = ckpt.get("bands", [])
    if len(bands) != len(dataset.bands):
        raise GeospadeError(
            f"{path} was trained on {len(bands)} band(s), but the chip store has "
            f"{len(dataset.bands)}"
        )
    names = [c.get("name") for c in ckpt["scheme"].get("classes", [])]
    if names != dataset.scheme.names:
        raise GeospadeError(f"{path} was trained on other classes than the chip store's")
    if ckpt.get("chip_size") != dataset.chip_size:
        raise GeospadeError(
            f"{path} was trained on {ckpt.get('chip_size')} px chips, the chip store has "
            f"{dataset.chip_size} px"
        )


def merge_resume_config(saved: dict[str, Any], given: dict[str, Any]) -> TrainConfig:
    """The checkpoint's config, with the options the user gave that may change on resume.

    Args:
        saved: the checkpoint's ``config``.
        given: the options the user set explicitly
            (:func:`~geospade.training.config.given_options`).

    Raises:
        GeospadeError: ``given`` changes an option outside :data:`RESUMABLE_CHANGES`.
    """
    base = TrainConfig.from_saved(saved)
    changed = {k: v for k, v in given.items() if v is not None and getattr(base, k) != v}
    fixed = sorted(set(changed) - RESUMABLE_CHANGES)
    if fixed:
        raise GeospadeError(
            f"cannot change {', '.join(fixed)} when resuming (the checkpoint was trained with "
            + ", ".join(f"{k}={getattr(base, k)!r}" for k in fixed) + ")"
        )
    return base.replace(**changed)
