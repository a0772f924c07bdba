"""The generator as synthesis runs it: loaded from a checkpoint in the precision and layout that
suit the device, with its random inputs fixed for the whole raster.

A VAE generator's style code z and a noise generator's noise (``noise_dim > 0``, one vector that
the generator repeats at every pixel) are drawn once, from the seed, and every window uses them:
overlapping windows see the same inputs, so the raster has no seams, and ``--seed`` picks one of
the images a class map can give, reproducibly. (The shared design asks that noise depend on the
seed and global pixel coordinates only; noise constant over the raster does.)
"""

from __future__ import annotations

import dataclasses
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch

from geospade.errors import ArgumentError, GeospadeError, check_seed, first_line
from geospade.formats.checkpoint import GeneratorForm, open_checkpoint
from geospade.models.precision import Precision, native_precision
from geospade.normalization import BandStats, normalize
from geospade.schemes import ClassScheme

AMP_CHOICES = (Precision.AUTO, Precision.BF16, Precision.NONE)

NOISE_SEED_SALT = 0x6E6F697365
"""The noise is drawn from ``seed ^ NOISE_SEED_SALT`` (:func:`noise_seed`), not from ``seed``
itself, which draws z: two generators with one seed would give the same first numbers."""

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
        config: the checkpoint's training config.
        noise: the noise ``(1, noise_dim)`` shared by all windows (generators with
            ``noise_dim > 0``), else None.
        seed: the seed ``noise`` (and a z not from a style image) was drawn from.
        styled: z is a style image's code (:meth:`with_seed` keeps it).
        step: the training steps of the checkpoint (None: not recorded), for provenance.
    """

    generator: torch.nn.Module
    scheme: ClassScheme
    bands: list[BandStats]
    chip_size: int
    device: torch.device
    amp: str
    z: torch.Tensor | None = None
    config: dict[str, Any] = field(default_factory=dict)
    noise: torch.Tensor | None = None
    seed: int = 0
    styled: bool = False
    step: int | None = None

    def __call__(self, chips: np.ndarray, noise: torch.Tensor | None = None) -> np.ndarray:
        """Class-index chips ``(N, S, S)`` uint8 -> imagery ``(N, bands, S, S)`` float32 in
        [-1, 1].

        Args:
            chips: the class maps.
            noise: for a noise generator, other noise than the model's: ``(1 or N,
                noise_dim)`` (e.g. :func:`~geospade.models.make_noise`), one vector per chip
                to draw N variants at once.

        Raises:
            GeospadeError: ``noise`` for a generator without noise, or of the wrong shape.
        """
        labels = torch.from_numpy(chips).to(self.device, dtype=torch.long)
        z = None if self.z is None else self.z.expand(len(chips), -1)
        noise = self.noise if noise is None else noise
        if self.amp == "bf16":
            ctx = torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        else:
            ctx = torch.autocast(device_type=self.device.type, enabled=False)
        with torch.inference_mode(), ctx:
            out = self.generator(labels, z, noise=noise)
        # Row-major (N, C, H, W) float32 whatever the model's layout: the blending and
        # conversion after it are 4x slower on a channels-last array's band strides.
        return out.to(dtype=torch.float32, memory_format=torch.contiguous_format).cpu().numpy()

    def paint_variant(self, chips: np.ndarray, ids: Sequence[str], seed: int, variant: int
                      ) -> np.ndarray:
        """Variant ``variant`` of each chip as ``geospade generate`` paints it: its noise and
        style code from :func:`variant_inputs` (a style image's code kept), output as
        :meth:`__call__`'s.

        Args:
            chips: the class maps ``(N, S, S)`` uint8.
            ids: their chip IDs in the store (what the codes are drawn from).
            seed: the generate seed.
            variant: the variant index (0, 1, ...).
        """
        noise, z = variant_inputs(self.generator, seed, ids, variant)
        model = self if z is None or self.styled else dataclasses.replace(self, z=z.to(self.device))
        return model(chips, noise)

    def with_seed(self, seed: int) -> SynthesisModel:
        """The same model with its random inputs drawn from ``seed``: another variant of every
        class map (the noise, and a VAE's z unless it came from a style image).

        Raises:
            GeospadeError: a negative seed.
        """
        check_seed(seed)
        z, noise = seeded_inputs(self.generator, seed, self.device)
        return dataclasses.replace(self, z=self.z if self.styled else z, noise=noise, seed=seed)


def noise_seed(seed: int) -> int:
    """The seed the noise of synthesis seed ``seed`` is drawn from (never ``seed`` itself)."""
    return int(seed) ^ NOISE_SEED_SALT


def seeded_inputs(generator: torch.nn.Module, seed: int, device: torch.device
                  ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """A generator's random inputs for one raster, drawn from ``seed``.

    Args:
        generator: the generator (its ``use_vae``, ``z_dim`` and ``noise_dim``).
        seed: the synthesis seed.
        device: where the inputs go.

    Returns:
        ``(z, noise)``: the style code ``(1, z_dim)`` of a VAE generator and the noise ``(1,
        noise_dim)`` of a noise generator, each None where the generator takes none.
    """
    from geospade.models import make_noise

    z = noise = None
    if getattr(generator, "use_vae", False):
        rng = torch.Generator().manual_seed(int(seed))
        z = torch.randn(1, generator.z_dim, generator=rng).to(device)
    noise_dim = getattr(generator, "noise_dim", 0)
    if noise_dim:
        noise = make_noise(1, noise_dim, seed=noise_seed(seed), device=device)
    return z, noise


def paints_variants(generator: torch.nn.Module) -> bool:
    """Whether a generator paints different images of one class map: it takes noise
    (``noise_dim > 0``) or a style code (``use_vae``)."""
    return bool(getattr(generator, "noise_dim", 0) or getattr(generator, "use_vae", False))


def variant_inputs(generator: torch.nn.Module, seed: int, ids: Sequence[str], variant: int
                   ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Noise ``(N, noise_dim)`` and style codes ``(N, z_dim)`` of one variant of each chip,
    drawn on the CPU from a seed of (``seed``, chip ID, ``variant``): the same numbers on every
    device, in every batch and whichever other chips are painted (``geospade generate``, and
    the synthetic chips of TSTR). Each is None where the generator takes none."""
    noise_dim = int(getattr(generator, "noise_dim", 0) or 0)
    z_dim = int(generator.z_dim) if getattr(generator, "use_vae", False) else 0
    if not (noise_dim or z_dim):
        return None, None
    noise, z = [], []
    for chip in ids:
        key = np.random.SeedSequence([int(seed), zlib.crc32(chip.encode()), int(variant)])
        rng = torch.Generator().manual_seed(int(key.generate_state(1)[0]))
        noise.append(torch.randn(1, noise_dim, generator=rng))
        z.append(torch.randn(1, z_dim, generator=rng))
    return (torch.cat(noise) if noise_dim else None), (torch.cat(z) if z_dim else None)


def resolve_amp(amp: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` where the device has native bf16 (GPU, AVX512-BF16/AMX CPU), else
    ``none``; checks that a forced ``bf16`` is supported."""
    if amp not in AMP_CHOICES:
        raise ArgumentError("amp", f"must be one of {', '.join(AMP_CHOICES)}, not {amp!r}")
    native = native_precision(device) is Precision.BF16
    if amp == "auto":
        return "bf16" if native else "none"
    if amp == "bf16" and not native:
        raise ArgumentError("amp", f"bf16: {device} has no bf16 support; use amp='none'")
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
        seed: seed of the style code z of a VAE generator (ignored with ``style``) and of a
            noise generator's noise; both are drawn once, for every window.
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
    if style is not None and not (generator.use_vae and ckpt.has_encoder):
        raise ArgumentError("style", f"needs a checkpoint with a style encoder; {checkpoint} "
                            "was trained without one (use_vae)", others=("use_vae",))
    z, noise = seeded_inputs(generator, seed, dev)
    if style is not None:
        image = _read_style_image(style, ckpt.bands, ckpt.chip_size)
        z = _style_code(ckpt.style_encoder(dev), image, ckpt.bands, dev)
    return SynthesisModel(generator, ckpt.scheme, list(ckpt.bands), ckpt.chip_size, dev, amp, z,
                          config=ckpt.config, noise=noise, seed=seed, styled=style is not None,
                          step=ckpt.step)


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
