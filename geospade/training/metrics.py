"""What a run measures and where it goes: ``RUN/metrics.csv`` (losses, learning rates, speed;
also TensorBoard when it is installed) and ``RUN/validation.csv`` (per-class scores of the EMA
generator on the val split). Layout of the run folder: docs/design.md, "Run folder".
"""

from __future__ import annotations

import contextlib
import csv
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from geospade.data.chips import ChipDataset
from geospade.training.preview import random_inputs
from geospade.training.validation import mean_colour_error, spectral_distance

METRICS_NAME = "metrics.csv"
VALIDATION_NAME = "validation.csv"


class MetricsLog:
    """``RUN/metrics.csv``, one row per log step, plus TensorBoard (``RUN/tensorboard``) when
    it is installed.

    Args:
        path: the CSV file.
        resume_step: the checkpoint's step when resuming: rows an interrupted run logged after
            it are dropped (None: a new run).
    """

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.path = path
        self.fields: list[str] | None = None
        self.writer = None
        self._tick, self._tick_step = time.perf_counter(), resume_step or 0
        if resume_step is not None and path.is_file():
            with path.open(newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= resume_step]
            if rows:
                self.fields = list(rows[0])
                self._write(rows, "w")
            else:
                path.unlink()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(path.parent / "tensorboard"))
        except Exception:  # noqa: BLE001 - TensorBoard is optional
            self.writer = None

    def start(self, step: int) -> None:
        """Measure speed from now, at ``step``."""
        self._tick, self._tick_step = time.perf_counter(), step

    def rate(self, step: int) -> float:
        """Steps per second since the last call (or :meth:`start`), at ``step``."""
        now = time.perf_counter()
        rate = (step - self._tick_step) / max(now - self._tick, 1e-9)
        self._tick, self._tick_step = now, step
        return rate

    def _write(self, rows: list[dict[str, Any]], mode: str) -> None:
        with self.path.open(mode, newline="") as fh:
            out = csv.DictWriter(fh, fieldnames=self.fields, extrasaction="ignore")
            if mode == "w":
                out.writeheader()
            out.writerows(rows)

    def log(self, row: dict[str, Any]) -> None:
        """Append ``row`` (it has a ``step``; the first row's keys are the columns)."""
        if self.fields is None:
            self.fields = list(row)
            self._write([row], "w")
        else:
            self._write([row], "a")
        if self.writer is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, row["step"])

    def close(self) -> None:
        """Close TensorBoard's writer (the CSV is closed after each row)."""
        if self.writer is not None:
            self.writer.close()


@torch.no_grad()
def validation_summary(ema: nn.Module, val: ChipDataset, step: int, max_chips: int,
                       batch_size: int, device: torch.device,
                       autocast: Callable[[], contextlib.AbstractContextManager],
                       seed: int = 0) -> dict[str, Any]:
    """Per-class spectral distance and mean-colour error of the EMA generator on val chips.

    Args:
        ema: the EMA generator.
        val: the val split.
        step: the training step, recorded in the summary.
        max_chips: use at most this many val chips (the first ones).
        batch_size: chips per generator call.
        device: the generator's device.
        autocast: returns the precision context of the forward passes.
        seed: seed of the generator's random inputs (VAE code, noise): the same draw at every
            validation, and torch's global RNG untouched
            (:func:`geospade.training.preview.random_inputs`).

    Returns:
        ``step``, ``classes``, ``spectral_distance`` and ``mean_colour_error`` (per class, None
        for a class without pixels) and ``mean_spectral_distance``.
    """
    k = val.scheme.num_classes
    masks, reals, fakes = [], [], []
    count = min(max_chips, len(val))
    rng = torch.Generator().manual_seed(seed)
    for start in range(0, count, batch_size):
        items = [val[i] for i in range(start, min(start + batch_size, count))]
        mask = torch.stack([i["mask"] for i in items])
        with autocast():
            fakes.append(ema(mask.to(device), **random_inputs(ema, len(mask), rng, device))
                         .float().cpu())
        masks.append(mask)
        reals.append(torch.stack([i["image"] for i in items]))
    mask, real, fake = torch.cat(masks), torch.cat(reals), torch.cat(fakes)
    distance = spectral_distance(real, fake, mask, k).mean(axis=1)
    colour = mean_colour_error(real, fake, mask, k).mean(axis=1)
    return {
        "step": step, "classes": val.scheme.names,
        "spectral_distance": [None if np.isnan(v) else float(v) for v in distance],
        "mean_colour_error": [None if np.isnan(v) else float(v) for v in colour],
        "mean_spectral_distance": float(np.nanmean(distance)),
    }


def append_validation(path: Path, summary: dict[str, Any]) -> None:
    """Append one row per class with pixels to ``RUN/validation.csv`` (a header first)."""
    new = not path.is_file()
    with path.open("a", newline="") as fh:
        out = csv.writer(fh)
        if new:
            out.writerow(["step", "class", "spectral_distance", "mean_colour_error"])
        for name, d, c in zip(summary["classes"], summary["spectral_distance"],
                              summary["mean_colour_error"], strict=True):
            if d is not None:
                c = float("nan") if c is None else c
                out.writerow([summary["step"], name, f"{d:.6f}", f"{c:.6f}"])
