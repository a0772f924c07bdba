"""The SPADE generator: class map (N, H, W) -> imagery (N, bands, H, W) in [-1, 1].

Architecture after Park et al. 2019 (https://arxiv.org/abs/1903.07291): a 3x3 conv on the class
map downsampled by ``stride`` (or a linear layer on a VAE code z), then SPADE residual blocks with
nearest upsampling between them, widths ``16, 16, 16, 8, 4, 2, 1 (, 1/2)`` x ``ngf``, and a 3x3 conv
to the output bands with tanh.

With ``noise_dim > 0`` (OASIS's 3D noise, Schönfeld et al. 2021, https://arxiv.org/abs/2012.04781)
a noise map is appended to the one-hot class map wherever the generator reads it: the first conv
and every SPADE/CLADE layer. By default each image gets one N(0, 1) vector repeated at every
pixel, so one class map gives many images and tiles of one image share their noise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import Enum
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm as _SpectralNormType
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from geospade.errors import GeospadeError
from geospade.models.normalization import (
    CLADE,
    SPADE,
    ClassMaps,
    NormType,
    ParamFreeNorm,
    _enum,
    check_labels,
    check_noise,
    param_free_norm_layer,
)

INIT_GAIN = 0.02  # xavier-normal gain of every conv/linear, as in the SPADE paper's code release
LEAKY_SLOPE = 0.2  # negative slope of the leaky ReLUs before each conv


class UpsamplingLayers(str, Enum):
    """How many times the generator doubles its first feature map: 5, 6 or 7."""

    NORMAL = "normal"
    MORE = "more"
    MOST = "most"

    @property
    def count(self) -> int:
        return {"normal": 5, "more": 6, "most": 7}[self.value]

    @property
    def stride(self) -> int:
        """How much smaller the first feature map is than the chip: chips are multiples."""
        return 2 ** self.count


def init_weights(module: nn.Module, gain: float = INIT_GAIN) -> nn.Module:
    """Xavier-normal weights (small gain) and zero biases for a conv or linear layer."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.xavier_normal_(module.weight, gain=gain)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    return module


def conv2d(in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
           padding: int = 0, bias: bool = True, spectral_norm: bool = False) -> nn.Module:
    """An initialised ``nn.Conv2d``, optionally spectrally normalised (Miyato et al. 2018)."""
    conv = init_weights(nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                                  padding=padding, bias=bias))
    return _spectral_norm(conv) if spectral_norm else conv


def spectral_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)``; for a spectral-normed conv whose output is smaller than its weight, the
    output is divided by sigma instead of the weight.

    ``conv(x, W / sigma) + b == conv(x, W) / sigma + b`` (convolution is linear in W), values
    and gradients alike, up to float rounding. The low-resolution blocks have 1024x1024x3x3
    weights at ngf 64 and 16x16 activations: dividing the weight (and its gradient) costs more
    than the convolution's output. The power iteration (training mode) and sigma are those of
    the registered parametrization, so state dicts and checkpoints do not change.
    """
    if not parametrize.is_parametrized(conv, "weight"):
        return conv(x)
    weight = conv.parametrizations.weight.original
    n, _, h, w = x.shape
    if n * conv.out_channels * h * w >= weight.numel():
        return conv(x)
    norm = conv.parametrizations.weight[0]
    if not isinstance(norm, _SpectralNormType):
        return conv(x)
    weight_mat = norm._reshape_weight_to_matrix(weight)
    if norm.training:
        norm._power_method(weight_mat, norm.n_power_iterations)
    u = norm._u.clone(memory_format=torch.contiguous_format)
    v = norm._v.clone(memory_format=torch.contiguous_format)
    sigma = torch.vdot(u, torch.mv(weight_mat, v))
    out = conv._conv_forward(x, weight, None) / sigma
    # The bias in the output's dtype: under autocast an fp32 bias would promote a bf16 output.
    return out if conv.bias is None else out + conv.bias.to(out.dtype).view(1, -1, 1, 1)


def is_channels_last(weight: torch.Tensor) -> bool:
    """Whether a conv weight (out, in, kh, kw) is stored channels-last."""
    return weight.dim() == 4 and weight.shape[1] > 1 and weight.stride(1) == 1


def _leaky(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, LEAKY_SLOPE)


class SPADEResBlock(nn.Module):
    """A residual block with class-conditional normalisation before each conv.

    ``out = shortcut(x) + conv_1(act(norm_1(conv_0(act(norm_0(x))))))``; the shortcut is
    ``conv_s(norm_s(x))`` (1x1, no bias) when the channel count changes, else ``x``.

    Args:
        in_channels, out_channels: channels of input and output.
        num_classes: classes of the class map.
        norm: "spade" (conv net on the one-hot map) or "clade" (per-class lookup).
        param_free_norm: "batch" or "instance".
        hidden: channels of SPADE's shared conv.
        spectral_norm: spectral norm on conv_0, conv_1 and conv_s.
        noise_dim: noise channels beside the class map in every normalisation (0: none).
    """

    def __init__(self, in_channels: int, out_channels: int, num_classes: int,
                 norm: NormType | str = NormType.SPADE,
                 param_free_norm: ParamFreeNorm | str = ParamFreeNorm.BATCH,
                 hidden: int = 128, spectral_norm: bool = True, noise_dim: int = 0) -> None:
        super().__init__()
        self.norm_type = _enum(NormType, norm, "norm")
        self.learned_shortcut = in_channels != out_channels
        middle = min(in_channels, out_channels)
        self.conv_0 = conv2d(in_channels, middle, 3, padding=1, spectral_norm=spectral_norm)
        self.conv_1 = conv2d(middle, out_channels, 3, padding=1, spectral_norm=spectral_norm)
        if self.learned_shortcut:
            self.conv_s = conv2d(in_channels, out_channels, 1, bias=False,
                                 spectral_norm=spectral_norm)

        def layer(channels: int) -> nn.Module:
            if self.norm_type is NormType.SPADE:
                spade = SPADE(channels, num_classes, hidden, param_free_norm,
                              noise_dim=noise_dim)
                init_weights(spade.mlp_shared)
                init_weights(spade.mlp_gamma_beta)
                return spade
            return CLADE(channels, num_classes, param_free_norm, noise_dim=noise_dim)

        self.norm_0 = layer(in_channels)
        self.norm_1 = layer(middle)
        if self.learned_shortcut:
            self.norm_s = layer(in_channels)
            # norm_s normalises the same x as norm_0 with no parameters of its own (and, for
            # batch norm, identical running statistics), so it reuses norm_0's x_hat.
            self.norm_s.norm = nn.Identity()
        self.param_free_norm = _enum(ParamFreeNorm, param_free_norm, "param_free_norm")

    def forward(self, x: torch.Tensor, maps: ClassMaps) -> torch.Tensor:
        """Apply the block to ``x`` (N, C_in, h, w) conditioned on the class map ``maps``."""
        size = (x.shape[-2], x.shape[-1])
        x_hat = self.norm_0.normalize(x)
        if self.norm_type is NormType.SPADE:
            # One one-hot map per resolution for all layers (ClassMaps), not one resize each.
            # (Stacking the three shared convs into one conv is the same function but measured
            # 4x slower here: oneDNN handles a 7-channel input with 384 outputs badly.)
            segmap = maps.segmap_at(size).to(x.dtype)

            def modulate(layer: SPADE, h: torch.Tensor) -> torch.Tensor:
                return layer.modulate(h, layer.hidden_features(segmap))
        else:
            labels = maps.labels_at(size)
            noise = maps.noise_at(size)

            def modulate(layer: CLADE, h: torch.Tensor) -> torch.Tensor:
                return layer.modulate(h, labels, noise)
        if self.learned_shortcut:
            x_s = spectral_conv(self.conv_s, modulate(self.norm_s, x_hat))
        else:
            x_s = x
        dx = spectral_conv(self.conv_0, _leaky(modulate(self.norm_0, x_hat)))
        dx = self.norm_1.normalize(dx)
        dx = spectral_conv(self.conv_1, _leaky(modulate(self.norm_1, dx)))
        return x_s + dx


class Generator(nn.Module):
    """SPADE generator.

    Args:
        num_classes: classes of the class map (indices 0..K-1; 255 = ignore).
        out_channels: imagery bands (4 for NAIP).
        ngf: base width; the blocks have 16, 16, 16, 8, 4, 2, 1 (and 1/2 with "most") x ngf.
        num_upsampling_layers: "normal" (5 doublings, stride 32), "more" (6) or "most" (7).
        crop_size: chip size the model is trained on (fixes z's grid when ``use_vae``).
        norm: "spade" or "clade".
        param_free_norm: "batch" or "instance".
        use_vae: input is a code z (from the style encoder, or N(0, 1)) instead of the class map.
        z_dim: size of z.
        spectral_norm: spectral norm on the residual blocks' convs.
        hidden: channels of SPADE's shared conv.
        noise_dim: channels of OASIS-style noise beside the class map (0: none, one class map
            gives one image).
    """

    def __init__(self, num_classes: int, out_channels: int, ngf: int = 64,
                 num_upsampling_layers: UpsamplingLayers | str = UpsamplingLayers.NORMAL,
                 crop_size: int = 256, norm: NormType | str = NormType.SPADE,
                 param_free_norm: ParamFreeNorm | str = ParamFreeNorm.BATCH,
                 use_vae: bool = False, z_dim: int = 256, spectral_norm: bool = True,
                 hidden: int = 128, noise_dim: int = 0) -> None:
        super().__init__()
        ups = _enum(UpsamplingLayers, num_upsampling_layers, "num_upsampling_layers")
        norm = _enum(NormType, norm, "norm")
        pfn = _enum(ParamFreeNorm, param_free_norm, "param_free_norm")
        if num_classes < 1 or num_classes >= 255:
            raise GeospadeError(f"num_classes must be 1..254, got {num_classes}")
        if out_channels < 1:
            raise GeospadeError(f"out_channels must be at least 1, got {out_channels}")
        if ngf < 2 or hidden < 1 or z_dim < 1:
            raise GeospadeError("ngf must be at least 2; hidden and z_dim at least 1")
        if isinstance(noise_dim, bool) or not isinstance(noise_dim, int) or noise_dim < 0:
            raise GeospadeError(f"noise_dim must be an integer >= 0, got {noise_dim!r}")
        self.stride = ups.stride
        if crop_size <= 0 or crop_size % self.stride:
            problem = "must be a positive multiple of" if crop_size <= 0 else "is not a multiple of"
            raise GeospadeError(
                f"crop size {crop_size} {problem} the generator's stride {self.stride}"
            )
        self._config = {
            "num_classes": int(num_classes), "out_channels": int(out_channels), "ngf": int(ngf),
            "num_upsampling_layers": ups.value, "crop_size": int(crop_size), "norm": norm.value,
            "param_free_norm": pfn.value, "use_vae": bool(use_vae), "z_dim": int(z_dim),
            "spectral_norm": bool(spectral_norm), "hidden": int(hidden),
        }
        if noise_dim:  # only when used: a checkpoint without noise stays readable by older versions
            self._config["noise_dim"] = int(noise_dim)
        self.num_classes = num_classes
        self.out_channels = out_channels
        self.use_vae = use_vae
        self.z_dim = z_dim
        self.noise_dim = noise_dim
        self.crop_size = crop_size
        self.first_channels = 16 * ngf
        # Feature maps channels-last (set by to_channels_last; also implied by channels-last
        # weights). A runtime layout choice, not part of the config.
        self.channels_last = False

        if use_vae:
            side = crop_size // self.stride
            self.fc = init_weights(nn.Linear(z_dim, self.first_channels * side * side))
        else:
            self.fc = conv2d(num_classes + noise_dim, self.first_channels, 3, padding=1)

        # (in, out, upsample before the block)
        widths = [(16, 16, False), (16, 16, True), (16, 16, ups is not UpsamplingLayers.NORMAL),
                  (16, 8, True), (8, 4, True), (4, 2, True), (2, 1, True)]
        blocks = [(ngf * i, ngf * o, up) for i, o, up in widths]
        if ups is UpsamplingLayers.MOST:
            blocks.append((ngf, ngf // 2, True))
        self.upsample_before = [up for _, _, up in blocks]
        self.blocks = nn.ModuleList(
            SPADEResBlock(i, o, num_classes, norm, pfn, hidden, spectral_norm, noise_dim)
            for i, o, _ in blocks
        )
        self.conv_img = conv2d(blocks[-1][1], out_channels, 3, padding=1)

    @property
    def config(self) -> dict[str, Any]:
        """Constructor keyword arguments (plain JSON values): ``build_generator(g.config)``."""
        return dict(self._config)

    def forward(self, labels: torch.Tensor, z: torch.Tensor | None = None, *,
                noise: torch.Tensor | None = None, rng: torch.Generator | None = None
                ) -> torch.Tensor:
        """Generate imagery for a class map.

        Args:
            labels: class indices (N, H, W), integer, 255 = ignore; H and W multiples of
                ``stride`` (equal to ``crop_size`` with ``use_vae``).
            z: (N, z_dim) code when ``use_vae``; None draws it from N(0, 1).
            noise: with ``noise_dim > 0``: (N or 1, noise_dim) vectors, each repeated at every
                pixel (see :func:`make_noise`), or an (N or 1, noise_dim, H, W) map; None draws
                one N(0, 1) vector per image from ``rng`` (default: torch's global generator).
            rng: the generator ``noise`` is drawn from when not given.

        Returns:
            (N, out_channels, H, W) in [-1, 1].
        """
        n, size = check_generator_input(labels, self._config, self.stride)
        weight = self.conv_img.weight
        fmt = (torch.channels_last if self.channels_last or is_channels_last(weight)
               else torch.contiguous_format)
        noise = generator_noise(noise, rng, labels, self.noise_dim, weight.device)
        maps = ClassMaps(labels, self.num_classes, memory_format=fmt, dtype=weight.dtype,
                         noise=noise)
        if self.use_vae:
            x = style_input(self.fc, z, n, self.first_channels, size, fmt)
        else:
            x = self.fc(maps.segmap_at(size))
        x = run_blocks(x, maps, self.blocks, self.upsample_before)
        return torch.tanh(self.conv_img(_leaky(x)))


def make_noise(batch: int, noise_dim: int, seed: int | None = None,
               rng: torch.Generator | None = None, device: torch.device | str | None = None
               ) -> torch.Tensor:
    """OASIS-style noise for :meth:`Generator.forward`: one N(0, 1) vector per image,
    ``(batch, noise_dim)``, which the generator repeats at every pixel.

    Drawn on the CPU (the same numbers on every device, e.g. for ``synthesize --seed``) from
    ``torch.Generator().manual_seed(seed)``, or from ``rng``, or (neither given) from torch's
    global generator; then moved to ``device``.

    Args:
        batch: images.
        noise_dim: the generator's ``noise_dim``.
        seed: seed of a fresh generator (same seed, same noise).
        rng: a CPU generator to draw from instead (its state advances).
        device: where the noise goes (default: the CPU).

    Returns:
        float32 tensor (batch, noise_dim).
    """
    if seed is not None and rng is not None:
        raise GeospadeError("give a noise seed or a generator, not both")
    if seed is not None:
        rng = torch.Generator().manual_seed(int(seed))
    noise = torch.randn(batch, noise_dim, generator=rng)
    return noise if device is None else noise.to(device)


def generator_noise(noise: torch.Tensor | None, rng: torch.Generator | None,
                    labels: torch.Tensor, noise_dim: int, device: torch.device
                    ) -> torch.Tensor | None:
    """The noise a generator of ``noise_dim`` uses for ``labels`` (N, H, W): ``noise`` checked
    and broadcast to the batch, or one vector per image drawn from ``rng`` (on ``rng``'s device;
    without one, from torch's global generator on ``device``). None when ``noise_dim`` is 0.
    """
    n, height, width = labels.shape
    if noise is None and noise_dim:
        where = device if rng is None else rng.device
        return torch.randn(n, noise_dim, generator=rng, device=where).to(device)
    check_noise(noise, noise_dim)
    if noise is None:
        return None
    if noise.dim() == 4 and tuple(noise.shape[-2:]) != (height, width):
        raise GeospadeError(f"noise map is {noise.shape[-2]}x{noise.shape[-1]}, the class map "
                            f"{height}x{width}")
    if noise.shape[0] not in (1, n):
        raise GeospadeError(f"noise has {noise.shape[0]} images, the class map {n}")
    return noise.to(device).expand(n, *noise.shape[1:])


def style_input(fc: nn.Linear, z: torch.Tensor | None, n: int, channels: int,
                size: tuple[int, int], memory_format: torch.memory_format) -> torch.Tensor:
    """The first feature map ``(n, channels, *size)`` of a VAE generator from its code ``z``
    (``None``: drawn from N(0, 1)), computed in ``fc``'s dtype."""
    weight = fc.weight
    if z is None:
        z = torch.randn(n, fc.in_features, device=weight.device, dtype=weight.dtype)
    x = fc(z.to(weight.dtype)).view(n, channels, *size)
    return x.contiguous(memory_format=memory_format)


def run_blocks(x: torch.Tensor, maps: ClassMaps,
               blocks: Iterable[Callable[[torch.Tensor, ClassMaps], torch.Tensor]],
               upsample_before: list[bool]) -> torch.Tensor:
    """The residual blocks, each after a nearest 2x upsampling where ``upsample_before``."""
    for up, block in zip(upsample_before, blocks, strict=True):
        if up:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = block(x, maps)
    return x


def check_generator_input(labels: torch.Tensor, config: dict[str, Any], stride: int
                          ) -> tuple[int, tuple[int, int]]:
    """Check a class map for a generator of ``config``; returns the batch size and the size of
    the first feature map.

    Raises:
        GeospadeError: not (N, H, W) integer classes, a side not a multiple of ``stride``, a
            1x1 first map with instance norm, or (VAE) a size other than the crop size.
    """
    check_labels(labels, config["num_classes"])
    n, height, width = labels.shape
    if height % stride or width % stride or height == 0 or width == 0:
        problem = ("must be a positive multiple of" if height == 0 or width == 0
                   else "is not a multiple of")
        raise GeospadeError(
            f"class map size {height}x{width} {problem} the generator's stride {stride}"
        )
    size = (height // stride, width // stride)
    if size == (1, 1) and config["param_free_norm"] == ParamFreeNorm.INSTANCE.value:
        raise GeospadeError(
            f"instance norm needs a first feature map larger than 1x1: use chips of at least "
            f"{2 * stride} px (2 x the generator's stride) or batch norm"
        )
    crop = config["crop_size"]
    if config["use_vae"] and (height, width) != (crop, crop):
        raise GeospadeError(
            f"with use_vae the class map must be {crop}x{crop} (the crop size), got "
            f"{height}x{width}"
        )
    return n, size


def inference_generator(generator: Generator, dtype: torch.dtype | None = None,
                        channels_last: bool = False) -> Generator:
    """A copy of ``generator`` made for inference (``generator`` itself is not changed).

    * eval mode, no gradients;
    * spectral norm folded into the weights: ``W / sigma`` is computed once here instead of at
      every call;
    * with ``dtype`` (e.g. ``torch.bfloat16``), the conv, linear and CLADE-table weights are
      stored in it, so autocast has nothing to cast at each call; batch-norm statistics stay
      fp32;
    * with ``channels_last``, weights and feature maps are channels-last.

    The copy is built from ``generator.config`` and its state dict, on the same device.
    (Removing a parametrization in place would also change the class that the module shares with
    its deep copies, e.g. the training run's EMA generator.)
    """
    copy = build_generator(generator.config)
    copy.load_state_dict(generator.state_dict())
    copy.to(generator.conv_img.bias.device).eval().requires_grad_(False)
    for module in list(copy.modules()):
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    if channels_last:
        copy.channels_last = True
        copy.to(memory_format=torch.channels_last)
    if dtype is not None:
        for module in copy.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear, nn.Embedding)):
                module.to(dtype)
    return copy


def build_generator(config: dict[str, Any]) -> Generator:
    """Rebuild a :class:`Generator` from its ``config`` (e.g. a checkpoint's generator_config)."""
    if not isinstance(config, dict):
        raise GeospadeError("generator config must be a dict of Generator arguments")
    known = Generator.__init__.__code__.co_varnames[1:Generator.__init__.__code__.co_argcount]
    unknown = sorted(set(config) - set(known))
    if unknown:
        raise GeospadeError(f"unknown generator config keys: {', '.join(unknown)}")
    missing = [k for k in ("num_classes", "out_channels") if k not in config]
    if missing:
        raise GeospadeError(f"generator config lacks {', '.join(missing)}")
    return Generator(**config)


__all__ = ["Generator", "SPADEResBlock", "UpsamplingLayers", "build_generator",
           "check_generator_input", "conv2d", "generator_noise", "make_noise",
           "inference_generator", "init_weights", "param_free_norm_layer"]
