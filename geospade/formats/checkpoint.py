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
    chips_manifest_sha256  SHA-256 of the chip store's manifest.json it trained on
                      (``train --resume`` refuses another store without --allow-other-chips)

Writes go to a temporary file in the same folder, then ``os.replace``: an interrupted write
never damages the last good checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from geospade.atomic import atomic_path
from geospade.errors import GeospadeError, check_format_header, first_line
from geospade.torch_files import read_torch_file

CHECKPOINT_FORMAT = "geospade-checkpoint"
CHECKPOINT_VERSION = 1
REQUIRED_KEYS = ("generator_config", "scheme", "bands", "chip_size", "generator")


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Atomically write ``payload`` (plus the format tags) to ``path``."""
    path = Path(path)
    data = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, **payload}
    with atomic_path(path, fsync=True) as tmp, open(tmp, "wb") as fh:
        # Through a Python file, a full disk raises OSError(ENOSPC) (as the context of torch's
        # "unexpected pos" error), which atomic_path words as "disk full while writing PATH".
        torch.save(data, fh)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and validate a checkpoint, safely (``weights_only=True``).

    Raises:
        GeospadeError: missing, corrupt, foreign (not a geospade checkpoint) or newer-format file.
    """
    path = Path(path)
    data = read_torch_file(path, "checkpoint", map_location)
    check_format_header(data, str(path), "checkpoint", CHECKPOINT_FORMAT, CHECKPOINT_VERSION,
                        REQUIRED_KEYS, hint=" (upgrade geospade)")
    for key, kind in _KINDS.items():
        value = data.get(key)
        if key in data and not (value is None and key not in REQUIRED_KEYS) and not (
                isinstance(value, kind) and not isinstance(value, bool)):
            raise GeospadeError(f"{path} is not a valid checkpoint: {key!r} is a "
                                f"{type(value).__name__}, not a {kind.__name__}")
    if not all(isinstance(b, dict) for b in data["bands"]):
        raise GeospadeError(f"{path} is not a valid checkpoint: 'bands' holds a value that "
                            "is not a band description")
    if data["chip_size"] <= 0:
        raise GeospadeError(f"{path} is not a valid checkpoint: chip_size {data['chip_size']}")
    return data


# What each key holds, checked on load so that a damaged or hand-edited file fails here, in
# one line, rather than as an AttributeError in whichever stage reads the key first.
_KINDS: dict[str, type] = {
    "generator_config": dict, "scheme": dict, "bands": list, "chip_size": int, "generator": dict,
    "generator_ema": dict, "discriminator": dict, "encoder": dict, "encoder_ema": dict,
    "encoder_config": dict, "optimizer_g": dict, "optimizer_d": dict, "rng": dict,
    "config": dict, "step": int,
}


def load_weights(module: torch.nn.Module, state: Any, path: str | Path | None, part: str,
                 config: str = "generator config") -> None:
    """``module.load_state_dict(state)``, with weights that do not fit as one short error.

    ``load_state_dict`` lists every mismatch over many lines (20 KB for a model trained with
    another width); the message names the checkpoint and the first mismatch.

    Args:
        module: the model built from the checkpoint's own config.
        state: the checkpoint's state dict for it.
        path: the checkpoint, for the message (None: not known).
        part: the checkpoint key ``state`` was read from ("generator_ema").
        config: what ``module`` was built from, for the message.

    Raises:
        GeospadeError: "checkpoint PATH does not match its own generator config: …".
    """
    try:
        module.load_state_dict(state)
        return
    except (RuntimeError, TypeError, ValueError, AttributeError, KeyError) as exc:
        # (Asked only now: load_state_dict accepts some differences, e.g. batch-norm counters
        # missing from old files.)
        problem = _state_mismatch(module, state) or first_line(exc, 120)
    name = "the checkpoint" if path is None else f"checkpoint {path}"
    raise GeospadeError(f"{name} does not match its own {config}: {part} weights do not "
                        f"match ({problem})")


def _state_mismatch(module: torch.nn.Module, state: Any) -> str | None:
    """The first way ``state`` does not fit ``module`` (missing or unknown keys, a shape or a
    non-tensor), or None."""
    if not isinstance(state, dict):
        return f"a {type(state).__name__}, not a state dict"
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unknown = [k for k in state if k not in expected]
    for names, what in ((missing, "missing"), (unknown, "unknown")):
        if names:
            more = f" and {len(names) - 1} more" if len(names) > 1 else ""
            return f"{what} {names[0]}{more}"
    for key, want in expected.items():
        got = state[key]
        if not isinstance(got, torch.Tensor):
            return f"{key} is a {type(got).__name__}, not a tensor"
        if got.shape != want.shape:
            return f"{key} is {list(got.shape)}, the config makes {list(want.shape)}"
    return None
