"""The checkpoint file (docs/design.md, "Model and checkpoint"): the one module that reads
and writes it.

One ``torch.save`` file of tensors and plain values, loaded with ``torch.load(...,
weights_only=True)`` so that a checkpoint from a stranger cannot run code. Writes go to a
temporary file in the same folder, then ``os.replace``: an interrupted write never damages the
last good checkpoint.

:func:`open_checkpoint` returns a validated :class:`Checkpoint` that builds the generator and the
style encoder it holds; :func:`load_checkpoint` returns the validated dict (training's resume);
:func:`save_checkpoint` writes one; :func:`load_weights` loads any state dict into its module.

Keys (format version 1)::

    format                "geospade-checkpoint"
    format_version        1
    step                  training steps done
    config                the resolved training config (plain dict; its "discriminator",
                          "patchgan" or "oasis", says which discriminator the run trained)
    generator_config      keyword arguments of geospade.models.Generator (plain dict;
                          "noise_dim" only when the generator takes noise, > 0)
    scheme                ClassScheme.to_dict()
    bands                 [BandStats.to_dict(), ...]
    chip_size             chip size in pixels the model was trained on
    generator             generator state_dict
    generator_ema         EMA generator state_dict (what synthesize and evaluate use)
    discriminator         discriminator state_dict                              (resume only)
    discriminator_config  keyword arguments of the discriminator config["discriminator"] names:
                          patchgan (or no such key, older checkpoints):
                          geospade.models.MultiscaleDiscriminator (num_classes, in_channels,
                          ndf, n_layers, num_d, spectral_norm); oasis:
                          geospade.models.oasis.OasisDiscriminator (num_classes, in_channels,
                          ndf, crop_size, depth, spectral_norm)
    encoder               style encoder state_dict, if --use-vae (else absent)
    encoder_ema           EMA style encoder state_dict, with encoder (what synthesize --style
                          uses; older checkpoints: absent, encoder is used)
    encoder_config        keyword arguments of geospade.models.StyleEncoder, with encoder
                          (older checkpoints: absent, derived from the encoder's weights)
    optimizer_g, optimizer_d   optimiser state_dicts                            (resume only)
    scaler_g, scaler_d    gradient scaler state_dicts (used with --amp fp16)    (resume only)
    rng                   RNG states as tensors / plain values                  (resume only)
    vgg                   whether the run used the VGG perceptual loss (bool)
    chips_manifest_sha256 the chip store's identity (geospade.formats.chip_store.manifest_sha256;
                          ``train --resume`` refuses another store without --allow-other-chips)
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from geospade.atomic import atomic_path
from geospade.errors import GeospadeError, check_format_header, first_line
from geospade.normalization import BandStats
from geospade.schemes import ClassScheme
from geospade.torch_files import read_torch_file

if TYPE_CHECKING:
    from geospade.formats.chip_store import ChipStore
    from geospade.models import StyleEncoder

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
    "config": dict, "step": int, "scaler_g": dict, "scaler_d": dict,
    "discriminator_config": dict, "chips_manifest_sha256": str,
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


# -- the checkpoint as a model ------------------------------------------------------------------


class GeneratorForm(str, Enum):
    """The form :meth:`Checkpoint.generator` builds.

    ``eager``: the trained :class:`~geospade.models.Generator` itself, fp32, eval mode (what
    evaluation runs). ``inference``: what ``geospade synthesize`` runs, made by
    :func:`geospade.models.synthesis_generator`: spectral norm folded, optionally bf16 weights
    and channels-last, or oneDNN-fused on a CPU.
    """

    EAGER = "eager"
    INFERENCE = "inference"


@dataclass(frozen=True)
class Checkpoint:
    """A validated checkpoint: its metadata as typed values, and the models it holds.

    Made by :func:`open_checkpoint` (or :meth:`from_payload` for a dict already loaded).

    Args:
        path: the file, named in messages (None: not known).
        payload: the validated dict (:func:`load_checkpoint`), every key of the format.
        scheme: the class scheme the model was trained with.
        bands: the imagery bands it generates, with their normalisation stats.
        chip_size: chip size in pixels it was trained on.
        generator_config: keyword arguments of :class:`~geospade.models.Generator`.
    """

    path: Path | None
    payload: dict[str, Any]
    scheme: ClassScheme
    bands: tuple[BandStats, ...]
    chip_size: int
    generator_config: dict[str, Any]

    @classmethod
    def from_payload(cls, data: dict[str, Any], path: str | Path | None = None) -> Checkpoint:
        """Read the metadata of ``data``, a dict :func:`load_checkpoint` has validated.

        Raises:
            GeospadeError: a scheme or band description that does not hold together, or no
                bands, naming ``path``.
        """
        path = None if path is None else Path(path)
        where = "the checkpoint" if path is None else str(path)
        scheme = ClassScheme.from_dict(data["scheme"], origin=None if path is None else where)
        try:
            bands = tuple(BandStats.from_dict(b) for b in data["bands"])
        except GeospadeError as exc:
            raise GeospadeError(f"{where}: {exc}") from None
        if not bands:
            raise GeospadeError(f"{where}: checkpoint lists no bands")
        return cls(path, data, scheme, bands, int(data["chip_size"]),
                   dict(data["generator_config"]))

    @property
    def step(self) -> int | None:
        """Training steps done (None: not recorded)."""
        return self.payload.get("step")

    @property
    def config(self) -> dict[str, Any]:
        """The resolved training config (empty: not recorded)."""
        return self.payload.get("config") or {}

    @property
    def chips_manifest_sha256(self) -> str | None:
        """The identity of the chip store it was trained on (None: an older checkpoint)."""
        return self.payload.get("chips_manifest_sha256")

    @property
    def has_encoder(self) -> bool:
        """Whether it holds a style encoder (trained with ``use_vae``)."""
        return bool(self.payload.get("encoder"))

    def generator(self, form: GeneratorForm | str = GeneratorForm.EAGER,
                  device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                  channels_last: bool | None = None, fused: bool | None = None
                  ) -> torch.nn.Module:
        """The generator with its EMA weights (its trained ones where it has no EMA).

        Args:
            form: :class:`GeneratorForm`: ``eager`` (fp32, eval mode) or ``inference``.
            device: where it runs.
            dtype: inference form: None (fp32) or ``torch.bfloat16`` (see
                :func:`geospade.synthesis.model.resolve_amp` for where bf16 is native).
            channels_last: inference form: channels-last layout (default: with bf16).
            fused: inference form: the oneDNN-fused generator (default: on a CPU that has it).

        Returns:
            The eager :class:`~geospade.models.Generator`, or the module
            :func:`~geospade.models.synthesis_generator` makes.

        Raises:
            GeospadeError: the generator config does not fit the scheme, bands or chip size, or
                the weights do not fit the config.
        """
        from geospade.models import build_generator, synthesis_generator

        form = GeneratorForm(form)
        if form is GeneratorForm.EAGER and (dtype, channels_last, fused) != (None, None, None):
            raise ValueError("dtype, channels_last and fused choose the inference form's layout")
        generator = build_generator(self.generator_config)
        where = self._where
        if (generator.num_classes != self.scheme.num_classes
                or generator.out_channels != len(self.bands)):
            raise GeospadeError(
                f"{where}: generator has {generator.num_classes} classes and "
                f"{generator.out_channels} bands, the checkpoint's scheme and bands "
                f"{self.scheme.num_classes} and {len(self.bands)}"
            )
        if self.chip_size % generator.stride:
            raise GeospadeError(f"{where}: chip size {self.chip_size} is not a multiple of the "
                                f"generator's stride {generator.stride}")
        part = "generator_ema" if self.payload.get("generator_ema") else "generator"
        load_weights(generator, self.payload[part], self.path, part)
        if form is GeneratorForm.EAGER:
            return generator.to(device).eval()
        return synthesis_generator(generator, device, dtype, channels_last=channels_last,
                                   fused=fused)

    def style_encoder(self, device: str | torch.device = "cpu") -> StyleEncoder:
        """The style encoder (its EMA weights where it has them), in eval mode on ``device``.

        Raises:
            GeospadeError: no encoder, or one whose config or weights do not hold together.
        """
        from geospade.models import StyleEncoder

        if not self.has_encoder:
            raise GeospadeError(f"{self._where} has no style encoder (trained without use_vae)")
        # The EMA encoder goes with the EMA generator (older checkpoints: the encoder).
        part = "encoder_ema" if self.payload.get("encoder_ema") else "encoder"
        state = self.payload[part]
        config = self._encoder_config(state)
        try:
            encoder = StyleEncoder(**config)
        except TypeError as exc:
            raise GeospadeError(f"checkpoint's encoder_config is invalid ({exc})") from None
        load_weights(encoder, state, self.path, part, "encoder config")
        return encoder.eval().to(device)

    def _encoder_config(self, state: dict[str, Any]) -> dict[str, Any]:
        """Keyword arguments of the style encoder whose weights are ``state``: the checkpoint's
        ``encoder_config``, or for older checkpoints read from the weights."""
        if self.payload.get("encoder_config"):
            return dict(self.payload["encoder_config"])
        # Width and spectral norm from the first convolution; the rest is the generator's.
        keys = [k for k in state if k.startswith("layers.0.0.")]
        first = next((state[k] for k in keys if k.endswith("weight.original")
                      or k == "layers.0.0.weight"), None)
        if first is None:
            raise GeospadeError("checkpoint's style encoder has an unknown layout")
        return {"in_channels": len(self.bands), "ndf": int(first.shape[0]),
                "z_dim": int(self.generator_config.get("z_dim", _generator_default("z_dim"))),
                "crop_size": self.chip_size,
                "spectral_norm": any("parametrizations" in k for k in keys)}

    @property
    def _where(self) -> str:
        return "the checkpoint" if self.path is None else str(self.path)


def open_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read and validate a checkpoint (:func:`load_checkpoint`) and its metadata.

    Args:
        path: the ``.pt`` file ``geospade train`` wrote.
        map_location: as for ``torch.load``.

    Returns:
        The :class:`Checkpoint`.

    Raises:
        GeospadeError: missing, corrupt, foreign or newer-format file, or metadata that does not
            hold together.
    """
    return Checkpoint.from_payload(load_checkpoint(path, map_location), path)


def _generator_default(name: str) -> Any:
    """The default of the :class:`~geospade.models.Generator` argument ``name``."""
    from geospade.models import Generator

    return inspect.signature(Generator).parameters[name].default


def check_fits_store(checkpoint: str | Path, scheme: ClassScheme, bands: Sequence[BandStats],
                     store: ChipStore) -> None:
    """Refuse a checkpoint (its ``scheme`` and ``bands``) that does not paint ``store``'s
    classes in its bands and dtype (evaluate and generate compare the two).

    Raises:
        GeospadeError: other classes, other band names or another dtype, in one line.
    """
    if not scheme.same_classes(store.scheme):
        raise GeospadeError(
            f"checkpoint {checkpoint} was trained on scheme {scheme.name!r} (values "
            f"{scheme.values}) but chip store {store.root} uses {store.scheme.name!r} (values "
            f"{store.scheme.values})")
    names, store_names = [b.name for b in bands], [b.name for b in store.bands]
    if names != store_names:
        raise GeospadeError(f"checkpoint {checkpoint} makes bands {names} but chip store "
                            f"{store.root} has {store_names}")
    if np.dtype(bands[0].dtype) != np.dtype(store.bands[0].dtype):
        raise GeospadeError(f"checkpoint {checkpoint} makes {bands[0].dtype} imagery but chip "
                            f"store {store.root} holds {store.bands[0].dtype}")
