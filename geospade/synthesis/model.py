"""The generator as synthesis runs it: loaded from a checkpoint in the precision and layout that
suit the device, with the style code fixed for the whole raster.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch

from geospade.errors import GeospadeError, check_seed, first_line
from geospade.formats.checkpoint import load_checkpoint, load_weights
from geospade.normalization import BandStats, normalize
from geospade.schemes import ClassScheme

AMP_CHOICES = ("auto", "bf16", "none")

# bf16 inference (with channels-last weights) is the default wherever the hardware has native
# bf16: GPUs, and CPUs with AVX512-BF16 or AMX. On this project's AMD EPYC (AVX512-BF16, no AMX)
# benchmarks/bench_synthesize.py measured bf16 + channels-last faster than fp32 for both SPADE and
# CLADE, and tests/test_synthesize.py pins its output within a small tolerance of fp32.


@dataclass
class SynthesisModel:
    """Everything from a checkpoint that synthesis needs, ready to run.

    Args:
        generator: the generator, in eval mode, on ``device``.
        scheme: class scheme of the checkpoint.
        bands: imagery bands (names, dtype, normalisation).
        chip_size: window size in pixels.
        device: torch device.
        amp: "bf16" or "none".
        z: the style code ``(1, z_dim)`` shared by all windows (VAE generators), else None.
    """

    generator: torch.nn.Module
    scheme: ClassScheme
    bands: list[BandStats]
    chip_size: int
    device: torch.device
    amp: str
    z: torch.Tensor | None = None
    config: dict[str, Any] = field(default_factory=dict)

    def __call__(self, chips: np.ndarray) -> np.ndarray:
        """Class-index chips ``(N, S, S)`` uint8 -> imagery ``(N, bands, S, S)`` float32 in
        [-1, 1]."""
        labels = torch.from_numpy(chips).to(self.device, dtype=torch.long)
        z = None if self.z is None else self.z.expand(len(chips), -1)
        if self.amp == "bf16":
            ctx = torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        else:
            ctx = torch.autocast(device_type=self.device.type, enabled=False)
        with torch.inference_mode(), ctx:
            out = self.generator(labels, z)
        # Row-major (N, C, H, W) float32 whatever the model's layout: the blending and
        # conversion after it are 4x slower on a channels-last array's band strides.
        return out.to(dtype=torch.float32, memory_format=torch.contiguous_format).cpu().numpy()


def resolve_amp(amp: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` where the device has native bf16 (GPU, AVX512-BF16/AMX CPU), else
    ``none``; checks that a forced ``bf16`` is supported."""
    if amp not in AMP_CHOICES:
        raise GeospadeError(f"amp (--amp) must be one of {', '.join(AMP_CHOICES)}, not {amp!r}")
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
        fast = supported
    elif device.type == "cpu":
        from geospade.models import cpu_supports_bf16

        supported = fast = cpu_supports_bf16()
    else:
        supported = fast = False
    if amp == "auto":
        return "bf16" if fast else "none"
    if amp == "bf16" and not supported:
        raise GeospadeError(f"--amp bf16: {device} has no bf16 support; use --amp none")
    return amp


def load_synthesis_model(checkpoint: str | Path, device: str | torch.device | None = None,
                         amp: str = "auto", seed: int = 0, style: str | Path | None = None,
                         channels_last: bool | None = None, fused: bool | None = None
                         ) -> SynthesisModel:
    """Load a checkpoint's generator (EMA weights when present) for inference.

    Args:
        checkpoint: checkpoint file written by ``geospade train``.
        device: "cpu", "cuda", "cuda:1" … (default: cuda when available).
        amp: "auto", "bf16" or "none".
        seed: seed of the style code z of a VAE generator (ignored with ``style``).
        style: an image (any GDAL raster with the checkpoint's bands) whose style the output
            takes; needs a checkpoint with a style encoder.
        channels_last: channels-last weights and feature maps (default: with bf16), for the
            eager generator (GPUs, or ``fused=False``).
        fused: on a CPU, the oneDNN-fused generator (:func:`geospade.models.fused_generator`;
            it picks its own layout). Default: where PyTorch has it; ``False``: the eager one.
            (:func:`geospade.models.synthesis_generator` makes the choice.)

    Returns:
        A :class:`SynthesisModel`.
    """
    from geospade.models import build_generator, resolve_device, synthesis_generator

    check_seed(seed)
    data = load_checkpoint(checkpoint)
    dev = resolve_device(device)
    amp = resolve_amp(amp, dev)
    try:
        scheme = ClassScheme.from_dict(data["scheme"])
        bands = [BandStats.from_dict(b) for b in data["bands"]]
        chip_size = int(data["chip_size"])
        gen_config = dict(data["generator_config"])
    except (TypeError, ValueError, KeyError) as exc:
        raise GeospadeError(f"{checkpoint}: invalid checkpoint metadata ({exc})") from None
    if not bands:
        raise GeospadeError(f"{checkpoint}: checkpoint lists no bands")
    generator = build_generator(gen_config)
    if generator.num_classes != scheme.num_classes or generator.out_channels != len(bands):
        raise GeospadeError(
            f"{checkpoint}: generator has {generator.num_classes} classes and "
            f"{generator.out_channels} bands, the checkpoint's scheme and bands "
            f"{scheme.num_classes} and {len(bands)}"
        )
    if chip_size % generator.stride:
        raise GeospadeError(f"{checkpoint}: chip size {chip_size} is not a multiple of the "
                            f"generator's stride {generator.stride}")
    part = "generator_ema" if data.get("generator_ema") else "generator"
    load_weights(generator, data[part], checkpoint, part)
    generator = synthesis_generator(generator, dev, torch.bfloat16 if amp == "bf16" else None,
                                    channels_last=channels_last, fused=fused)
    z = None
    if style is not None and not (generator.use_vae and data.get("encoder")):
        raise GeospadeError(f"--style needs a checkpoint with a style encoder; {checkpoint} was "
                            "trained without one (--use-vae)")
    if generator.use_vae:
        if style is not None:
            # The EMA encoder goes with the EMA generator (older checkpoints: the encoder).
            z = _encode_style(style, data.get("encoder_ema", data["encoder"]),
                              data.get("encoder_config"), bands,
                              chip_size, generator.z_dim, dev)
        else:
            rng = torch.Generator().manual_seed(int(seed))
            z = torch.randn(1, generator.z_dim, generator=rng).to(dev)
    return SynthesisModel(generator, scheme, bands, chip_size, dev, amp, z,
                          config=data.get("config") or {})


def _encode_style(style: str | Path, encoder_state: dict, encoder_config: dict | None,
                  bands: Sequence[BandStats], chip_size: int, z_dim: int,
                  device: torch.device) -> torch.Tensor:
    """The style code of an image: the encoder's mean (deterministic), shape (1, z_dim)."""
    from geospade.models import StyleEncoder

    path = Path(style)
    if not path.is_file():
        raise GeospadeError(f"style image not found: {path}")
    try:
        # Only the pixels matter: a PNG or JPEG without georeferencing is a fine style image.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                if src.count != len(bands):
                    raise GeospadeError(f"style image {path} has {src.count} bands, the "
                                        f"checkpoint {len(bands)}")
                # The image is normalised with the training imagery's value range: values of
                # another dtype (12-bit in uint16 for a uint8 model) would give a meaningless
                # style code.
                if np.dtype(src.dtypes[0]) != np.dtype(bands[0].dtype):
                    raise GeospadeError(
                        f"style image {path} has {src.dtypes[0]} bands, the checkpoint "
                        f"{np.dtype(bands[0].dtype).name}: give imagery like the training "
                        "imagery")
                image = src.read(out_shape=(src.count, chip_size, chip_size),
                                 resampling=rasterio.enums.Resampling.bilinear)
    except rasterio.errors.RasterioIOError as exc:
        raise GeospadeError(f"cannot read style image {path}: {first_line(exc)}"
                            ) from None
    if encoder_config:
        config = dict(encoder_config)
    else:
        # Older checkpoints: the encoder's width and spectral norm are read from its weights.
        keys = [k for k in encoder_state if k.startswith("layers.0.0.")]
        first = next((encoder_state[k] for k in keys if k.endswith("weight.original")
                      or k == "layers.0.0.weight"), None)
        if first is None:
            raise GeospadeError("checkpoint's style encoder has an unknown layout")
        config = {"in_channels": len(bands), "ndf": int(first.shape[0]), "z_dim": z_dim,
                  "crop_size": chip_size,
                  "spectral_norm": any("parametrizations" in k for k in keys)}
    try:
        encoder = StyleEncoder(**config)
    except TypeError as exc:
        raise GeospadeError(f"checkpoint's encoder_config is invalid ({exc})") from None
    try:
        encoder.load_state_dict(encoder_state)
    except RuntimeError as exc:
        raise GeospadeError(f"checkpoint's style encoder does not load ({str(exc)[:120]})"
                            ) from None
    encoder.eval().to(device)
    x = torch.from_numpy(normalize(image, bands))[None].to(device)
    with torch.inference_mode():
        mu, _ = encoder(x)
    return mu.float()
