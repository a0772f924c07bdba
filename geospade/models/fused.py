"""The generator for inference on a CPU, with oneDNN's prepacked and fused convolutions.

:func:`fused_generator` turns a trained :class:`~geospade.models.Generator` into a
:class:`FusedGenerator`: the same function (up to float rounding), computed with fewer passes
over memory. ``geospade synthesize`` runs it on CPUs
(:func:`geospade.synthesis.load_synthesis_model`).

* **Prepacked weights.** Each convolution's weight is reordered once into oneDNN's blocked
  layout, instead of at every call. The low-resolution layers, where the weight is larger than
  the feature map, run 1.5-2.5x faster; in fp32 whole generators about 1.4x.
* **Batch norm folded into SPADE's gamma and beta.** With frozen statistics,
  ``x_hat = a * x + b`` per channel, so ``x_hat * (1 + gamma) + beta`` is ``x * G + B`` with
  ``G = a * (1 + gamma)`` and ``B = b * (1 + gamma) + beta``: both are convolutions of SPADE's
  hidden features with rescaled weights. (CLADE's lookup table is rescaled the same way.) The
  normalisation costs nothing at inference.
* **Post-ops.** oneDNN applies an elementwise step to a convolution's output while it is still
  in cache: the ReLU of SPADE's shared convolution, ``* x`` after G's convolution, ``+ x * G``
  after B's, the residual ``+`` after each block's last convolution and the final tanh.
* **Noise** (generators with ``noise_dim > 0``): SPADE's shared convolution and the first one
  see the noise channels beside the one-hot map, as in the generator. CLADE's noise term, a
  1x1 convolution ``W z`` added to (gamma, beta), is rescaled like the table:
  ``W_G = a * W_gamma`` and ``W_B = W_beta + b * W_gamma``.

Measured on the 2-core AVX512-BF16 CPU of the benchmarks (ms per image, bench_train's configs):
bf16 about 7-15 % faster than :func:`~geospade.models.inference_generator`'s eager form, fp32
about 1.4x. It uses PyTorch's oneDNN operators (``torch.ops.mkldnn._convolution_pointwise``, the
ones ``torch.compile`` emits for frozen CPU models); where a build lacks them,
:func:`fused_available` is false and synthesis falls back to the eager form.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from geospade.errors import GeospadeError
from geospade.models.generator import (
    LEAKY_SLOPE,
    Generator,
    SPADEResBlock,
    check_generator_input,
    generator_noise,
    inference_generator,
    run_blocks,
    style_input,
)
from geospade.models.normalization import (
    CLADE,
    SPADE,
    ClassMaps,
    NormType,
    class_modulate,
    noise_offset,
)


@functools.cache
def fused_available() -> bool:
    """Whether this PyTorch build runs the oneDNN operators :class:`FusedGenerator` needs.

    Checked once per process with a small convolution against ``F.conv2d`` (plain, with a
    unary and with a binary post-op): a build may have the operators but not every post-op on
    every CPU (e.g. Arm).
    """
    try:
        if not (torch.backends.mkldnn.is_available()
                and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
                and hasattr(torch._C._nn, "mkldnn_reorder_conv2d_weight")):
            return False
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(1, 3, 6, 5, generator=gen)
        weight = torch.randn(4, 3, 3, 3, generator=gen)
        bias = torch.randn(4, generator=gen)
        other = torch.randn(1, 4, 6, 5, generator=gen)
        conv = PackedConv(weight, bias, torch.float32, torch.contiguous_format, [1, 3, 6, 5])
        expected = F.conv2d(x, weight, bias, padding=1)
        with torch.no_grad():
            checks = [(conv(x, "relu"), expected.relu()),
                      (conv.binary(x, other, "mul"), expected * other),
                      (conv.binary(x, other, "add"), expected + other)]
        return all(torch.allclose(a, b, rtol=1e-4, atol=1e-4) for a, b in checks)
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


class PackedConv:
    """A stride-1 2-D convolution with its weight prepacked for oneDNN.

    Args:
        weight: (out, in, k, k) float weight (already divided by sigma where spectral norm).
        bias: (out,) or None.
        dtype: compute dtype (float32 or bfloat16).
        memory_format: layout of the feature maps it will see.
        input_size: a typical input shape (N, C, H, W): oneDNN picks the packed layout for it
            (any other shape gives the same values).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype,
                 memory_format: torch.memory_format, input_size: list[int]) -> None:
        k = weight.shape[-1]
        self.padding = [k // 2, k // 2]
        weight = weight.detach().to(dtype).contiguous(memory_format=memory_format)
        self.weight = torch._C._nn.mkldnn_reorder_conv2d_weight(
            weight.to_mkldnn(), self.padding, [1, 1], [1, 1], 1, list(input_size))
        self.bias = None if bias is None else bias.detach().to(dtype)

    def __call__(self, x: torch.Tensor, unary: str = "none") -> torch.Tensor:
        """``unary(conv(x))``; ``unary`` is "none", "relu" or "tanh"."""
        return torch.ops.mkldnn._convolution_pointwise(
            x, self.weight, self.bias, self.padding, [1, 1], [1, 1], 1, unary, [], "")

    def binary(self, x: torch.Tensor, other: torch.Tensor, op: str) -> torch.Tensor:
        """``conv(x) <op> other`` for ``op`` "add" or "mul" (``other`` shaped like the output)."""
        return torch.ops.mkldnn._convolution_pointwise.binary(
            x, other, self.weight, self.bias, self.padding, [1, 1], [1, 1], 1, op, None, None,
            [], "")


def _affine(stats: nn.Module | None, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(a, b)`` with ``norm(x) == a * x + b`` per channel for frozen batch-norm statistics;
    ``(1, 0)`` for instance norm (normalised explicitly at each call)."""
    if isinstance(stats, nn.BatchNorm2d):
        a = (stats.running_var.double() + stats.eps).rsqrt()
        return a, -stats.running_mean.double() * a
    return torch.ones(channels, dtype=torch.float64), torch.zeros(channels, dtype=torch.float64)


class FusedSPADE:
    """One SPADE layer applied to the raw activations: ``x * G(m) + B(m)`` (see module doc)."""

    def __init__(self, layer: SPADE, stats: nn.Module | None, dtype: torch.dtype,
                 memory_format: torch.memory_format, size: list[int]) -> None:
        c = layer.num_features
        a, b = _affine(stats, c)
        w = layer.mlp_gamma_beta.weight.detach().double()
        bias = layer.mlp_gamma_beta.bias.detach().double() + layer.gamma_offset.double()
        w_gamma, w_beta, b_gamma, b_beta = w[:c], w[c:], bias[:c], bias[c:]
        n, _, h, wd = size
        hidden = [n, layer.hidden, h, wd]
        self.shared = PackedConv(layer.mlp_shared.weight, layer.mlp_shared.bias, dtype,
                                 memory_format, [n, layer.mlp_shared.in_channels, h, wd])
        self.scale = PackedConv((w_gamma * a.view(-1, 1, 1, 1)).float(), (b_gamma * a).float(),
                                dtype, memory_format, hidden)
        self.shift = PackedConv((w_beta + w_gamma * b.view(-1, 1, 1, 1)).float(),
                                (b_beta + b_gamma * b).float(), dtype, memory_format, hidden)

    def __call__(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        hidden = self.shared(segmap, "relu")
        return self.shift.binary(hidden, self.scale.binary(hidden, x, "mul"), "add")


class FusedCLADE:
    """One CLADE layer applied to the raw activations, its table (and noise convolution)
    rescaled by the statistics."""

    def __init__(self, layer: CLADE, stats: nn.Module | None, dtype: torch.dtype) -> None:
        c = layer.num_features
        a, b = _affine(stats, c)
        table = layer.gamma_beta.weight.detach().double() + layer.gamma_offset.double()
        gamma_1, beta = table[:, :c], table[:, c:]
        self.table = torch.cat([gamma_1 * a, beta + gamma_1 * b], dim=1).to(dtype)
        self.noise_weight = None
        if layer.noise_dim:
            w = layer.noise_gamma_beta.weight.detach().double()
            w_gamma, w_beta = w[:c], w[c:]
            self.noise_weight = torch.cat([w_gamma * a.view(-1, 1, 1, 1),
                                           w_beta + w_gamma * b.view(-1, 1, 1, 1)]).to(dtype)

    def __call__(self, x: torch.Tensor, labels: torch.Tensor,
                 noise: torch.Tensor | None = None) -> torch.Tensor:
        offset = None if noise is None else noise_offset(noise, self.noise_weight)
        return class_modulate(x, labels, self.table, offset)


class FusedBlock:
    """A :class:`~geospade.models.generator.SPADEResBlock` with fused layers."""

    def __init__(self, block: SPADEResBlock, dtype: torch.dtype,
                 memory_format: torch.memory_format, size: list[int]) -> None:
        n, _, h, w = size
        self.spade = block.norm_type is NormType.SPADE
        stats_0 = block.norm_0.norm
        self.instance = not isinstance(stats_0, nn.BatchNorm2d)
        middle = block.conv_0.out_channels

        def layer(norm: SPADE | CLADE, stats: nn.Module, channels: int):
            if self.spade:
                return FusedSPADE(norm, stats, dtype, memory_format, [n, channels, h, w])
            return FusedCLADE(norm, stats, dtype)

        def conv(c: nn.Conv2d) -> PackedConv:
            return PackedConv(c.weight, c.bias, dtype, memory_format, [n, c.in_channels, h, w])

        in_channels = block.conv_0.in_channels
        self.norm_0 = layer(block.norm_0, stats_0, in_channels)
        self.norm_1 = layer(block.norm_1, block.norm_1.norm, middle)
        self.conv_0, self.conv_1 = conv(block.conv_0), conv(block.conv_1)
        # norm_s normalises with norm_0's statistics (the block shares x_hat).
        self.norm_s = layer(block.norm_s, stats_0, in_channels) if block.learned_shortcut else None
        self.conv_s = conv(block.conv_s) if block.learned_shortcut else None

    def __call__(self, x: torch.Tensor, maps: ClassMaps) -> torch.Tensor:
        size = (x.shape[-2], x.shape[-1])
        # SPADE: the one-hot map (and noise); CLADE: the labels (and the noise map, or None).
        cond = ((maps.segmap_at(size),) if self.spade
                else (maps.labels_at(size), maps.noise_at(size)))
        # Instance norm is computed here; batch norm is folded into the layers.
        x_hat = F.instance_norm(x) if self.instance else x
        x_s = x if self.conv_s is None else self.conv_s(self.norm_s(x_hat, *cond))
        dx = self.conv_0(F.leaky_relu(self.norm_0(x_hat, *cond), LEAKY_SLOPE))
        if self.instance:
            dx = F.instance_norm(dx)
        return self.conv_1.binary(F.leaky_relu(self.norm_1(dx, *cond), LEAKY_SLOPE), x_s, "add")


class FusedGenerator(nn.Module):
    """A generator for CPU inference with oneDNN-fused layers (build it with
    :func:`fused_generator`). Called like the :class:`~geospade.models.Generator` it was made
    from: ``(labels, z=None, *, noise=None, rng=None) -> (N, bands, H, W)`` in [-1, 1], in its
    ``dtype``.

    Its packed weights live outside the module's parameters: it cannot be moved to another
    device, trained or saved; checkpoints keep the generator it was made from.
    """

    def __init__(self, generator: Generator, dtype: torch.dtype, batch_size: int) -> None:
        super().__init__()
        self._config = generator.config
        self.num_classes = generator.num_classes
        self.out_channels = generator.out_channels
        self.use_vae = generator.use_vae
        self.z_dim = generator.z_dim
        self.noise_dim = generator.noise_dim
        self.crop_size = generator.crop_size
        self.stride = generator.stride
        self.first_channels = generator.first_channels
        self.upsample_before = list(generator.upsample_before)
        self.dtype = dtype
        # bf16 convolutions are fastest channels-last, fp32 ones contiguous (measured).
        self.memory_format = (torch.channels_last if dtype == torch.bfloat16
                              else torch.contiguous_format)
        side = self.crop_size // self.stride
        if self.use_vae:
            self.fc = generator.fc.to(dtype)
            self.first_conv = None
        else:
            self.fc = None
            self.first_conv = PackedConv(generator.fc.weight, generator.fc.bias, dtype,
                                         self.memory_format,
                                         [batch_size, generator.fc.in_channels, side, side])
        self.blocks = []
        for up, block in zip(self.upsample_before, generator.blocks, strict=True):
            side = side * 2 if up else side
            channels = block.conv_0.in_channels
            self.blocks.append(FusedBlock(block, dtype, self.memory_format,
                                          [batch_size, channels, side, side]))
        self.conv_img = PackedConv(generator.conv_img.weight, generator.conv_img.bias, dtype,
                                   self.memory_format,
                                   [batch_size, generator.conv_img.in_channels, side, side])
        self.eval().requires_grad_(False)

    @property
    def config(self) -> dict[str, Any]:
        """The source generator's constructor arguments."""
        return dict(self._config)

    def forward(self, labels: torch.Tensor, z: torch.Tensor | None = None, *,
                noise: torch.Tensor | None = None, rng: torch.Generator | None = None
                ) -> torch.Tensor:
        """Generate imagery for a class map (N, H, W); see :meth:`Generator.forward`."""
        n, size = check_generator_input(labels, self._config, self.stride)
        noise = generator_noise(noise, rng, labels, self.noise_dim, torch.device("cpu"))
        maps = ClassMaps(labels, self.num_classes, memory_format=self.memory_format,
                         dtype=self.dtype, noise=noise)
        # Autocast has nothing to do here: every layer already runs in self.dtype.
        with torch.autocast("cpu", enabled=False):
            if self.fc is not None:
                x = style_input(self.fc, z, n, self.first_channels, size, self.memory_format)
            else:
                x = self.first_conv(maps.segmap_at(size))
            x = run_blocks(x, maps, self.blocks, self.upsample_before)
            return self.conv_img(F.leaky_relu(x, LEAKY_SLOPE), "tanh")


def fused_generator(generator: Generator, dtype: torch.dtype | None = None,
                    batch_size: int = 8) -> FusedGenerator:
    """The CPU inference form of ``generator`` (not changed itself), with oneDNN-fused layers.

    Args:
        generator: a trained generator (any mode; its frozen batch-norm statistics are used).
        dtype: torch.float32 (default) or torch.bfloat16 (needs a CPU with bf16).
        batch_size: the batch it will usually see (picks oneDNN's weight layout).

    Raises:
        GeospadeError: the PyTorch build lacks the operators (see :func:`fused_available`).
    """
    if not fused_available():
        raise GeospadeError("this PyTorch build has no oneDNN fused convolutions (use the "
                            "eager generator: inference_generator)")
    dtype = dtype or torch.float32
    # Spectral norm folded, eval mode, fp32 weights on the CPU: the folding is done in fp64/fp32
    # and each packed weight is cast to dtype once.
    base = inference_generator(generator).cpu()
    return FusedGenerator(base, dtype, batch_size)


def synthesis_generator(generator: Generator, device: torch.device | str = "cpu",
                        dtype: torch.dtype | None = None, channels_last: bool | None = None,
                        fused: bool | None = None, batch_size: int = 8) -> nn.Module:
    """The form of ``generator`` that ``geospade synthesize`` runs on ``device``.

    Args:
        generator: a trained generator (not changed).
        device: where it will run.
        dtype: None (fp32) or torch.bfloat16.
        channels_last: layout of the eager form (default: with bf16).
        fused: the oneDNN-fused form (:func:`fused_generator`; CPUs only, it picks its own
            layout). Default: on a CPU where :func:`fused_available`; otherwise the eager
            :func:`~geospade.models.inference_generator` moved to ``device``.
        batch_size: the batch the fused form will usually see.

    Raises:
        GeospadeError: ``fused`` on a device other than a CPU.
    """
    device = torch.device(device)
    if fused is None:
        fused = device.type == "cpu" and fused_available()
    if fused and device.type != "cpu":
        raise GeospadeError("the fused generator runs on CPUs only")
    if fused:
        return fused_generator(generator, dtype, batch_size)
    if channels_last is None:
        channels_last = dtype == torch.bfloat16
    # Made where ``generator`` is (the CPU, for a loaded checkpoint) and then moved.
    return inference_generator(generator, dtype=dtype, channels_last=channels_last).to(device)


__all__ = ["FusedGenerator", "PackedConv", "fused_available", "fused_generator",
           "synthesis_generator"]
