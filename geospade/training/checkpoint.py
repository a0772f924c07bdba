"""The checkpoint file: one ``torch.save`` file of tensors and plain values (DESIGN.md).

It loads with ``torch.load(..., weights_only=True)``, so a checkpoint from a stranger cannot run
code. Keys (format version 1)::

    format            "geospade-checkpoint"
    format_version    1
    step              training steps done
    config            the resolved training config (plain dict)
    generator_config  keyword arguments of geospade.models.Generator (plain dict)
    scheme            ClassScheme.to_dict()
    bands             [BandStats.to_dict(), ...]
    chip_size         chip size in pixels the model was trained on
    generator         generator state_dict
    generator_ema     EMA generator state_dict (what synthesize uses)
    discriminator     discriminator state_dict            (resume only)
    encoder           style encoder state_dict, if --use-vae (else absent)
    encoder_ema       EMA style encoder state_dict, with encoder (what synthesize --style uses)
    optimizer_g, optimizer_d                               (resume only)
    rng               RNG states as tensors / plain values (resume only)

Writes go to a temporary file in the same folder, then ``os.replace``: an interrupted write
never damages the last good checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from geospade.atomic import atomic_path
from geospade.errors import GeospadeError
from geospade.torch_files import read_torch_file

CHECKPOINT_FORMAT = "geospade-checkpoint"
CHECKPOINT_VERSION = 1
REQUIRED_KEYS = ("generator_config", "scheme", "bands", "chip_size", "generator")


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Atomically write ``payload`` (plus the format tags) to ``path``."""
    path = Path(path)
    data = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, **payload}
    with atomic_path(path, fsync=True) as tmp:
        torch.save(data, tmp)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and validate a checkpoint, safely (``weights_only=True``).

    Raises:
        GeospadeError: missing, corrupt, foreign (not a geospade checkpoint) or newer-format file.
    """
    path = Path(path)
    data = read_torch_file(path, "checkpoint", map_location)
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise GeospadeError(f"{path} is not a geospade checkpoint")
    version = data.get("format_version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise GeospadeError(
            f"{path} has checkpoint format version {version}; this geospade reads up to "
            f"{CHECKPOINT_VERSION} (upgrade geospade)"
        )
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise GeospadeError(f"{path} is an incomplete checkpoint (missing {', '.join(missing)})")
    return data
