"""Reading the PyTorch files users hand over (checkpoints, VGG19 and Inception weights)."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

from geospade.errors import GeospadeError, first_line


def read_torch_file(path: str | Path, what: str, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``, with any unreadable file as one GeospadeError.

    A truncated file, a text file or a raster passed by mistake make torch raise anything from
    ``OSError: [Errno 22]`` to ``KeyError: 101``; the message names the file and what it should
    have been instead.

    Args:
        path: the file.
        what: what the file should be, for the message ("checkpoint", "VGG19 weights").
        map_location: as for ``torch.load``.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise GeospadeError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        if isinstance(exc, pickle.UnpicklingError):
            # torch's weights_only refusal spans a paragraph about its own defaults.
            reason = "not a PyTorch file, or one holding more than tensors and plain values"
        elif isinstance(exc, (RuntimeError, ValueError, zipfile.BadZipFile)):
            reason = first_line(exc, 120)
        else:
            reason = f"truncated or not a PyTorch file: {type(exc).__name__}"
        raise GeospadeError(f"{path} is not a readable {what} ({reason})") from None
