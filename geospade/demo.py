"""`geospade demo`: the whole product on real data, in about 5 minutes on 2 CPU cores.

It runs a pipeline installed with geospade (:func:`geospade.pipeline.pipeline_files`; the same
files as ``pipelines/`` in a clone): tile a land cover + imagery pair into 64-px chips, train a
small CLADE generator, synthesize the whole land cover as a COG, and evaluate it against held-out
real chips with both baselines. Rerunning it in the same folder skips the stages that are done.

Two data sets (:data:`DEMO_DATA`):

* ``zion`` (default, ``pipelines/demo.toml``): a crop of Zion National Park installed with
  geospade, Landsat 8 bands 2-5 (uint16) and NLCD 2011 land cover in 8 classes on another grid
  and CRS (``geospade/demo_data/README.md``: source, licence);
* ``landscape`` (``pipelines/demo-landscape.toml``): a generated synthetic land cover + 4-band
  uint8 imagery pair of any size, needing no data (what the tests run).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from geospade.errors import GeospadeError
from geospade.pipeline import PipelineResult, load_config, pipeline_files, run_pipeline

DEMO_DATA: dict[str, str] = {"zion": "demo", "landscape": "demo-landscape"}
"""The demo's data sets (``geospade demo --data``), each the name of the installed pipeline it
runs."""


def demo_config(out: str | Path | None = None,
                overrides: Mapping[str, Mapping[str, Any]] | None = None,
                data: str = "zion") -> dict[str, Any]:
    """The demo's pipeline config, read from the installed pipeline, with ``out`` and per-stage
    overrides applied. Relative paths in it resolve against the current folder.

    Args:
        out: work folder (default: the pipeline's, ``geospade-demo`` in the current folder).
        overrides: ``{stage: {option: value}}`` merged into the stage tables, e.g.
            ``{"train": {"steps": 5}}``; with ``data="landscape"`` also
            ``{"landscape": {"width": 256, "height": 256}}``.
        data: ``zion`` (real data installed with geospade) or ``landscape`` (generated).

    Returns:
        The pipeline config dict.

    Raises:
        GeospadeError: an unknown ``data``, or overrides for a stage its pipeline lacks.
    """
    if data not in DEMO_DATA:
        raise GeospadeError(f"demo data must be one of {', '.join(DEMO_DATA)}, not {data!r}")
    config = load_config(pipeline_files()[DEMO_DATA[data]])
    config["_base"] = str(Path.cwd())
    if out is not None:
        config["out"] = str(out)
    for stage, options in (overrides or {}).items():
        if not isinstance(config.get(stage), dict):
            other = [d for d, name in DEMO_DATA.items()
                     if stage in load_config(pipeline_files()[name])]
            hint = f" (data={other[0]!r} has one)" if other else ""
            raise GeospadeError(f"the {data} demo has no [{stage}] table to override{hint}")
        config[stage].update(options)
    return config


def run_demo(
    out: str | Path | None = None,
    *,
    data: str = "zion",
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    force: str | None = None,
    quiet: bool = False,
    say: Callable[[str], None] | None = None,
    threads: int | None = 1,
) -> PipelineResult:
    """Run the demo pipeline (see :func:`demo_config`).

    Args:
        out: work folder (default: ``geospade-demo``).
        data: ``zion`` (default: real Landsat 8 + NLCD data installed with geospade) or
            ``landscape`` (a generated synthetic landscape; no data needed).
        overrides: per-stage option overrides (see :func:`demo_config`).
        force: rerun from this stage on (``all`` or a stage name).
        quiet: no progress bars or stage messages.
        say: where stage messages go (default: the ``geospade.run`` logger).
        threads: torch CPU threads while the demo runs (None: torch's default). One by default:
            the demo's tiny convolutions gain little from more, and on a busy machine two
            threads made training up to 20x slower (they wait on each other).

    Returns:
        The :class:`~geospade.pipeline.PipelineResult` (paths of every output and the report).
    """
    import torch

    config = demo_config(out, overrides, data)
    if threads is not None and "threads" not in config["train"]:
        # train chooses its own count otherwise (the CPUs free), and another count gives other
        # floating-point sums: the same demo must give the same numbers.
        config["train"] = {**config["train"], "threads": threads}
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return run_pipeline(config, force=force, quiet=quiet, say=say)
    finally:
        torch.set_num_threads(before)


def describe_result(result: PipelineResult) -> str:
    """Where each output is, the usefulness of the model's imagery as training data (TSTR) and
    its realism against both baselines."""
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
    if report and report.get("utility"):
        from geospade.evaluation.utility import utility_lines

        lines += ["", *utility_lines(report["utility"], report["split"])]
    if report:
        w1 = f"W1 ({report.get('dtype', 'source')})"
        lines += ["", f"realism ({report['split']} split, {report['num_chips']} chips):",
                  f"  {'':<16}{w1:>12}{'texture':>10}{'mIoU ratio':>12}"]
        for method in report["methods"]:
            h = headline(report, method)
            cells = [_num(h["wasserstein_source"], 2), _num(h["texture_ratio"], 3),
                     _num(h["miou_ratio"], 3)]
            lines.append(f"  {METHOD_LABELS[method]:<16}{cells[0]:>12}{cells[1]:>10}{cells[2]:>12}")
        lines.append("  (W1 in the imagery's units: lower is better; texture and mIoU ratio: "
                     "1.0 is as real)")
    return "\n".join(lines)


def _num(v: float | None, digits: int) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"
