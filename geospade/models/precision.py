"""Memory layout and mixed precision for the models (used by training and synthesis).

On CPUs with AMX and on GPUs, bf16 convolutions are fastest with channels-last tensors; the
generator and discriminator keep whatever layout their weights have, so converting the modules
once is enough.
"""

from __future__ import annotations

import contextlib
from enum import Enum

import torch
from torch import nn

from geospade.errors import GeospadeError
from geospade.models.normalization import _enum


class Amp(str, Enum):
    """Autocast precision: off, bfloat16 or float16 (fp16: CUDA only)."""

    OFF = "off"
    BF16 = "bf16"
    FP16 = "fp16"


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


def autocast_context(device: torch.device | str, amp: Amp | str | None = None
                     ) -> contextlib.AbstractContextManager:
    """The autocast context for ``device`` and ``amp`` ("off"/None, "bf16", "fp16").

    Raises:
        GeospadeError: fp16 on a CPU, or bf16 on a device that does not support it.
    """
    amp = Amp.OFF if amp is None else _enum(Amp, amp, "amp")
    device = torch.device(device)
    if amp is Amp.OFF:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp is Amp.BF16 else torch.float16
    if device.type == "cpu":
        if amp is Amp.FP16:
            raise GeospadeError("--amp fp16 needs a CUDA device; on a CPU use --amp bf16")
        if not cpu_supports_bf16():
            raise GeospadeError("--amp bf16: this CPU has no native bf16 support")
    elif device.type == "cuda" and amp is Amp.BF16 and not torch.cuda.is_bf16_supported():
        raise GeospadeError("--amp bf16: this GPU does not support bf16")
    return torch.autocast(device_type=device.type, dtype=dtype)
