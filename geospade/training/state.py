"""What a training run changes and a checkpoint keeps: :class:`TrainingState`.

The state is the generator, its exponential moving average (EMA), the discriminator, the style
encoder and its EMA (``use_vae``), both Adam optimisers, both gradient scalers, the step and the
random number generators. :meth:`TrainingState.state_dict` is the checkpoint payload (the keys
of :mod:`geospade.formats.checkpoint`, with what the run trains on beside the weights) and
:meth:`TrainingState.load_state_dict` restores a run from it, exactly (docs/design.md, "Run
folder").
"""

from __future__ import annotations

import copy
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from geospade.errors import ArgumentError, GeospadeError
from geospade.formats.checkpoint import load_weights
from geospade.models.discriminator import MultiscaleDiscriminator
from geospade.models.encoder import StyleEncoder
from geospade.models.generator import Generator
from geospade.models.oasis import OasisDiscriminator, oasis_depth
from geospade.models.precision import Precision, parse_precision, to_channels_last
from geospade.normalization import BandStats
from geospade.schemes import ClassScheme
from geospade.training.config import TrainConfig
from geospade.training.step import GeneratorStep, adam

CHIPS_IDENTITY_KEY = "chips_manifest_sha256"
"""Checkpoint key: :func:`geospade.formats.chip_store.manifest_sha256` of the chip store the run
trains on (``--resume`` refuses another store without ``--allow-other-chips``)."""

_STRIDES = {"normal": 32, "more": 64, "most": 128}


Discriminator = MultiscaleDiscriminator | OasisDiscriminator


def build_models(cfg: TrainConfig, num_classes: int, bands: int, chip_size: int
                 ) -> tuple[Generator, Discriminator, StyleEncoder | None]:
    """The untrained generator, discriminator and (with ``use_vae``) style encoder of ``cfg``.

    The discriminator is SPADE's multi-scale PatchGAN, or with ``cfg.discriminator == "oasis"``
    OASIS's segmentation U-Net (:class:`~geospade.models.oasis.OasisDiscriminator`).

    Args:
        cfg: the training config (widths, norms, upsampling, spectral norm, VAE, noise,
            discriminator).
        num_classes: classes of the scheme.
        bands: imagery bands.
        chip_size: chip size in pixels.

    Returns:
        ``(generator, discriminator, encoder or None)``, initialised from torch's global RNG.

    Raises:
        GeospadeError: ``chip_size`` is not a multiple of the generator's stride.
    """
    try:
        generator = Generator(
            num_classes, bands, ngf=cfg.ngf, num_upsampling_layers=cfg.num_upsampling_layers,
            crop_size=chip_size, norm=cfg.norm, param_free_norm=cfg.param_free_norm,
            use_vae=cfg.use_vae, z_dim=cfg.z_dim, spectral_norm=cfg.spectral_norm,
            hidden=cfg.spade_hidden, noise_dim=cfg.noise_dim,
        )
    except GeospadeError as exc:
        if "multiple of" not in str(exc):
            raise
        stride = _STRIDES[cfg.num_upsampling_layers]
        problem = "must be a positive multiple of" if chip_size <= 0 else "is not a multiple of"
        raise ArgumentError(
            "size", f"chip size {chip_size} {problem} the generator's stride {stride} "
            f"(num_upsampling_layers={cfg.num_upsampling_layers}); tile with size a "
            f"multiple of {stride} or choose fewer upsampling layers",
            others=[("tile with size", "tile with --size")], leading=False
        ) from None
    config = discriminator_config(cfg, num_classes, bands, chip_size)
    discriminator: Discriminator = (OasisDiscriminator(**config) if cfg.discriminator == "oasis"
                                    else MultiscaleDiscriminator(**config))
    encoder = StyleEncoder(**encoder_config(cfg, bands, chip_size)) if cfg.use_vae else None
    return generator, discriminator, encoder


def discriminator_config(cfg: TrainConfig, num_classes: int, bands: int, chip_size: int
                         ) -> dict[str, Any]:
    """Keyword arguments of the discriminator ``cfg.discriminator`` names (checkpoint
    ``discriminator_config``).

    Args:
        cfg: the training config.
        num_classes: classes of the scheme.
        bands: imagery bands.
        chip_size: chip size in pixels (OASIS: it sets the U-Net's depth, stored resolved so
            that the checkpoint does not depend on :func:`~geospade.models.oasis.oasis_depth`).

    Returns:
        :class:`MultiscaleDiscriminator`'s (``patchgan``) or :class:`OasisDiscriminator`'s
        (``oasis``) arguments.
    """
    if cfg.discriminator == "oasis":
        return {"num_classes": num_classes, "in_channels": bands, "ndf": cfg.ndf,
                "crop_size": chip_size, "depth": oasis_depth(chip_size),
                "spectral_norm": cfg.spectral_norm}
    return {"num_classes": num_classes, "in_channels": bands, "ndf": cfg.ndf,
            "n_layers": cfg.n_layers_d, "num_d": cfg.num_d, "spectral_norm": cfg.spectral_norm}


def encoder_config(cfg: TrainConfig, bands: int, chip_size: int) -> dict[str, Any]:
    """Keyword arguments of :class:`StyleEncoder` (checkpoint ``encoder_config``)."""
    return {"in_channels": bands, "ndf": cfg.ndf, "z_dim": cfg.z_dim, "crop_size": chip_size,
            "spectral_norm": cfg.spectral_norm}


@dataclass(frozen=True)
class TrainingData:
    """What a run trains on, stored in its checkpoint beside the weights.

    Args:
        scheme: the chip store's class scheme.
        bands: its imagery bands.
        chip_size: its chip size in pixels.
        chips_sha256: its identity (:data:`CHIPS_IDENTITY_KEY`).
    """

    scheme: ClassScheme
    bands: tuple[BandStats, ...]
    chip_size: int
    chips_sha256: str


class TrainingState:
    """The models, optimisers, gradient scalers, step and RNG states of one run.

    Built untrained on ``device``; :meth:`load_state_dict` continues a checkpoint. The EMA copies
    start as copies of the models; the style encoder is averaged with the generator, as
    ``synthesize --style`` pairs the two EMAs.

    Args:
        config: the resolved training config (learning rates, betas, precision, layout).
        data: what the run trains on.
        generator, discriminator, encoder: the models of :func:`build_models`.
        device: where the models train.
        vgg: whether the run uses the VGG perceptual loss (recorded in the checkpoint).
    """

    def __init__(self, config: TrainConfig, data: TrainingData, generator: Generator,
                 discriminator: Discriminator, encoder: StyleEncoder | None,
                 device: torch.device, vgg: bool) -> None:
        self.config, self.data, self.device, self.vgg = config, data, device, vgg
        self.generator, self.discriminator, self.encoder = generator, discriminator, encoder
        self.generator_ema = _frozen_copy(generator)
        self.encoder_ema = None if encoder is None else _frozen_copy(encoder)
        for module in self._modules().values():
            module.to(device=device)
            if config.uses_channels_last():  # feature maps only: trained parameters stay contiguous
                to_channels_last(module, parameters=False)
        # Generator and encoder train as one module (DDP wraps them together); its parameter
        # order is the order of the optimiser state in checkpoints.
        self.g_module = GeneratorStep(generator, encoder)
        betas = (config.beta1, config.beta2)
        self.opt_g = adam(self.g_module.parameters(), config.lr_g, betas)
        self.opt_d = adam(discriminator.parameters(), config.lr_d, betas)
        fp16 = parse_precision(config.amp) is Precision.FP16
        self.scaler_g = torch.amp.GradScaler("cuda", enabled=fp16)
        self.scaler_d = torch.amp.GradScaler("cuda", enabled=fp16)
        self.step = 0

    def _modules(self) -> dict[str, nn.Module]:
        """The models by checkpoint key, in the checkpoint's order."""
        modules: dict[str, nn.Module] = {"generator": self.generator,
                                         "generator_ema": self.generator_ema,
                                         "discriminator": self.discriminator}
        if self.encoder is not None and self.encoder_ema is not None:
            modules.update(encoder=self.encoder, encoder_ema=self.encoder_ema)
        return modules

    def models(self) -> dict[str, nn.Module]:
        """``generator``, ``generator_ema``, ``discriminator`` (``encoder``, ``encoder_ema``)."""
        return dict(self._modules())

    def set_lr_factor(self, factor: float) -> None:
        """Both learning rates at ``factor`` times the configured ones (the decay schedule)."""
        for opt, lr in ((self.opt_g, self.config.lr_g), (self.opt_d, self.config.lr_d)):
            for group in opt.param_groups:
                group["lr"] = lr * factor

    def nonfinite_model(self) -> str | None:
        """``"generator"`` or ``"discriminator"`` if its weights hold a NaN/inf, else None."""
        for name, module in (("generator", self.generator),
                             ("discriminator", self.discriminator)):
            if not all(bool(torch.isfinite(p).all()) for p in module.parameters()):
                return name
        return None

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint payload (:func:`geospade.formats.checkpoint.save_checkpoint` adds
        the format tags); tensors on the CPU, everything loadable with ``weights_only``."""
        cfg, data = self.config, self.data
        num_classes, bands = data.scheme.num_classes, len(data.bands)
        payload = {
            "step": self.step, "config": cfg.to_dict(),
            "generator_config": self.generator.config, "scheme": data.scheme.to_dict(),
            "bands": [b.to_dict() for b in data.bands], "chip_size": data.chip_size,
            "generator": _cpu_state(self.generator),
            "generator_ema": _cpu_state(self.generator_ema),
            "discriminator": _cpu_state(self.discriminator),
            "optimizer_g": self.opt_g.state_dict(), "optimizer_d": self.opt_d.state_dict(),
            "scaler_g": self.scaler_g.state_dict(), "scaler_d": self.scaler_d.state_dict(),
            "rng": rng_state(self.device), "vgg": self.vgg,
            CHIPS_IDENTITY_KEY: data.chips_sha256,
            "discriminator_config": discriminator_config(cfg, num_classes, bands,
                                                         data.chip_size),
        }
        if self.encoder is not None and self.encoder_ema is not None:
            payload["encoder"] = _cpu_state(self.encoder)
            payload["encoder_ema"] = _cpu_state(self.encoder_ema)
            payload["encoder_config"] = encoder_config(cfg, bands, data.chip_size)
        return payload

    def load_state_dict(self, state: Mapping[str, Any], source: str | Path | None = None
                        ) -> None:
        """Continue from a checkpoint payload: weights, step, optimisers, scalers, RNG states.

        Checkpoints without scaler states (older ones) keep fresh scalers; without
        ``encoder_ema`` the encoder's EMA starts from the encoder's weights.

        Args:
            state: a payload of :meth:`state_dict` (a loaded checkpoint).
            source: the checkpoint file, for messages.

        Raises:
            GeospadeError: weights that do not fit the models.
        """
        configs = {"discriminator": "discriminator config", "encoder": "encoder config",
                   "encoder_ema": "encoder config"}
        for key, module in self._modules().items():
            if key == "encoder_ema" and key not in state:
                module.load_state_dict(self.encoder.state_dict())
                continue
            load_weights(module, state[key], source, key, configs.get(key, "generator config"))
        self.step = int(state["step"])
        self.opt_g.load_state_dict(state["optimizer_g"])
        self.opt_d.load_state_dict(state["optimizer_d"])
        if "scaler_g" in state:
            self.scaler_g.load_state_dict(state["scaler_g"])
            self.scaler_d.load_state_dict(state["scaler_d"])
        set_rng_state(state["rng"], self.device)


def _frozen_copy(module: nn.Module) -> nn.Module:
    return copy.deepcopy(module).eval().requires_grad_(False)


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


# -- RNG state (tensors and plain values only, for weights_only loading) -----------------------


def rng_state(device: torch.device) -> dict[str, Any]:
    """torch's, numpy's, Python's (and the CUDA device's) RNG states as tensors and lists."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": _lists(random.getstate()),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    """Restore what :func:`rng_state` saved (the CUDA state only on a CUDA device)."""
    torch.set_rng_state(state["torch"].cpu())
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["key"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    random.setstate(_tuples(state["python"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def _lists(value: Any) -> Any:
    """Tuples as lists, recursively (weights_only loading has no tuples of this kind)."""
    if isinstance(value, tuple):
        return [_lists(v) for v in value]
    return value


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value
