"""`geospade demo`: the whole product on a synthetic landscape, in about 3 minutes on 2 CPU cores.

It runs the pipeline of :data:`DEMO_CONFIG` (the same content as ``pipelines/demo.toml``, kept
here so the demo works from an installed package): make a synthetic land cover + 4-band imagery
pair, tile it into 64-px chips, train a small CLADE generator, synthesize the whole demo land
cover as a COG, and evaluate it against held-out real chips with both baselines. Rerunning it in
the same folder skips the stages that are already done.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from geospade.pipeline import PipelineResult, run_pipeline

# Sized for about 3 minutes on two CPU cores (see the comments in pipelines/demo.toml).
DEMO_CONFIG: dict[str, Any] = {
    "out": "geospade-demo",
    "landscape": {
        "width": 512, "height": 512, "scheme": "chesapeake7", "bands": 4, "dtype": "uint8",
        "seed": 0, "feature_scale": 0.5,
    },
    "tile": {"scheme": "chesapeake7", "size": 64, "val_fraction": 0.2, "block": 2, "seed": 0},
    "train": {
        "steps": 1500, "batch_size": 8, "ngf": 8, "ndf": 16, "num_d": 1, "n_layers_d": 3,
        "norm": "clade", "lr_g": 0.0005, "lr_d": 0.001, "ema_decay": 0.99, "lambda_vgg": 0.0,
        "vgg_weights": "off", "checkpoint_every": 500, "preview_every": 500, "val_every": 0,
        "seed": 0,
    },
    "synthesize": {"cog": True},
    "evaluate": {"split": "val", "segmenter_steps": 150, "seed": 0},
}


def demo_config(out: str | Path | None = None,
                overrides: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """A copy of :data:`DEMO_CONFIG` with ``out`` and per-stage overrides applied.

    Args:
        out: work folder (default: ``geospade-demo`` in the current folder).
        overrides: ``{stage: {option: value}}`` merged into the stage tables, e.g.
            ``{"landscape": {"width": 128, "height": 128}, "train": {"steps": 5}}``.

    Returns:
        The pipeline config dict.
    """
    config = copy.deepcopy(DEMO_CONFIG)
    if out is not None:
        config["out"] = str(out)
    for stage, options in (overrides or {}).items():
        config.setdefault(stage, {}).update(options)
    config["_base"] = str(Path.cwd())
    return config


def run_demo(
    out: str | Path | None = None,
    *,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    force: str | None = None,
    quiet: bool = False,
    say: Callable[[str], None] | None = None,
    threads: int | None = 1,
) -> PipelineResult:
    """Run the demo pipeline (see :data:`DEMO_CONFIG`).

    Args:
        out: work folder (default: ``geospade-demo``).
        overrides: per-stage option overrides (see :func:`demo_config`).
        force: rerun from this stage on (``all`` or a stage name).
        quiet: no progress bars or stage messages.
        say: where stage messages go (default: stderr).
        threads: torch CPU threads while the demo runs (None: torch's default). One by default:
            the demo's tiny convolutions gain little from more, and on a busy machine two
            threads made training up to 20x slower (they wait on each other).

    Returns:
        The :class:`~geospade.pipeline.PipelineResult` (paths of every output and the report).
    """
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return run_pipeline(demo_config(out, overrides), force=force, quiet=quiet, say=say)
    finally:
        torch.set_num_threads(before)


def describe_result(result: PipelineResult) -> str:
    """Where each output is, and the headline numbers of the model against both baselines."""
    from geospade.evaluation.summary import METHOD_LABELS, headline

    labels = {
        "landcover": "land cover", "imagery": "real imagery", "chips": "chip store",
        "checkpoint": "checkpoint", "synthetic": "synthetic COG", "report": "report",
        "figure": "figure",
    }
    lines = ["outputs:"]
    for key, label in labels.items():
        if key in result.paths:
            lines.append(f"  {label:<14} {result.paths[key]}")
    if result.seconds:
        lines += ["", "time: " + ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())]
    report = result.report
    if report:
        lines += ["", f"headline ({report['split']} split, {report['num_chips']} chips):",
                  f"  {'':<16}{'W1 (uint8)':>12}{'texture':>10}{'mIoU ratio':>12}"]
        for method in report["methods"]:
            h = headline(report, method)
            cells = [_num(h["wasserstein_source"], 2), _num(h["texture_ratio"], 3),
                     _num(h["miou_ratio"], 3)]
            lines.append(f"  {METHOD_LABELS[method]:<16}{cells[0]:>12}{cells[1]:>10}{cells[2]:>12}")
        lines.append("  (W1: lower is better; texture and mIoU ratio: 1.0 is as real)")
    return "\n".join(lines)


def _num(v: float | None, digits: int) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"
