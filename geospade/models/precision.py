"""Memory layout and mixed precision for the models (used by training and synthesis).

On CPUs with AMX and on GPUs, bf16 convolutions are fastest with channels-last tensors; the
generator and discriminator keep whatever layout their weights have, so converting the modules
once is enough.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from enum import Enum

import torch
from torch import nn

from geospade.errors import ArgumentError, GeospadeError


class Precision(str, Enum):
    """Numeric precision of the forward passes: the values of every ``--amp`` option.

    ``auto`` lets the device decide (synthesis: bf16 where it has native bf16, else none);
    ``none`` is float32; ``bf16`` and ``fp16`` run under autocast (fp16: CUDA only, with
    gradient scaling in training). The values are the strings the CLI takes and that
    ``config.toml`` and checkpoints store.
    """

    AUTO = "auto"
    NONE = "none"
    BF16 = "bf16"
    FP16 = "fp16"

    def __str__(self) -> str:  # "bf16" in messages and f-strings, not "Precision.BF16"
        return self.value


PRECISION_ALIASES = {"off": Precision.NONE}
"""Other spellings :func:`parse_precision` accepts (``autocast_context`` took "off")."""


def parse_precision(value: Precision | str | None,
                    choices: Iterable[Precision] = tuple(Precision),
                    what: str = "amp") -> Precision:
    """``value`` as a :class:`Precision`; ``None`` and "off" mean :attr:`Precision.NONE`.

    Args:
        value: a member, its string value, an alias (:data:`PRECISION_ALIASES`) or None.
        choices: the precisions the caller supports (e.g. no ``auto`` where nothing resolves it).
        what: the option's name, for the message.

    Returns:
        The member.

    Raises:
        GeospadeError: ``value`` is not one of ``choices``.
    """
    choices = tuple(choices)
    if value is None:
        precision: Precision | None = Precision.NONE
    elif isinstance(value, str) and value in PRECISION_ALIASES:
        precision = PRECISION_ALIASES[value]
    else:
        try:
            precision = Precision(value)
        except ValueError:
            precision = None
    if precision not in choices:
        names = ", ".join(repr(c.value) for c in choices)
        shown = value.value if isinstance(value, Precision) else value
        raise GeospadeError(f"unknown {what} {shown!r} (choose from {names})")
    return precision


def to_channels_last(module: nn.Module, parameters: bool = True) -> nn.Module:
    """Compute ``module`` with channels-last feature maps (in place); returns it.

    Generators inside ``module`` start their feature maps channels-last; other layers follow the
    layout of their input. With ``parameters`` the 4-D parameters and buffers are stored
    channels-last too, which suits inference. For training leave them contiguous: fused Adam
    and spectral norm's weight matrix work on contiguous parameters and copy channels-last ones
    at every step (about 5 % of a bf16 iteration at benchmark config B), while the convolutions
    run channels-last either way.
    """
    for layer in module.modules():
        if hasattr(layer, "channels_last"):
            layer.channels_last = True
    return module.to(memory_format=torch.channels_last) if parameters else module


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/"auto" -> cuda when available, else cpu; checks that the device exists."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise GeospadeError(f"unknown device {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise GeospadeError(f"device {device} requested but CUDA is not available")
    return dev


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 instructions (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available()
                    and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def native_precision(device: torch.device | str) -> Precision:
    """What ``auto`` precision means on ``device``: bf16 where it computes bf16 natively (a GPU
    that supports it, a CPU with AVX512-BF16 or AMX), float32 elsewhere (emulated bf16 is slower
    than float32)."""
    device = torch.device(device)
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported()
    else:
        native = device.type == "cpu" and cpu_supports_bf16()
    return Precision.BF16 if native else Precision.NONE


def resolve_precision(value: Precision | str | None, device: torch.device | str,
                      what: str = "amp") -> Precision:
    """``value`` parsed (:func:`parse_precision`), ``auto`` replaced by
    :func:`native_precision` of ``device``."""
    chosen = parse_precision(value, what=what)
    return native_precision(device) if chosen is Precision.AUTO else chosen


def autocast_context(device: torch.device | str, amp: Precision | str | None = None
                     ) -> contextlib.AbstractContextManager:
    """The autocast context for ``device`` and ``amp`` (none/"off"/None, bf16 or fp16).

    Raises:
        GeospadeError: an unknown or unresolved (``auto``) precision, fp16 on a CPU, or bf16 on
            a device that does not support it.
    """
    amp = parse_precision(amp, (Precision.NONE, Precision.BF16, Precision.FP16))
    device = torch.device(device)
    if amp is Precision.NONE:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp is Precision.BF16 else torch.float16
    if device.type == "cpu":
        if amp is Precision.FP16:
            raise ArgumentError("amp", "fp16 needs a CUDA device; on a CPU use amp='bf16'")
        if not cpu_supports_bf16():
            raise ArgumentError("amp", "bf16: this CPU has no native bf16 support")
    elif (device.type == "cuda" and amp is Precision.BF16
          and not torch.cuda.is_bf16_supported()):
        raise ArgumentError("amp", "bf16: this GPU does not support bf16")
    return torch.autocast(device_type=device.type, dtype=dtype)
