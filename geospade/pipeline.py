"""`geospade run CONFIG.toml`: tile -> train -> synthesize -> evaluate from one config file.

A pipeline config is a TOML file (or the same dict) with one table per stage; see
``pipelines/demo.toml`` and ``pipelines/chesapeake.toml``::

    out = "runs/demo"                 # work folder, relative to the config file
    [landscape]                       # optional: make a synthetic land cover + imagery first
    [tile]       landcover, imagery (unless [landscape]) and any geospade.tile option
    [train]      any TrainConfig field
    [synthesize] landcover (default: tile's), edits, cog and any synthesize option
    [evaluate]   split, segmenter_steps, segmenter, batch_size, device, seed, inception_weights

Outputs, under ``out``: ``landscape/`` (if any), ``chips/``, ``run/checkpoint.pt``,
``synthetic.tif``, ``report.json`` + ``report.png``, and ``pipeline-state.json``, which records a
fingerprint per stage: a hash of the stage's settings and of the size and modification time of
each input file (source rasters, the upstream stage's outputs). A stage is skipped when its
outputs exist and its fingerprint is unchanged; once one stage runs, every later stage runs too,
so a changed setting reruns that stage and the ones after it. An interrupted training run with an
unchanged fingerprint is resumed from its last checkpoint rather than restarted.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from geospade.errors import GeospadeError
from geospade.toml_files import read_toml

STAGES = ("landscape", "tile", "train", "synthesize", "evaluate")
STATE_FILE = "pipeline-state.json"
STATE_VERSION = 1
EVALUATE_KEYS = {
    "split", "segmenter", "segmenter_steps", "batch_size", "device", "seed", "inception_weights",
    "figure",
}
TOP_KEYS = {"out", "name", "description", *STAGES}

Say = Callable[[str], None]


@dataclass
class PipelineResult:
    """What :func:`run_pipeline` did.

    Attributes:
        out: the work folder.
        status: per stage, ``ran``, ``resumed`` or ``skipped``.
        paths: where each output is (``landcover``, ``imagery``, ``chips``, ``checkpoint``,
            ``synthetic``, ``report``, ``figure``).
        report: the evaluation report (read back from ``report.json`` when evaluate was skipped).
        seconds: wall time of each stage that ran.
    """

    out: Path
    status: dict[str, str] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)
    report: dict[str, Any] | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a pipeline TOML file; relative paths in it are resolved against its folder."""
    path = Path(path)
    config = read_toml(path, "pipeline config")
    config.setdefault("_base", str(path.resolve().parent))
    return config


# -- fingerprints and state ---------------------------------------------------------------------


def _file_facts(path: Path) -> list[Any]:
    try:
        st = path.stat()
    except FileNotFoundError:
        return [str(path), None, None]
    return [str(path), st.st_size, st.st_mtime_ns]


def fingerprint(settings: Mapping[str, Any], inputs: list[Path]) -> str:
    """Hash of a stage's settings and of the size and mtime of its input files."""
    blob = json.dumps(
        {"settings": settings, "inputs": [_file_facts(p) for p in inputs]},
        sort_keys=True, default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _read_state(out: Path) -> dict[str, Any]:
    try:
        state = json.loads((out / STATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return {"version": STATE_VERSION, "stages": {}}
    if not isinstance(state, dict) or not isinstance(state.get("stages"), dict):
        return {"version": STATE_VERSION, "stages": {}}
    return state


def _write_state(out: Path, state: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{STATE_FILE}.", suffix=".tmp", dir=out)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(state, fh, indent=2)
        os.replace(tmp, out / STATE_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- stages -------------------------------------------------------------------------------------


@dataclass
class Stage:
    """One step of the pipeline: what it reads, what it writes, and how to run it."""

    name: str
    settings: dict[str, Any]
    inputs: list[Path]
    outputs: list[Path]
    run: Callable[[bool], Any]  # argument: resume (train only)

    def complete(self) -> bool:
        return all(p.exists() for p in self.outputs)


def _check_keys(stage: str, section: Mapping[str, Any], allowed: set[str] | None) -> None:
    if allowed is None:  # the stage function takes **kwargs
        return
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise GeospadeError(
            f"unknown option(s) in [{stage}]: {', '.join(unknown)} "
            f"(allowed: {', '.join(sorted(allowed))})"
        )


def _allowed(fn: Callable, exclude: set[str]) -> set[str] | None:
    """Keyword arguments a config table may pass to ``fn`` (None: any, it takes ``**kwargs``)."""
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params} - exclude


def stage_functions() -> dict[str, Callable[..., Any]]:
    """The library functions the stages call (tests replace them with fast stand-ins)."""
    from geospade.evaluation.report import evaluate
    from geospade.landscape import make_landscape
    from geospade.raster.tiling import tile
    from geospade.synthesis.sliding import synthesize
    from geospade.training.loop import train

    return {"landscape": make_landscape, "tile": tile, "train": train, "synthesize": synthesize,
            "evaluate": evaluate}


def _path(base: Path, value: str | os.PathLike) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def build_stages(config: Mapping[str, Any], out: Path, quiet: bool = False) -> list[Stage]:
    """Turn a config dict into the list of stages (validating every section before any work)."""
    base = Path(config.get("_base", "."))
    unknown = sorted(k for k in config if k not in TOP_KEYS and not k.startswith("_"))
    if unknown:
        raise GeospadeError(
            f"unknown section(s) in pipeline config: {', '.join(unknown)} "
            f"(known: out, {', '.join(STAGES)})"
        )
    for name in ("tile", "train", "synthesize", "evaluate"):
        if name not in config or not isinstance(config[name], Mapping):
            raise GeospadeError(f"pipeline config lacks a [{name}] table")
    stages: list[Stage] = []

    # landscape (optional) ------------------------------------------------------------------
    tile_cfg = dict(config["tile"])
    fns = stage_functions()
    if "landscape" in config:
        land = dict(config["landscape"])
        _check_keys("landscape", land,
                    _allowed(fns["landscape"], {"landcover_path", "imagery_path"}))
        folder = out / "landscape"
        lc_path, im_path = folder / "landcover.tif", folder / "imagery.tif"
        if "landcover" in tile_cfg or "imagery" in tile_cfg:
            raise GeospadeError(
                "[tile] landcover/imagery must not be set when [landscape] makes them"
            )

        def run_landscape(resume: bool, land=land, folder=folder) -> None:
            folder.mkdir(parents=True, exist_ok=True)
            tmp_lc = folder / ".landcover.tif.tmp"
            tmp_im = folder / ".imagery.tif.tmp"
            fns["landscape"](tmp_lc, tmp_im, **land)
            os.replace(tmp_im, im_path)
            os.replace(tmp_lc, lc_path)

        stages.append(Stage("landscape", land, [], [lc_path, im_path], run_landscape))
    else:
        for key in ("landcover", "imagery"):
            if key not in tile_cfg:
                raise GeospadeError(f"[tile] needs {key} = PATH (or add a [landscape] table)")
        lc_path = _path(base, tile_cfg["landcover"])
        im_path = _path(base, tile_cfg["imagery"])
    tile_opts = {k: v for k, v in tile_cfg.items() if k not in ("landcover", "imagery")}
    for key in ("scheme", "aoi"):
        if isinstance(tile_opts.get(key), str) and tile_opts[key].endswith(
            (".json", ".gpkg", ".geojson", ".shp")
        ):
            tile_opts[key] = str(_path(base, tile_opts[key]))

    # tile -----------------------------------------------------------------------------------
    _check_keys("tile", tile_opts,
                _allowed(fns["tile"], {"landcover", "imagery", "out", "overwrite", "quiet"}))
    chips = out / "chips"

    def run_tile(resume: bool) -> None:
        fns["tile"](lc_path, im_path, chips, overwrite=True, quiet=quiet, **tile_opts)

    stages.append(Stage("tile", {**tile_opts, "landcover": str(lc_path), "imagery": str(im_path)},
                        [lc_path, im_path], [chips / "manifest.json"], run_tile))

    # train ----------------------------------------------------------------------------------
    from geospade.training.config import TrainConfig

    train_cfg = dict(config["train"])
    TrainConfig.from_dict(train_cfg, source="[train]")  # validate now, before any work
    run_dir = out / "run"
    checkpoint = run_dir / "checkpoint.pt"

    def run_train(resume: bool) -> None:
        if resume:
            fns["train"](chips, run_dir, train_cfg, resume=True, quiet=quiet)
        else:
            fns["train"](chips, run_dir, train_cfg, overwrite=True, quiet=quiet)

    stages.append(Stage("train", train_cfg, [chips / "manifest.json"], [checkpoint], run_train))

    # synthesize -----------------------------------------------------------------------------
    syn_cfg = dict(config["synthesize"])
    syn_lc = _path(base, syn_cfg.pop("landcover")) if "landcover" in syn_cfg else lc_path
    edits = _path(base, syn_cfg.pop("edits")) if syn_cfg.get("edits") else None
    syn_cfg.pop("edits", None)
    _check_keys("synthesize", syn_cfg, _allowed(fns["synthesize"], {
        "checkpoint", "landcover", "out", "edits", "overwrite", "quiet"}))
    synthetic = out / "synthetic.tif"

    def run_synthesize(resume: bool) -> None:
        kwargs = dict(syn_cfg)
        if edits is not None:
            kwargs["edits"] = edits
        fns["synthesize"](checkpoint, syn_lc, synthetic, overwrite=True, quiet=quiet, **kwargs)

    syn_inputs = [checkpoint, syn_lc] + ([edits] if edits is not None else [])
    stages.append(Stage("synthesize", {**syn_cfg, "landcover": str(syn_lc),
                                       "edits": str(edits) if edits else None},
                        syn_inputs, [synthetic], run_synthesize))

    # evaluate -------------------------------------------------------------------------------
    ev_cfg = dict(config["evaluate"])
    _check_keys("evaluate", ev_cfg, EVALUATE_KEYS)
    report_path = out / "report.json"

    def run_evaluate(resume: bool) -> None:
        from geospade.evaluation.segmenter import SegmenterSettings

        opts = dict(ev_cfg)
        steps = opts.pop("segmenter_steps", SegmenterSettings().steps)
        use_seg = opts.pop("segmenter", True)
        weights = opts.pop("inception_weights", None)
        fns["evaluate"](
            checkpoint, chips, out=report_path,
            segmenter=SegmenterSettings(steps=steps) if use_seg else None,
            inception_weights=_path(base, weights) if weights else None,
            overwrite=True, quiet=quiet, **opts,
        )

    ev_outputs = [report_path]
    if ev_cfg.get("figure", True):
        ev_outputs.append(report_path.with_suffix(".png"))
    stages.append(Stage("evaluate", ev_cfg, [checkpoint, chips / "manifest.json"], ev_outputs,
                        run_evaluate))
    return stages


def _default_say(quiet: bool) -> Say:
    def say(message: str) -> None:
        if not quiet:
            print(message, file=sys.stderr, flush=True)

    return say


def run_pipeline(
    config: str | Path | Mapping[str, Any],
    out: str | Path | None = None,
    *,
    force: str | None = None,
    quiet: bool = False,
    say: Say | None = None,
) -> PipelineResult:
    """Run a pipeline, skipping stages whose outputs are complete and fingerprints unchanged.

    Args:
        config: a pipeline TOML path, or the same content as a dict (relative paths are then
            resolved against the current folder, or the dict's ``_base``).
        out: work folder (default: the config's ``out``, relative to the config file).
        force: rerun from this stage on (``all`` or a stage name), whatever the fingerprints say.
        quiet: no progress bars or messages.
        say: where stage messages go (default: stderr, unless ``quiet``).

    Returns:
        A :class:`PipelineResult`.

    Raises:
        GeospadeError: a bad config (unknown sections or options, missing inputs) before any
            work, or any stage's error.
    """
    if isinstance(config, (str, Path)):
        config = load_config(config)
    config = copy.deepcopy(dict(config))
    base = Path(config.get("_base", "."))
    say = say or _default_say(quiet)
    if out is None:
        if "out" not in config:
            raise GeospadeError("pipeline config has no `out` folder; pass one (-o DIR)")
        out = _path(base, config["out"])
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise GeospadeError(f"{out} exists and is not a folder")
    names = [s for s in STAGES if s in config]
    if force is not None and force != "all" and force not in names:
        raise GeospadeError(f"--force takes all or a stage of this pipeline ({', '.join(names)})")
    stages = build_stages(config, out, quiet=quiet)
    made: set[Path] = set()
    for stage in stages:  # inputs no earlier stage makes must exist before any work
        for p in stage.inputs:
            if p not in made and not p.exists():
                raise GeospadeError(f"[{stage.name}] input not found: {p}")
        made.update(stage.outputs)
    out.mkdir(parents=True, exist_ok=True)
    state = _read_state(out)
    result = PipelineResult(out=out)
    rerun = force == "all"
    for stage in stages:
        if force == stage.name:
            rerun = True
        fp = fingerprint(stage.settings, stage.inputs)
        record = state["stages"].get(stage.name, {})
        up_to_date = record.get("fingerprint") == fp and record.get("status") == "done"
        if not rerun and up_to_date and stage.complete():
            result.status[stage.name] = "skipped"
            say(f"[{stage.name}] up to date, skipped")
            continue
        resume = (stage.name == "train" and not rerun and record.get("fingerprint") == fp
                  and record.get("status") == "running" and stage.complete())
        say(f"[{stage.name}] {'resuming' if resume else 'running'}")
        state["stages"][stage.name] = {"fingerprint": fp, "status": "running",
                                       "started": _now()}
        _write_state(out, state)
        start = time.perf_counter()
        stage.run(resume)
        result.seconds[stage.name] = time.perf_counter() - start
        state["stages"][stage.name] = {"fingerprint": fp, "status": "done", "finished": _now()}
        _write_state(out, state)
        result.status[stage.name] = "resumed" if resume else "ran"
        rerun = True  # every later stage runs after this one

    result.paths = _output_paths(stages, out)
    report_path = out / "report.json"
    if report_path.is_file():
        result.report = json.loads(report_path.read_text())
    return result


def _output_paths(stages: list[Stage], out: Path) -> dict[str, Path]:
    by_name = {s.name: s for s in stages}
    paths: dict[str, Path] = {}
    if "landscape" in by_name:
        paths["landcover"], paths["imagery"] = by_name["landscape"].outputs
    else:
        paths["landcover"], paths["imagery"] = by_name["tile"].inputs[:2]
    paths["chips"] = out / "chips"
    paths["checkpoint"] = by_name["train"].outputs[0]
    paths["synthetic"] = by_name["synthesize"].outputs[0]
    paths["report"] = by_name["evaluate"].outputs[0]
    if len(by_name["evaluate"].outputs) > 1:
        paths["figure"] = by_name["evaluate"].outputs[1]
    return paths


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
