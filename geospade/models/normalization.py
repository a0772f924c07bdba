"""Class-conditional normalisation layers: SPADE (Park et al. 2019) and CLADE (Tan et al. 2021).

Both normalise activations without parameters (batch or instance statistics) and then modulate
them per pixel with ``x_hat * (1 + gamma) + beta``, where gamma and beta come from the class map:

* SPADE computes them with a small conv net on the one-hot class map resized (nearest) to the
  activation's size: ``relu(conv(onehot)) -> conv -> (gamma, beta)``. The gamma and beta convs are
  stored as one conv with ``2 * num_features`` outputs — the same function as two separate convs,
  but one larger matrix product instead of two smaller ones.
* CLADE looks gamma and beta up per class (a table of ``num_classes x num_features``), which drops
  almost all of SPADE's conditioning FLOPs. https://arxiv.org/abs/2012.04644

Pixels whose class is the ignore index (255) have an all-zero one-hot vector: SPADE sees zeros
there and CLADE uses a fixed zero row (gamma = beta = 0, plain normalisation).

With ``noise_dim > 0`` both also see a noise map (OASIS's 3D noise, Schönfeld et al. 2021,
https://arxiv.org/abs/2012.04781): SPADE concatenates it to the one-hot map before its shared
conv; CLADE, whose lookup is a 1x1 conv on the one-hot map, adds a 1x1 conv of the noise to the
looked-up gamma and beta, which is the same as a 1x1 conv on the concatenated map.
"""

from __future__ import annotations

from enum import Enum

import torch
import torch.nn.functional as F
from torch import nn

from geospade.errors import GeospadeError
from geospade.schemes import IGNORE_INDEX


class NormType(str, Enum):
    """Which class-conditional normalisation the generator uses."""

    SPADE = "spade"
    CLADE = "clade"


class ParamFreeNorm(str, Enum):
    """The parameter-free normalisation applied before the modulation."""

    BATCH = "batch"
    INSTANCE = "instance"


def _enum(cls: type[Enum], value: object, what: str) -> Enum:
    try:
        return cls(value)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in cls)
        raise GeospadeError(f"unknown {what} {value!r} (choose from {choices})") from None


def check_labels(labels: torch.Tensor, num_classes: int) -> None:
    """Raise :class:`GeospadeError` unless ``labels`` is (N, H, W) integer with values in
    ``0..num_classes-1`` or the ignore index 255."""
    if labels.dim() != 3:
        raise GeospadeError(f"class map must have shape (N, H, W), got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise GeospadeError(f"class map must be an integer tensor, got {labels.dtype}")
    bad = ((labels < 0) | (labels >= num_classes)) & (labels != IGNORE_INDEX)
    if bool(bad.any()):
        values = torch.unique(labels[bad])[:8].tolist()
        raise GeospadeError(
            f"class map has values {values} outside 0..{num_classes - 1} (and not the ignore "
            f"index {IGNORE_INDEX})"
        )


def one_hot(labels: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32
            ) -> torch.Tensor:
    """One-hot encode class indices ``(N, H, W)`` to ``(N, num_classes, H, W)``.

    The ignore index (255; in fact any value outside ``0..num_classes-1``) gives an all-zero vector.
    """
    if labels.dim() == 4:  # already one-hot (N, K, H, W)
        return labels.to(dtype)
    out = F.one_hot(class_rows(labels.long(), num_classes), num_classes + 1)[..., :num_classes]
    return out.permute(0, 3, 1, 2).to(dtype).contiguous()


def class_rows(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class indices with every value outside ``0..num_classes-1`` (the ignore index) mapped to
    the extra row ``num_classes``."""
    return torch.where((labels >= 0) & (labels < num_classes), labels, num_classes)


def class_modulate(normalized: torch.Tensor, labels: torch.Tensor, table: torch.Tensor,
                   offset: torch.Tensor | None = None) -> torch.Tensor:
    """``normalized * table[c, :C] + table[c, C:]`` per pixel of class ``c`` (CLADE's
    modulation; ``table`` is ``(num_classes + 1, 2C)``, its last row for the ignore index).

    ``offset`` (N, 2C, h, w), when given, is added to the looked-up scale and shift (the noise
    term of a CLADE layer with ``noise_dim > 0``).
    """
    index = class_rows(labels, table.shape[0] - 1)
    # (N, h, w, 2C) viewed as (N, 2C, h, w): channels-last strides, no copy.
    scale_shift = F.embedding(index, table).permute(0, 3, 1, 2)
    if offset is not None:
        scale_shift = scale_shift + offset
    scale, shift = scale_shift.chunk(2, dim=1)
    return torch.addcmul(shift, normalized, scale)


def noise_offset(noise: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A CLADE layer's noise term: the 1x1 conv ``weight`` (2C, D, 1, 1) of a ``noise`` map
    (N, D, h, w), in ``weight``'s dtype.

    Vectors repeated at every pixel (:func:`noise_map`'s zero-stride expand) give one offset per
    image, (N, 2C, 1, 1), which broadcasts: convolving every pixel instead measured 79 against
    63 ms per forward + backward of the demo's generator (ngf 8, noise_dim 16, bf16, 1 thread;
    58 without noise).
    """
    if noise.stride(-1) == 0 and noise.stride(-2) == 0:
        noise = noise[..., :1, :1]
    return F.conv2d(noise.to(weight.dtype), weight)


def nearest_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize an integer class map ``(N, H, W)`` to ``size`` with nearest neighbour.

    Gives exactly what ``F.interpolate(onehot, size, mode="nearest")`` gives on the one-hot map
    (source pixel ``floor(i * H / h)``), but on the small integer map.
    """
    h, w = size
    big_h, big_w = labels.shape[-2:]
    if (h, w) == (big_h, big_w):
        return labels
    if big_h % h == 0 and big_w % w == 0:
        return labels[..., :: big_h // h, :: big_w // w]
    rows = (torch.arange(h, device=labels.device) * (big_h / h)).floor().long()
    cols = (torch.arange(w, device=labels.device) * (big_w / w)).floor().long()
    return labels[..., rows[:, None], cols[None, :]]


class ClassMaps:
    """The class map of one forward pass, resized and one-hot encoded once per resolution.

    The reference SPADE code resizes the one-hot map in every SPADE layer; a generator forward
    needs each resolution several times, so it is computed once and reused.

    Args:
        labels: class indices (N, H, W).
        num_classes: classes (one-hot channels).
        memory_format: layout of the one-hot maps.
        dtype: dtype of the one-hot maps.
        noise: None, per-image noise vectors (N, D) (the same at every pixel), or a noise map
            (N, D, H, W) at the class map's size (resized with nearest, like the classes).
    """

    def __init__(self, labels: torch.Tensor, num_classes: int,
                 memory_format: torch.memory_format = torch.contiguous_format,
                 dtype: torch.dtype = torch.float32, noise: torch.Tensor | None = None) -> None:
        self.labels = labels
        self.num_classes = num_classes
        self.memory_format = memory_format
        self.dtype = dtype
        self.noise = noise
        self._labels: dict[tuple[int, int], torch.Tensor] = {}
        self._onehot: dict[tuple[int, int], torch.Tensor] = {}
        self._segmap: dict[tuple[int, int], torch.Tensor] = {}

    def labels_at(self, size: tuple[int, int]) -> torch.Tensor:
        """Class indices ``(N, h, w)`` at ``size`` (nearest)."""
        size = (int(size[0]), int(size[1]))
        if size not in self._labels:
            self._labels[size] = nearest_labels(self.labels, size).contiguous()
        return self._labels[size]

    def onehot_at(self, size: tuple[int, int]) -> torch.Tensor:
        """One-hot map ``(N, K, h, w)`` at ``size`` (nearest)."""
        size = (int(size[0]), int(size[1]))
        if size not in self._onehot:
            onehot = one_hot(self.labels_at(size), self.num_classes, self.dtype)
            self._onehot[size] = onehot.contiguous(memory_format=self.memory_format)
        return self._onehot[size]

    def noise_at(self, size: tuple[int, int]) -> torch.Tensor | None:
        """The noise map ``(N, D, h, w)`` at ``size`` in ``dtype`` (None without noise)."""
        if self.noise is None:
            return None
        return noise_map(self.noise, size, self.dtype)

    def segmap_at(self, size: tuple[int, int]) -> torch.Tensor:
        """What SPADE's convs see: the one-hot map at ``size`` with the noise channels appended
        (the one-hot map itself without noise)."""
        if self.noise is None:
            return self.onehot_at(size)
        size = (int(size[0]), int(size[1]))
        if size not in self._segmap:
            both = torch.cat([self.onehot_at(size), self.noise_at(size)], dim=1)
            self._segmap[size] = both.contiguous(memory_format=self.memory_format)
        return self._segmap[size]


def param_free_norm_layer(kind: ParamFreeNorm | str, num_features: int) -> nn.Module:
    """Batch or instance normalisation without affine parameters."""
    kind = _enum(ParamFreeNorm, kind, "param_free_norm")
    if kind is ParamFreeNorm.BATCH:
        return nn.BatchNorm2d(num_features, affine=False)
    return nn.InstanceNorm2d(num_features, affine=False)


def gamma_offset(num_features: int) -> torch.Tensor:
    """``[1] * num_features + [0] * num_features``: added to a (gamma, beta) bias or table it
    gives ``(1 + gamma, beta)``. The 1 rides along with the bias add the convolution (or the
    table lookup) makes anyway instead of costing a pass over gamma: bf16 inference measured 3-5 %
    faster at benchmark configs B and C.
    """
    return torch.cat([torch.ones(num_features), torch.zeros(num_features)])


class SPADE(nn.Module):
    """Spatially-adaptive normalisation: ``norm(x) * (1 + gamma(m)) + beta(m)``.

    Args:
        num_features: channels of the activations ``x``.
        num_classes: classes of the class map (one-hot channels).
        hidden: channels of the shared conv (the reference hard-codes 128).
        param_free_norm: "batch" (default; frozen statistics at inference keep tiles seamless)
            or "instance".
        kernel_size: of the three convs.
        noise_dim: noise channels appended to the one-hot map (0: none).
    """

    def __init__(self, num_features: int, num_classes: int, hidden: int = 128,
                 param_free_norm: ParamFreeNorm | str = ParamFreeNorm.BATCH,
                 kernel_size: int = 3, noise_dim: int = 0) -> None:
        super().__init__()
        self.num_features = num_features
        self.num_classes = num_classes
        self.noise_dim = noise_dim
        self.hidden = hidden
        self.norm = param_free_norm_layer(param_free_norm, num_features)
        pad = kernel_size // 2
        self.mlp_shared = nn.Conv2d(num_classes + noise_dim, hidden, kernel_size, padding=pad)
        # gamma = first num_features outputs, beta = the rest.
        self.mlp_gamma_beta = nn.Conv2d(hidden, 2 * num_features, kernel_size, padding=pad)
        # Not in the state dict: checkpoints keep the reference's parameters.
        self.register_buffer("gamma_offset", gamma_offset(num_features), persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)

    def hidden_features(self, segmap: torch.Tensor) -> torch.Tensor:
        """``relu(mlp_shared(segmap))`` for a one-hot map (with the noise channels appended when
        ``noise_dim > 0``) already at the activation's size."""
        return F.relu(self.mlp_shared(segmap))

    def modulate(self, normalized: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """Apply gamma/beta computed from the shared conv's output ``hidden``."""
        conv = self.mlp_gamma_beta
        bias = conv.bias + self.gamma_offset.to(conv.bias.dtype)
        gamma_1, beta = conv._conv_forward(hidden, conv.weight, bias).chunk(2, dim=1)
        return torch.addcmul(beta, normalized, gamma_1)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        """Normalise ``x`` (N, C, h, w) and modulate it by ``segmap``.

        Args:
            x: activations.
            segmap: one-hot class map (N, K, H, W) of any size (resized with nearest), or class
                indices (N, H, W) with 255 = ignore.
            noise: with ``noise_dim > 0``: (N, D) vectors or an (N, D, H, W) map at
                ``segmap``'s size.

        Returns:
            (N, C, h, w) tensor.
        """
        size = x.shape[-2:]
        if segmap.dim() == 3:
            segmap = one_hot(nearest_labels(segmap, size), self.num_classes, x.dtype)
        elif segmap.shape[-2:] != size:
            segmap = F.interpolate(segmap, size=size, mode="nearest")
        if self.noise_dim or noise is not None:
            check_noise(noise, self.noise_dim)
            segmap = torch.cat([segmap.to(x.dtype), noise_map(noise, size, x.dtype)], dim=1)
        return self.modulate(self.normalize(x), self.hidden_features(segmap.to(x.dtype)))


class CLADE(nn.Module):
    """Class-adaptive normalisation: ``norm(x) * (1 + gamma[c]) + beta[c]`` per class c.

    Args:
        num_features: channels of the activations ``x``.
        num_classes: classes of the class map.
        param_free_norm: "batch" (default) or "instance".
        noise_dim: noise channels (0: none); a 1x1 conv of the noise is added to gamma and beta.
    """

    def __init__(self, num_features: int, num_classes: int,
                 param_free_norm: ParamFreeNorm | str = ParamFreeNorm.BATCH,
                 noise_dim: int = 0) -> None:
        super().__init__()
        self.num_features = num_features
        self.num_classes = num_classes
        self.noise_dim = noise_dim
        self.norm = param_free_norm_layer(param_free_norm, num_features)
        # Row num_classes is the ignore row: zero and never trained (padding_idx).
        self.gamma_beta = nn.Embedding(num_classes + 1, 2 * num_features, padding_idx=num_classes)
        nn.init.normal_(self.gamma_beta.weight, 0.0, 0.02)
        with torch.no_grad():
            self.gamma_beta.weight[num_classes].zero_()
        if noise_dim:
            # The noise columns of the 1x1 conv that the table lookup is on the one-hot map;
            # with N(0, 1) noise its term starts at the table's scale (0.02) for any noise_dim.
            self.noise_gamma_beta = nn.Conv2d(noise_dim, 2 * num_features, 1, bias=False)
            nn.init.normal_(self.noise_gamma_beta.weight, 0.0, 0.02 / noise_dim ** 0.5)
        self.register_buffer("gamma_offset", gamma_offset(num_features), persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)

    def modulate(self, normalized: torch.Tensor, labels: torch.Tensor,
                 noise: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the per-class gamma/beta of ``labels`` (N, h, w) at the activation's size (plus
        the noise term of a ``noise`` map (N, D, h, w) when ``noise_dim > 0``)."""
        table = (self.gamma_beta.weight + self.gamma_offset).to(normalized.dtype)
        offset = None
        if noise is not None:
            offset = noise_offset(noise, self.noise_gamma_beta.weight.to(normalized.dtype))
        return class_modulate(normalized, labels, table, offset)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        """Normalise ``x`` (N, C, h, w) and modulate it by the class map.

        Args:
            x: activations.
            segmap: class indices (N, H, W) (255 = ignore) or a one-hot map (N, K, H, W), any
                size (nearest).
            noise: with ``noise_dim > 0``: (N, D) vectors or an (N, D, H, W) map at
                ``segmap``'s size.

        Returns:
            (N, C, h, w) tensor.
        """
        size = tuple(x.shape[-2:])
        if segmap.dim() == 4:
            valid = segmap.sum(dim=1) > 0
            segmap = torch.where(valid, segmap.argmax(dim=1), IGNORE_INDEX)
        if self.noise_dim or noise is not None:
            check_noise(noise, self.noise_dim)
            noise = noise_map(noise, size, x.dtype)
        return self.modulate(self.normalize(x), nearest_labels(segmap, size), noise)


def check_noise(noise: torch.Tensor | None, noise_dim: int) -> None:
    """Raise :class:`GeospadeError` unless ``noise`` suits a layer of ``noise_dim`` channels:
    None when 0, else (N, noise_dim) vectors or an (N, noise_dim, H, W) map."""
    if noise_dim == 0:
        if noise is not None:
            raise GeospadeError("this model takes no noise (noise_dim is 0)")
        return
    if noise is None or noise.dim() not in (2, 4) or noise.shape[1] != noise_dim:
        shape = None if noise is None else tuple(noise.shape)
        raise GeospadeError(
            f"noise must be (N, {noise_dim}) vectors or an (N, {noise_dim}, H, W) map, "
            f"got {shape}"
        )


def noise_map(noise: torch.Tensor, size: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
    """``noise`` as an (N, D, h, w) map at ``size``: vectors repeated at every pixel, a map
    resized with nearest (the rule of :func:`nearest_labels`)."""
    h, w = int(size[0]), int(size[1])
    if noise.dim() == 2:
        return noise.to(dtype)[:, :, None, None].expand(-1, -1, h, w)
    return nearest_labels(noise, (h, w)).to(dtype)
