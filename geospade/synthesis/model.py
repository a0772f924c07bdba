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
from geospade.formats.checkpoint import GeneratorForm, open_checkpoint
from geospade.models.precision import Precision
from geospade.normalization import BandStats, normalize
from geospade.schemes import ClassScheme

AMP_CHOICES = (Precision.AUTO, Precision.BF16, Precision.NONE)

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
    from geospade.models import resolve_device

    check_seed(seed)
    ckpt = open_checkpoint(checkpoint)
    dev = resolve_device(device)
    amp = resolve_amp(amp, dev)
    generator = ckpt.generator(GeneratorForm.INFERENCE, dev,
                               torch.bfloat16 if amp == "bf16" else None,
                               channels_last=channels_last, fused=fused)
    z = None
    if style is not None and not (generator.use_vae and ckpt.has_encoder):
        raise GeospadeError(f"--style needs a checkpoint with a style encoder; {checkpoint} was "
                            "trained without one (--use-vae)")
    if generator.use_vae:
        if style is not None:
            image = _read_style_image(style, ckpt.bands, ckpt.chip_size)
            z = _style_code(ckpt.style_encoder(dev), image, ckpt.bands, dev)
        else:
            rng = torch.Generator().manual_seed(int(seed))
            z = torch.randn(1, generator.z_dim, generator=rng).to(dev)
    return SynthesisModel(generator, ckpt.scheme, list(ckpt.bands), ckpt.chip_size, dev, amp, z,
                          config=ckpt.config)


def _read_style_image(style: str | Path, bands: Sequence[BandStats], chip_size: int
                      ) -> np.ndarray:
    """A style image's pixels ``(bands, chip_size, chip_size)``, resampled bilinearly."""
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
                return src.read(out_shape=(src.count, chip_size, chip_size),
                                resampling=rasterio.enums.Resampling.bilinear)
    except rasterio.errors.RasterioIOError as exc:
        raise GeospadeError(f"cannot read style image {path}: {first_line(exc)}"
                            ) from None


def _style_code(encoder: torch.nn.Module, image: np.ndarray, bands: Sequence[BandStats],
                device: torch.device) -> torch.Tensor:
    """The style code of ``image``: the encoder's mean (deterministic), shape (1, z_dim)."""
    x = torch.from_numpy(normalize(image, bands))[None].to(device)
    with torch.inference_mode():
        mu, _ = encoder(x)
    return mu.float()
