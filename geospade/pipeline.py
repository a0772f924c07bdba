"""`geospade run CONFIG.toml`: tile -> train -> synthesize -> evaluate from one config file.

A pipeline config is a TOML file (or the same dict) with one table per stage; see
``pipelines/demo.toml`` and ``pipelines/chesapeake.toml``::

    out = "runs/demo"                 # work folder, relative to the config file
    [landscape]                       # optional: make a synthetic land cover + imagery first
    [tile]       landcover, imagery (unless [landscape]) and any geospade.tile option
    [train]      any TrainConfig field
    [synthesize] landcover (default: tile's), edits, cog and any synthesize option
    [evaluate]   split, segmenter_steps, segmenter, utility, utility_steps, utility_seeds,
                 augmentation_ratio, variants, batch_size, device, seed, inception_weights

Outputs, under ``out``: ``landscape/`` (if any), ``chips/``, ``run/checkpoint.pt``,
``synthetic.tif``, ``report.json`` + ``report.png``, and ``pipeline-state.json``, which records a
fingerprint per stage: a hash of the stage's settings and of the size and modification time of
each input file (source rasters, the upstream stage's outputs) — not of their content, so a file
that is rewritten or touched counts as changed. A stage is skipped when its outputs exist and its
fingerprint is unchanged; once one stage runs, every later stage runs too, so a changed setting
reruns that stage and the ones after it. An interrupted training run with an unchanged
fingerprint is resumed from its last checkpoint rather than restarted.

Every path a table names (inputs, ``save_landcover``, ``tiles_only``, ``vgg_weights``, …) is
relative to the config file's folder, except in the pipelines installed with geospade
(:func:`pipeline_files`, ``geospade run demo``): their relative paths, ``out`` too, are relative to
the current folder, so nothing is written into the installed package. A path written
``package:demo_data/zion_nlcd8.tif`` names a file installed with geospade (read-only: inputs
only), so the repository's ``pipelines/demo.toml`` and the installed copy are the same file.
Every table is checked before any stage runs: unknown
options, values of the wrong type (against the stage function's signature), and what would only
fail later (an evaluation split the tiling gives no chips, a chip size the generator cannot take,
synthesis options such as a window outside the land cover, ``style`` without ``[train] use_vae``,
a missing weights file).

Nothing a user has is lost (:mod:`geospade.outputs`): ``out`` must be new, empty or a pipeline
work folder (which is continued); no configured input may lie where a stage writes (``chips/``,
``run/``, ``synthetic.tif``, …); and one run at a time holds the work folder's lock.
(docs/design.md, "Pipelines".)
"""

from __future__ import annotations

import copy
import hashlib
import importlib.resources
import inspect
import json
import os
import shutil
import time
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from geospade.atomic import atomic_path
from geospade.errors import ArgumentError, GeospadeError, check_seed, cli_wording
from geospade.formats.chip_store import MANIFEST, read_counts
from geospade.log import get_logger
from geospade.outputs import (
    PIPELINE_FOLDER,
    OutputLock,
    check_not_an_input,
    is_inside,
    is_local,
    parent_of,
    prepare_folder,
    removing_new_folders,
    same_file,
)
from geospade.toml_files import read_toml

STAGES = ("landscape", "tile", "train", "synthesize", "evaluate")
STATE_FILE = "pipeline-state.json"
REPORT_FILE = "report.json"
STATE_VERSION = 1
EVALUATE_KEYS: dict[str, type] = {
    "split": str, "segmenter": bool, "segmenter_steps": int, "batch_size": int, "device": str,
    "seed": int, "inception_weights": str, "figure": bool, "utility": bool, "utility_steps": int,
    "utility_seeds": int, "augmentation_ratio": float, "variants": int,
}
"""The options of an ``[evaluate]`` table and their types (the pipeline maps them onto
:func:`geospade.evaluation.report.evaluate`'s arguments)."""
SPLIT_FRACTIONS = {"val": "val_fraction", "test": "test_fraction", "train": None}
TOP_KEYS = {"out", "name", "description", *STAGES}
PACKAGE_PREFIX = "package:"
"""A path in a config that starts with this names a file installed with geospade (its data):
``package:demo_data/zion_nlcd8.tif``."""

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


def pipeline_files() -> dict[str, Path]:
    """The pipeline configs installed with geospade, by name (``geospade run NAME``).

    Returns:
        ``{name: path}``, e.g. ``{"demo": .../geospade/pipelines/demo.toml, ...}``, sorted.
    """
    folder = _packaged_pipelines()
    return {p.stem: p for p in sorted(folder.glob("*.toml"), key=lambda p: p.stem)}


def _package_root() -> Path:
    """The folder geospade is installed in (or this checkout's ``geospade/``)."""
    return Path(str(importlib.resources.files("geospade")))


def _packaged_pipelines() -> Path:
    return _package_root() / "pipelines"


def find_config(config: str | Path) -> Path:
    """The pipeline TOML that ``config`` names: a file, or else an installed pipeline's name
    (``demo``, ``chesapeake``; see :func:`pipeline_files`).

    Raises:
        GeospadeError: neither a file nor an installed pipeline.
    """
    path = Path(config)
    if path.is_file():
        return path
    packaged = pipeline_files()
    name = path.stem if path.suffix == ".toml" and path.name == str(config) else str(config)
    if name in packaged:
        return packaged[name]
    if path.exists():
        raise GeospadeError(f"pipeline config {config} is not a file")
    raise GeospadeError(f"pipeline config not found: {config} (give a TOML file or an installed "
                        f"pipeline: {', '.join(packaged)})")


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a pipeline TOML file.

    Relative paths in it are resolved against its folder, or, for a pipeline installed with
    geospade (:func:`pipeline_files`), against the current folder: its work folder goes there,
    never into the installed package.
    """
    path = Path(path)
    config = read_toml(path, "pipeline config")
    installed = path.resolve().parent == _packaged_pipelines().resolve()
    config.setdefault("_base", str(Path.cwd() if installed else path.resolve().parent))
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
    with atomic_path(out / STATE_FILE) as tmp:
        tmp.write_text(json.dumps(state, indent=2))


# -- stages -------------------------------------------------------------------------------------


@dataclass
class Stage:
    """One step of the pipeline: what it reads, what it writes, and how to run it.

    Attributes:
        inputs: the files whose size and mtime go into the fingerprint (also an earlier
            stage's outputs).
        outputs: the files that exist once the stage is complete.
        sources: ``(what, path)`` of the files the user's config names for the stage to read
            (none of them is ever written: see :func:`check_outputs_spare_sources`).
        writes: every file or folder the stage replaces (default: ``outputs``).
    """

    name: str
    settings: dict[str, Any]
    inputs: list[Path]
    outputs: list[Path]
    run: Callable[[bool], Any]  # argument: resume (train only)
    sources: list[tuple[str, Path]] = field(default_factory=list)
    writes: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.writes = self.writes or list(self.outputs)

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


def _check_types(stage: str, section: Mapping[str, Any], types_: Mapping[str, Any]) -> None:
    """Each option's value against its type (options without a known type are not checked)."""
    for key, value in section.items():
        expected = types_.get(key)
        if expected is not None and not _is_a(value, expected):
            raise GeospadeError(f"[{stage}]: {key} must be {_type_name(expected)}, not {value!r}")


def _is_a(value: Any, tp: Any) -> bool:
    """Whether a config value fits a type annotation (paths are strings in TOML)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_is_a(value, t) for t in args)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is Path:
        return isinstance(value, (str, os.PathLike))
    if origin in (tuple, list, Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(map(_is_a, value, args))
        return not args or all(_is_a(v, args[0]) for v in value)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True  # Any, callables, …: left to the stage function


def _type_name(tp: Any) -> str:
    """``int``, ``str or list of float``, … (None is left out: TOML has no null)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        names = dict.fromkeys(_type_name(t) for t in args if t is not type(None))
        return " or ".join(names)
    if tp is Path:
        return "str"
    if origin in (tuple, list, Sequence):
        return f"list of {_type_name(args[0])}" if args else "list"
    return getattr(tp, "__name__", str(tp))


def _parameter_types(fn: Callable) -> dict[str, Any]:
    """The annotated types of ``fn``'s arguments (empty for a function without annotations)."""
    hints = typing.get_type_hints(fn)
    hints.pop("return", None)
    return hints


def _default(fn: Callable, name: str) -> Any:
    """``fn``'s default for argument ``name`` (None when it has no such argument or default)."""
    param = inspect.signature(fn).parameters.get(name)
    return None if param is None or param.default is param.empty else param.default


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
    """``value`` relative to the config file's folder (GDAL virtual paths and URLs as given;
    ``package:NAME`` in the installed package, see :func:`packaged_path`)."""
    if str(value).startswith(PACKAGE_PREFIX):
        return packaged_path(str(value))
    if not is_local(value):
        return Path(value)
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def packaged_path(value: str) -> Path:
    """The file a ``package:RELATIVE/PATH`` config value names, in the installed package.

    Raises:
        GeospadeError: an empty path, or one that leaves the package (``..``, absolute).
    """
    rest = value[len(PACKAGE_PREFIX):] if value.startswith(PACKAGE_PREFIX) else value
    root = _package_root()
    path = root / rest
    if not rest or Path(rest).is_absolute() or not is_inside(path, root) or path == root:
        raise GeospadeError(f"{value!r} does not name a file installed with geospade "
                            f"(write {PACKAGE_PREFIX}FOLDER/FILE, e.g. "
                            f"{PACKAGE_PREFIX}demo_data/zion_nlcd8.tif)")
    return path


def _output_path(base: Path, value: str | os.PathLike, what: str) -> Path:
    """An output path of the config (never a ``package:`` path: installed files are read-only
    inputs)."""
    if str(value).startswith(PACKAGE_PREFIX):
        raise GeospadeError(f"{what} cannot be a {PACKAGE_PREFIX} path ({value}): files "
                            "installed with geospade are inputs only; give a folder of yours")
    return _path(base, value)


def _scheme_path(base: Path, value: Any) -> Any:
    """A ``scheme`` option: a built-in name as given, a scheme file relative to the config."""
    from geospade.schemes import BUILTIN_SCHEMES

    if not isinstance(value, (str, os.PathLike)) or str(value).lower() in BUILTIN_SCHEMES:
        return value
    return str(_path(base, value))


@dataclass(frozen=True)
class _Plan:
    """What every stage builder needs: where paths are relative to, the work folder, and the
    stage functions.

    Attributes:
        base: the config file's folder (every path a table names is relative to it).
        out: the work folder.
        quiet: no progress bars in the stages.
        fns: the stage functions (:func:`stage_functions`).
    """

    base: Path
    out: Path
    quiet: bool
    fns: dict[str, Callable[..., Any]]

    @property
    def chips(self) -> Path:
        return self.out / "chips"

    @property
    def run_dir(self) -> Path:
        return self.out / "run"

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / "checkpoint.pt"


@dataclass(frozen=True)
class _Rasters:
    """The land cover and imagery the tile stage reads.

    Attributes:
        landcover, imagery: their paths.
        sources: ``(what, path)`` of those the config names (none when ``[landscape]`` makes
            them).
        landscape_size: ``(width, height)`` of a land cover ``[landscape]`` makes; None when
            the config names one.
    """

    landcover: Path
    imagery: Path
    sources: list[tuple[str, Path]]
    landscape_size: tuple[int, int] | None = None


def build_stages(config: Mapping[str, Any], out: Path, quiet: bool = False) -> list[Stage]:
    """Turn a config dict into the list of stages (validating every section before any work).

    Every path a table names is relative to the config file's folder (``config["_base"]``).
    The tables are checked in stage order (``[evaluate]`` with ``[train]``: its split is what
    training must find chips for), so the first error is the earliest stage's.

    Args:
        config: the pipeline config (see :func:`load_config`).
        out: the work folder.
        quiet: no progress bars in the stages.

    Returns:
        The stages in the order they run: ``landscape`` (when configured), ``tile``, ``train``,
        ``synthesize``, ``evaluate``.
    """
    _check_sections(config)
    plan = _Plan(Path(config.get("_base", ".")), out, quiet, stage_functions())
    tile_cfg = dict(config["tile"])
    _check_types("tile", tile_cfg, _parameter_types(plan.fns["tile"]))
    stages: list[Stage] = []
    if "landscape" in config:
        landscape, rasters = _landscape_stage(plan, dict(config["landscape"]), tile_cfg)
        stages.append(landscape)
    else:
        rasters = _given_rasters(plan, tile_cfg)
    tile_stage, tile_opts = _tile_stage(plan, tile_cfg, rasters)
    chip_size = tile_opts.get("size", _default(plan.fns["tile"], "size"))
    train_stage, use_vae = _train_stage(plan, config, tile_opts, chip_size)
    synthesize_stage = _synthesize_stage(plan, dict(config["synthesize"]), rasters, chip_size,
                                         use_vae)
    return [*stages, tile_stage, train_stage, synthesize_stage,
            _evaluate_stage(plan, dict(config["evaluate"]))]


def _check_sections(config: Mapping[str, Any]) -> None:
    """No unknown top-level key, and a table for each stage that is not optional."""
    unknown = sorted(k for k in config if k not in TOP_KEYS and not k.startswith("_"))
    if unknown:
        raise GeospadeError(
            f"unknown section(s) in pipeline config: {', '.join(unknown)} "
            f"(known: out, {', '.join(STAGES)})"
        )
    for name in ("tile", "train", "synthesize", "evaluate"):
        if name not in config or not isinstance(config[name], Mapping):
            raise GeospadeError(f"pipeline config lacks a [{name}] table")


def _landscape_stage(plan: _Plan, land: dict[str, Any], tile_cfg: Mapping[str, Any]
                     ) -> tuple[Stage, _Rasters]:
    """The optional ``[landscape]`` stage, which makes the rasters tile reads."""
    make = plan.fns["landscape"]
    _check_keys("landscape", land, _allowed(make, {"landcover_path", "imagery_path"}))
    _check_types("landscape", land, _parameter_types(make))
    if "scheme" in land:
        land["scheme"] = _scheme_path(plan.base, land["scheme"])
    size = (land.get("width", _default(make, "width")),
            land.get("height", _default(make, "height")))
    folder = plan.out / "landscape"
    rasters = _Rasters(folder / "landcover.tif", folder / "imagery.tif", [], size)
    if "landcover" in tile_cfg or "imagery" in tile_cfg:
        raise GeospadeError("[tile] landcover/imagery must not be set when [landscape] makes them")

    def run(resume: bool) -> None:
        created = not folder.exists()
        folder.mkdir(parents=True, exist_ok=True)
        try:
            # Each file is renamed into place only once both are written (the imagery first).
            with atomic_path(rasters.landcover) as tmp_lc, atomic_path(rasters.imagery) as tmp_im:
                make(tmp_lc, tmp_im, **land)
        except BaseException:
            # No half-made landscape: no folder made for it either.
            if created and not any(folder.iterdir()):
                folder.rmdir()
            raise

    sources = _file_sources("landscape", land, ("scheme",))
    stage = Stage("landscape", land, [p for _, p in sources],
                  [rasters.landcover, rasters.imagery], run, sources)
    return stage, rasters


def _given_rasters(plan: _Plan, tile_cfg: Mapping[str, Any]) -> _Rasters:
    """The land cover and imagery ``[tile]`` names (without a ``[landscape]``)."""
    for key in ("landcover", "imagery"):
        if key not in tile_cfg:
            raise GeospadeError(f"[tile] needs {key} = PATH (or add a [landscape] table)")
    landcover = _path(plan.base, tile_cfg["landcover"])
    imagery = _path(plan.base, tile_cfg["imagery"])
    return _Rasters(landcover, imagery,
                    [("[tile] landcover", landcover), ("[tile] imagery", imagery)])


def _tile_stage(plan: _Plan, tile_cfg: Mapping[str, Any], rasters: _Rasters
                ) -> tuple[Stage, dict[str, Any]]:
    """The tile stage, and its options (paths resolved) that later stages check against."""
    opts = {k: v for k, v in tile_cfg.items() if k not in ("landcover", "imagery")}
    if "scheme" in opts:
        opts["scheme"] = _scheme_path(plan.base, opts["scheme"])
    if isinstance(opts.get("aoi"), (str, os.PathLike)):
        opts["aoi"] = str(_path(plan.base, opts["aoi"]))
    files = _file_sources("tile", opts, ("scheme", "aoi"))
    _check_keys("tile", opts,
                _allowed(plan.fns["tile"], {"landcover", "imagery", "out", "overwrite", "quiet"}))
    lc_path, im_path, chips = rasters.landcover, rasters.imagery, plan.chips

    def run(resume: bool) -> None:
        plan.fns["tile"](lc_path, im_path, chips, overwrite=True, quiet=plan.quiet, **opts)

    settings = {**opts, "landcover": str(lc_path), "imagery": str(im_path)}
    stage = Stage("tile", settings, [lc_path, im_path, *(p for _, p in files)],
                  [chips / MANIFEST], run, rasters.sources + files, writes=[chips])
    return stage, opts


def _train_stage(plan: _Plan, config: Mapping[str, Any], tile_opts: Mapping[str, Any],
                 chip_size: Any) -> tuple[Stage, bool]:
    """The train stage (``[evaluate]`` is checked here already: its split is what training must
    find chips for), and whether it trains a style encoder."""
    from geospade.training.config import TrainConfig

    train_cfg = dict(config["train"])
    train_config = TrainConfig.from_dict(train_cfg, source="[train]")  # validate before any work
    _check_chip_size(chip_size, train_config)
    sources: list[tuple[str, Path]] = []
    if train_config.vgg_weights not in ("auto", "off"):
        train_cfg["vgg_weights"] = str(_path(plan.base, train_config.vgg_weights))
        if train_config.lambda_vgg > 0:  # read (and so needed) only then
            sources.append(("[train] vgg_weights", Path(train_cfg["vgg_weights"])))
    split = _check_evaluate_table(plan, dict(config["evaluate"]), tile_opts)
    chips, run_dir = plan.chips, plan.run_dir

    def run(resume: bool) -> None:
        _check_split_has_chips(chips, split)  # tiling may still have given it no chips
        if resume:
            plan.fns["train"](chips, run_dir, train_cfg, resume=True, quiet=plan.quiet)
        else:
            plan.fns["train"](chips, run_dir, train_cfg, overwrite=True, quiet=plan.quiet)

    stage = Stage("train", train_cfg, [chips / MANIFEST, *(p for _, p in sources)],
                  [plan.checkpoint], run, sources, writes=[run_dir])
    return stage, train_config.use_vae


def _check_evaluate_table(plan: _Plan, ev_cfg: Mapping[str, Any], tile_opts: Mapping[str, Any]
                          ) -> str:
    """The ``[evaluate]`` options, and its split against the tiling; returns the split."""
    _check_keys("evaluate", ev_cfg, set(EVALUATE_KEYS))
    _check_types("evaluate", ev_cfg, EVALUATE_KEYS)
    split = ev_cfg.get("split", _default(plan.fns["evaluate"], "split"))
    _check_evaluate(ev_cfg, split, tile_opts, plan.fns["tile"])
    return split


def _synthesize_stage(plan: _Plan, syn_cfg: dict[str, Any], rasters: _Rasters, chip_size: Any,
                      use_vae: bool) -> Stage:
    """The synthesize stage; its options are checked as synthesize would check them."""
    synthesize = plan.fns["synthesize"]
    _check_types("synthesize", syn_cfg, _parameter_types(synthesize))
    sources: list[tuple[str, Path]] = []
    if "landcover" in syn_cfg:
        landcover = _path(plan.base, syn_cfg.pop("landcover"))
        made_here = rasters.landscape_size is not None and same_file(landcover,
                                                                     rasters.landcover)
        if not made_here:
            sources.append(("[synthesize] landcover", landcover))
    else:
        landcover = rasters.landcover
    edits = _path(plan.base, syn_cfg.pop("edits")) if syn_cfg.get("edits") else None
    syn_cfg.pop("edits", None)
    if edits is not None:
        sources.append(("[synthesize] edits", edits))
    if isinstance(syn_cfg.get("style"), (str, os.PathLike)):
        syn_cfg["style"] = _path(plan.base, syn_cfg["style"])
    for key in ("save_landcover", "tiles_only"):
        if isinstance(syn_cfg.get(key), (str, os.PathLike)):
            syn_cfg[key] = _output_path(plan.base, syn_cfg[key], f"[synthesize] {key}")
    sources += _file_sources("synthesize", syn_cfg, ("style",))
    _check_keys("synthesize", syn_cfg, _allowed(synthesize, {
        "checkpoint", "landcover", "out", "edits", "overwrite", "quiet"}))
    synthetic, checkpoint = plan.out / "synthetic.tif", plan.checkpoint
    check_synthesis_options(syn_cfg, edits, chip_size, use_vae, synthetic)
    check_synthesis_area(syn_cfg.get("window"), syn_cfg.get("bbox"), landcover,
                         rasters.landscape_size if landcover == rasters.landcover else None)

    def run(resume: bool) -> None:
        kwargs = dict(syn_cfg)
        if edits is not None:
            kwargs["edits"] = edits
        synthesize(checkpoint, landcover, synthetic, overwrite=True, quiet=plan.quiet, **kwargs)

    inputs = [checkpoint, landcover] + [p for what, p in sources
                                        if what != "[synthesize] landcover"]
    outputs = [syn_cfg["tiles_only"] if syn_cfg.get("tiles_only") else synthetic]
    if syn_cfg.get("save_landcover"):
        outputs.append(syn_cfg["save_landcover"])
    settings = {**syn_cfg, "landcover": str(landcover), "edits": str(edits) if edits else None}
    return Stage("synthesize", settings, inputs, outputs, run, sources)


def _evaluate_stage(plan: _Plan, ev_cfg: dict[str, Any]) -> Stage:
    """The evaluate stage (its table was checked with train's)."""
    report_path = plan.out / REPORT_FILE
    weights = (_path(plan.base, ev_cfg["inception_weights"]) if ev_cfg.get("inception_weights")
               else None)
    sources = [("[evaluate] inception_weights", weights)] if weights is not None else []
    checkpoint, chips = plan.checkpoint, plan.chips

    def run(resume: bool) -> None:
        from geospade.evaluation.segmenter import SegmenterSettings

        opts = dict(ev_cfg)
        steps = opts.pop("segmenter_steps", SegmenterSettings().steps)
        use_seg = opts.pop("segmenter", True)
        opts.pop("inception_weights", None)
        utility = _utility_settings(opts)
        plan.fns["evaluate"](
            checkpoint, chips, out=report_path,
            segmenter=SegmenterSettings(steps=steps) if use_seg else None,
            inception_weights=weights, overwrite=True, quiet=plan.quiet, **utility, **opts,
        )

    outputs = [report_path]
    if ev_cfg.get("figure", True):
        outputs.append(report_path.with_suffix(".png"))
    return Stage("evaluate", ev_cfg, [checkpoint, chips / MANIFEST, *(p for _, p in sources)],
                 outputs, run, sources)


def _utility_settings(opts: dict[str, Any]) -> dict[str, Any]:
    """Pop the TSTR keys of an ``[evaluate]`` table: ``{"utility": UtilitySettings or None}``, or
    ``{}`` when the table sets none (evaluate's default then applies)."""
    keys = ("utility", "utility_steps", "utility_seeds", "augmentation_ratio", "variants")
    given = {key: opts.pop(key) for key in keys if key in opts}
    if not given:
        return {}
    if not given.get("utility", True):
        return {"utility": None}
    from geospade.evaluation.utility import DEFAULT_UTILITY as D
    from geospade.evaluation.utility import UtilitySettings

    return {"utility": UtilitySettings(
        steps=given.get("utility_steps", D.steps),
        seeds=tuple(range(given.get("utility_seeds", len(D.seeds)))),
        augmentation_ratio=given.get("augmentation_ratio", D.augmentation_ratio),
        variants=given.get("variants", D.variants))}


def _file_sources(stage: str, options: Mapping[str, Any], keys: Sequence[str]
                  ) -> list[tuple[str, Path]]:
    """``(what, path)`` of the options among ``keys`` that name a file (not a built-in name)."""
    from geospade.schemes import BUILTIN_SCHEMES

    found = []
    for key in keys:
        value = options.get(key)
        if not isinstance(value, (str, os.PathLike)):
            continue
        if key == "scheme" and str(value).lower() in BUILTIN_SCHEMES:
            continue
        found.append((f"[{stage}] {key}", Path(value)))
    return found


def _check_chip_size(size: Any, train_config: Any) -> None:
    """The generator only takes chips whose side is a multiple of its stride (train fails else)."""
    from geospade.models.generator import UpsamplingLayers

    layers = train_config.num_upsampling_layers
    stride = UpsamplingLayers(layers).stride
    if isinstance(size, int) and (size <= 0 or size % stride):
        problem = "must be a positive multiple of" if size <= 0 else "is not a multiple of"
        raise GeospadeError(
            f"[tile] size {size} {problem} the generator's stride {stride} "
            f'([train] num_upsampling_layers = "{layers}"): use a multiple of {stride}'
        )


def check_synthesis_options(options: Mapping[str, Any], edits: Path | None, chip_size: Any,
                            use_vae: bool, out: Path) -> None:
    """The ``[synthesize]`` values that :func:`geospade.synthesis.sliding.synthesize` would only
    refuse after tile and train ran: checked before any stage, with its messages.

    Args:
        options: the table, paths resolved (without ``landcover`` and ``edits``).
        edits: the edits file, if any.
        chip_size: ``[tile] size``, the window the checkpoint will synthesize.
        use_vae: whether ``[train]`` trains a style encoder (``style`` needs one).
        out: the GeoTIFF the stage writes.
    """
    from geospade.models.precision import resolve_device
    from geospade.raster.strip_writer import check_output_codec
    from geospade.synthesis.model import resolve_amp

    if options.get("style") is not None and not use_vae:
        raise GeospadeError("[synthesize] style needs a generator with a style encoder: set "
                            "[train] use_vae = true, or leave style out")
    world_size, rank = options.get("world_size", 1), options.get("rank", 0)
    tiles_only, save_landcover = options.get("tiles_only"), options.get("save_landcover")
    overlap, block_size = options.get("overlap"), options.get("block_size", 256)
    half = chip_size // 2 if isinstance(chip_size, int) and chip_size > 0 else None
    problems = [
        (options.get("unknown", "error") not in ("error", "ignore"),
         "--unknown must be 'error' or 'ignore'"),
        (world_size < 1, f"--world-size must be at least 1, not {world_size}"),
        (world_size >= 1 and not 0 <= rank < world_size,
         f"--rank must be in 0..{world_size - 1} (--world-size {world_size}), not {rank}"),
        (world_size > 1 and tiles_only is None,
         "--world-size > 1 needs --tiles-only DIR (each rank writes its tiles; stitch joins "
         "them)"),
        (options.get("batch_size", 1) < 1, "--batch-size must be at least 1"),
        (block_size <= 0 or block_size % 16,
         f"block size {block_size} {'must be a positive' if block_size <= 0 else 'is not a'} "
         "multiple of 16"),
        (options.get("window") is not None and options.get("bbox") is not None,
         "give --bbox or --window, not both"),
        (options.get("edit_field") is not None and edits is None,
         "--edit-field needs --edits (the vector file whose attribute it names)"),
        (edits is not None and options.get("edit_field") is None,
         "--edits needs --edit-field (the attribute with each polygon's class)"),
        (save_landcover is not None and world_size > 1,
         "--save-landcover cannot be combined with --world-size > 1"),
        (save_landcover is not None and tiles_only is None and same_file(out, save_landcover),
         f"-o and --save-landcover name the same file ({out}); give two different files"),
        (overlap is not None and half is not None and not 0 <= overlap <= half,
         f"--overlap must be between 0 and {half} (half the {chip_size}-pixel window), "
         f"not {overlap}"),
    ]
    for failed, message in problems:
        if failed:
            raise GeospadeError(f"[synthesize]: {message}")
    try:
        # The band count and dtype come from the checkpoint, after train: jpeg/webp's need of
        # 3 uint8 bands is synthesize's to check.
        check_output_codec(options.get("compress", "deflate"), options.get("cog", False))
        check_seed(options.get("seed", 0))
        if "amp" in options:  # bf16 where the device has none
            resolve_amp(options["amp"], resolve_device(options.get("device")))
    except GeospadeError as exc:
        raise GeospadeError(f"[synthesize]: {cli_wording(exc)}") from None


def check_synthesis_area(window: Any, bbox: Any, landcover: Path,
                         size: tuple[int, int] | None = None) -> None:
    """A ``[synthesize]`` window or bbox lies inside the land cover it will be cut from.

    Args:
        window, bbox: the options (at most one is set; see :func:`check_synthesis_options`).
        landcover: the land cover synthesize reads.
        size: ``(width, height)`` of a land cover that ``[landscape]`` will make (its bounds are
            not known before: a bbox is then only checked for its form).
    """
    import rasterio

    from geospade.synthesis.area import parse_bbox, parse_window

    if window is None and bbox is None:
        return
    try:
        if size is not None:
            if window is not None:
                parse_window(window, *size)
            else:
                _check_bbox_form(bbox)
            return
        if not landcover.is_file():
            return  # reported as an input not found
        try:
            src = rasterio.open(landcover)
        except rasterio.errors.RasterioIOError:
            raise GeospadeError(f"{landcover} is not a readable raster") from None
        with src:
            if window is not None:
                parse_window(window, src.width, src.height)
            else:
                parse_bbox(bbox, src.transform, src.width, src.height)
    except GeospadeError as exc:
        raise GeospadeError(f"[synthesize]: {cli_wording(exc)}") from None


def _check_bbox_form(bbox: Any) -> None:
    """Four numbers, min < max (what :func:`~geospade.synthesis.area.parse_bbox` takes)."""
    try:
        values = [float(v) for v in (bbox.replace(" ", "").split(",")
                                     if isinstance(bbox, str) else bbox)]
    except (TypeError, ValueError):
        values = []
    if len(values) != 4 or not (values[0] < values[2] and values[1] < values[3]):
        raise ArgumentError("bbox", "must be MINX,MINY,MAXX,MAXY with min < max, in the land "
                            "cover's CRS")


def check_outputs_spare_sources(stages: Sequence[Stage], out: Path) -> None:
    """No stage writes over, or into a folder holding, a file the config names as an input.

    The tile stage replaces ``OUT/chips`` as a whole, train ``OUT/run``, and so on: a land cover
    kept in ``OUT/chips/`` would be deleted. Every configured input is checked against every
    path any stage writes (and the pipeline state), before any stage runs.
    """
    sources = [s for stage in stages for s in stage.sources]
    hint = "keep inputs out of what the pipeline writes, or choose another work folder (-o)"
    for stage in stages:
        for path in stage.writes:
            check_not_an_input(path, sources, kind=f"[{stage.name}] output", hint=hint)
    check_not_an_input(out / STATE_FILE, sources, kind="pipeline state", hint=hint)


def check_work_folder(out: Path) -> None:
    """The work folder is new, empty, or a pipeline work folder (which is continued).

    A folder of anything else is refused: the stages replace ``chips/``, ``run/``,
    ``synthetic.tif`` … in it, and nothing there is theirs to replace.
    """
    if not (out.exists() or out.is_symlink()):
        return
    if not out.is_dir():
        raise GeospadeError(f"{out} exists and is not a folder")
    if not PIPELINE_FOLDER.matches(out):
        raise ArgumentError(
            "out", f"work folder {out} exists and is not a {PIPELINE_FOLDER.what} (it has no "
            f"{STATE_FILE}); refusing to write into it: choose a new or empty folder (out=DIR)",
            others=[("out=DIR", "-o")], leading=False
        )


def _check_evaluate(ev_cfg: Mapping[str, Any], split: Any, tile_opts: Mapping[str, Any],
                    tile_fn: Callable) -> None:
    """Values of ``[evaluate]``, and a split that the ``[tile]`` settings give chips."""
    if split not in SPLIT_FRACTIONS:
        raise GeospadeError(
            f"[evaluate]: split must be one of {', '.join(SPLIT_FRACTIONS)}, not {split!r}"
        )
    for key in ("segmenter_steps", "batch_size", "utility_steps", "utility_seeds", "variants"):
        if key in ev_cfg and ev_cfg[key] < 1:
            raise GeospadeError(f"[evaluate]: {key} must be at least 1, not {ev_cfg[key]}")
    ratio = ev_cfg.get("augmentation_ratio", 1.0)
    if not 0 < ratio < float("inf"):  # NaN fails too
        raise GeospadeError(f"[evaluate]: augmentation_ratio must be a positive number, not "
                            f"{ratio}")
    fraction_key = SPLIT_FRACTIONS[split]
    if fraction_key is None:
        return
    fraction = tile_opts.get(fraction_key, _default(tile_fn, fraction_key))
    if isinstance(fraction, (int, float)) and fraction <= 0:
        raise GeospadeError(
            f'[evaluate] split = "{split}" needs {split} chips, but [tile] {fraction_key} is '
            f"{fraction}: set [tile] {fraction_key} (e.g. 0.2) or evaluate another split"
        )


def _check_split_has_chips(chips: Path, split: str) -> None:
    """After tiling: the chip store has chips in the split ``[evaluate]`` reads."""
    # Only the counts are read (not open_chip_store's validation): a store that is unreadable
    # or does not validate is train's error to report.
    counts = read_counts(chips)
    if counts is not None and counts.get(split) == 0:
        raise GeospadeError(
            f"chip store {chips} has no {split!r} chips for [evaluate]: raise [tile] "
            f"{SPLIT_FRACTIONS[split]} or evaluate another split"
        )


def _check_device(stage: str, device: Any) -> None:
    """An unknown device, or CUDA on a machine without it, fails now rather than mid-run."""
    if isinstance(device, str) and device != "auto":
        from geospade.models.precision import resolve_device

        try:
            resolve_device(device)
        except GeospadeError as exc:
            raise GeospadeError(f"[{stage}]: {cli_wording(exc)}") from None


def _default_say(quiet: bool) -> Say:
    logger = get_logger("run")

    def say(message: str) -> None:
        if not quiet:
            logger.info(message)

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
        config: a pipeline TOML path, the name of an installed pipeline (``demo``; see
            :func:`pipeline_files`), or the same content as a dict (relative paths are then
            resolved against the current folder, or the dict's ``_base``).
        out: work folder (default: the config's ``out``, relative to the config file).
        force: rerun from this stage on (``all`` or a stage name), whatever the fingerprints say.
        quiet: no progress bars or messages.
        say: where stage messages go (default: the ``geospade.run`` logger, unless
            ``quiet``).

    Returns:
        A :class:`PipelineResult`.

    Raises:
        GeospadeError: a bad config (unknown sections or options, values of the wrong type,
            missing inputs, an evaluation split the tiling gives no chips, a chip size the
            generator cannot take, synthesis options synthesize would refuse), a work folder
            that is not new, empty or a pipeline work folder, an input where a stage writes,
            or another run on the same work folder, all before any work; or any stage's
            error. A first run that fails before any stage finished leaves no work folder
            behind.
    """
    if isinstance(config, (str, Path)):
        config = load_config(find_config(config))
    config = copy.deepcopy(dict(config))
    out = _work_folder(config, out)
    check_work_folder(out)
    names = [s for s in STAGES if s in config]
    if force is not None and force != "all" and force not in names:
        raise ArgumentError("force", f"takes all or a stage of this pipeline ({', '.join(names)})")
    stages = build_stages(config, out, quiet=quiet)
    _check_before_work(stages, out)
    result = _run_in_work_folder(stages, out, force, say or _default_say(quiet))
    result.paths = _output_paths(stages, out)
    report_path = out / REPORT_FILE
    if report_path.is_file():
        result.report = json.loads(report_path.read_text())
    return result


def _work_folder(config: Mapping[str, Any], out: str | Path | None) -> Path:
    """``out``, or else the config's ``out`` relative to the config file's folder."""
    if out is not None:
        return Path(out)
    if "out" not in config:
        raise ArgumentError("out", "pipeline config has no `out` folder; pass one (out=DIR)",
                            others=[("out=DIR", "-o DIR")], leading=False)
    if not isinstance(config["out"], str):
        raise GeospadeError(f"pipeline config: out must be str, not {config['out']!r}")
    return _output_path(Path(config.get("_base", ".")), config["out"], "the work folder (out)")


def _check_before_work(stages: Sequence[Stage], out: Path) -> None:
    """Inputs no earlier stage makes exist, devices are known, and no stage writes over an
    input (:func:`check_outputs_spare_sources`)."""
    made: set[Path] = set()
    for stage in stages:
        for p in stage.inputs:
            if p not in made and is_local(p) and not p.exists():
                raise GeospadeError(f"[{stage.name}] input not found: {p}")
        made.update(stage.outputs)
        _check_device(stage.name, stage.settings.get("device"))
    check_outputs_spare_sources(stages, out)


def _run_in_work_folder(stages: list[Stage], out: Path, force: str | None, say: Say
                        ) -> PipelineResult:
    """:func:`_run_stages` holding the work folder's lock; a failed first run takes back the
    folders it made."""
    # Folders made on the way to the work folder go again when the run fails.
    with removing_new_folders([out]):
        prepare_folder(parent_of(out))
        with OutputLock(out, "pipeline work folder"):  # one run per work folder
            created = not out.exists()
            prepare_folder(out, "work folder")
            try:
                return _run_stages(stages, out, force, say)
            except BaseException:
                # A first run that failed before any stage finished leaves no work folder.
                if created and {p.name for p in out.iterdir()} <= {STATE_FILE}:
                    shutil.rmtree(out, ignore_errors=True)
                raise


def _run_stages(stages: list[Stage], out: Path, force: str | None, say: Say) -> PipelineResult:
    """Run or skip each stage in order (see :func:`run_pipeline`), recording their state."""
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
    tiles = by_name["synthesize"].settings.get("tiles_only")
    paths["tiles" if tiles else "synthetic"] = by_name["synthesize"].outputs[0]
    paths["report"] = by_name["evaluate"].outputs[0]
    if len(by_name["evaluate"].outputs) > 1:
        paths["figure"] = by_name["evaluate"].outputs[1]
    return paths


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
