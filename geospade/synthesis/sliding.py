"""Sliding-window synthesis over a land-cover raster of any size.

A synthesis is three named steps and a short loop:

- the window plan (:mod:`geospade.synthesis.plan`): which windows of the chip size cover the
  area, in which strips, overlapping by ``overlap`` pixels, with which blending weights;
- the window source (:mod:`geospade.synthesis.source`): the land cover read one strip of windows
  at a time, mapped through the checkpoint's class scheme, edited with vector polygons
  (:mod:`geospade.synthesis.edits`), cut into windows and grouped into batches;
- a sink (:mod:`geospade.synthesis.sinks`): the generated windows blended into one raster, or
  one tile per strip (``tiles_only``), written by
  :class:`~geospade.raster.blending_writer.BlendingWriter` as soon as no later window can touch
  the rows.

Memory therefore depends on the raster's width and the window size, never on its height.
Batch-norm statistics are frozen in eval mode, and a VAE generator gets one code z for the whole
raster (from ``seed`` or the ``style`` image), so every window is drawn in the same style
(docs/design.md, "Synthesis output nodata" and "Synthesis fast paths").
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from geospade.errors import ArgumentError, GeospadeError, check_seed, first_line
from geospade.log import Progress, get_logger, progress
from geospade.normalization import denormalize
from geospade.outputs import (
    check_not_an_input,
    is_local,
    locked_outputs,
    prepare_folder,
    prepare_output,
    removing_new_folders,
    same_file,
)
from geospade.provenance import Provenance
from geospade.raster import tiles_folder
from geospade.raster.alignment import open_raster
from geospade.raster.gdal_env import limited_cache
from geospade.raster.grid import Grid, is_rotated
from geospade.raster.sources import input_files, is_glob
from geospade.raster.strip_writer import (
    check_block_size,
    check_creation_options,
    check_output_codec,
)
from geospade.schemes import ClassScheme
from geospade.stac import item_path, prepare_item, write_item
from geospade.synthesis.area import area_window
from geospade.synthesis.edits import ClassMapWriter, Edits, load_edits
from geospade.synthesis.model import SynthesisModel, load_synthesis_model
from geospade.synthesis.nodata import output_nodata, refuse_unknown_values
from geospade.synthesis.plan import WindowPlan
from geospade.synthesis.sinks import BlendedSink, TileSink
from geospade.synthesis.source import WindowSource


def synthesize(
    checkpoint: str | Path | SynthesisModel,
    landcover: str | Path,
    out: str | Path | None,
    *,
    edits: str | Path | None = None,
    edit_field: str | None = None,
    save_landcover: str | Path | None = None,
    overlap: int | None = None,
    batch_size: int = 8,
    device: str | None = None,
    seed: int = 0,
    style: str | Path | None = None,
    bbox: str | Sequence[float] | None = None,
    window: str | Sequence[int] | None = None,
    cog: bool = False,
    amp: str = "auto",
    tiles_only: str | Path | None = None,
    rank: int = 0,
    world_size: int = 1,
    unknown: str = "error",
    overwrite: bool = False,
    quiet: bool = False,
    block_size: int = 256,
    compress: str = "deflate",
    creation_options: Mapping[str, str] | None = None,
    stac: bool = False,
) -> dict[str, Any]:
    """Turn a land-cover raster into georeferenced imagery on the same grid.

    Args:
        checkpoint: checkpoint path (or a loaded :class:`SynthesisModel`).
        landcover: land-cover raster with the raw values of the checkpoint's scheme.
        out: output GeoTIFF (ignored with ``tiles_only``).
        edits: vector layer of polygons to burn into the class map first.
        edit_field: the edits' attribute with a class value or class name per polygon.
        save_landcover: also write the (edited) class map, in raw scheme values, here.
        overlap: pixels shared by neighbouring windows (default: chip size / 4; at most half).
        batch_size: windows per generator call.
        device: "cpu", "cuda", … (default: cuda when available).
        seed: seed of the style code of a VAE generator; same seed -> same bytes.
        style: image whose style a VAE generator copies (needs a style encoder).
        bbox: ``"minx,miny,maxx,maxy"`` in the land cover's CRS: synthesize only the pixels it
            touches; it must lie inside the land cover's bounds (it is not clipped).
        window: ``"col_off,row_off,width,height"`` in pixels: synthesize only that part; it
            must lie inside the land cover.
        cog: write a Cloud-Optimized GeoTIFF.
        amp: "auto" (bf16 where the device has native bf16), "bf16" or "none".
        tiles_only: a folder: write one GeoTIFF per strip of windows there instead of ``out``
            (join them with :func:`geospade.raster.stitch.stitch`); the land cover must be
            north-up.
        rank, world_size: with ``tiles_only``, synthesize only this rank's share of the strips
            (contiguous; run ranks 0..world_size-1 on any machines, then stitch).
        unknown: "error" on raw values outside the scheme, or "ignore" (treat as nodata).
        overwrite: replace an existing output (and tiles); never one of the inputs.
        quiet: no progress bar.
        block_size: internal tile size of the output GeoTIFF (a multiple of 16).
        compress: its codec, "deflate" (default), "zstd", "lzw" or "none"; "jpeg" or "webp"
            for a checkpoint of 3 uint8 bands (no-data pixels then go to an internal mask).
            The ``save_landcover`` class map is always lossless (deflate for those two).
        creation_options: GDAL creation options of the output (and tiles), ``{"KEY":
            "VALUE"}``, over geospade's (GTiff's options, or the COG driver's with ``cog``).
        stac: also write a STAC Item beside the output (``OUT.json``,
            :func:`geospade.stac.write_item`); not with ``tiles_only`` (stitch writes one).

    The outputs carry their provenance as GeoTIFF tags (:mod:`geospade.provenance`).

    Returns:
        Summary: ``output`` (or ``tiles``), ``width``, ``height``, ``bands``, ``windows``,
        ``windows_run``, ``seconds``, ``generator_seconds``, ``mpx_per_s``, ``amp``, ``device``,
        ``stac`` (the Item's path or None).

    Raises:
        GeospadeError: bad options or inputs, before any output is written; output folders
            the call created are removed when it fails.
    """
    start = time.perf_counter()
    request = _Request(
        checkpoint=checkpoint, landcover=landcover, out=out, edits=edits,
        edit_field=edit_field, save_landcover=save_landcover, overlap=overlap,
        batch_size=batch_size, device=device, seed=seed, style=style, bbox=bbox, window=window,
        cog=cog, amp=amp, tiles_only=tiles_only, rank=rank, world_size=world_size,
        unknown=unknown, overwrite=overwrite, quiet=quiet, block_size=block_size,
        compress=compress, creation_options=dict(creation_options or {}), stac=stac)
    request.check()
    # A failed run takes back the output folders it created.
    with removing_new_folders(request.output_folders()), locked_outputs(request.locks()):
        return _synthesize(request.with_outputs_prepared(), start)


@dataclass(frozen=True)
class _Request:
    """The arguments of one :func:`synthesize` call (see there)."""

    checkpoint: str | Path | SynthesisModel
    landcover: str | Path  # a file, glob, list file, VRT or URL (geospade.raster.sources)
    out: str | Path | None
    edits: str | Path | None
    edit_field: str | None
    save_landcover: str | Path | None
    overlap: int | None
    batch_size: int
    device: str | None
    seed: int
    style: str | Path | None
    bbox: str | Sequence[float] | None
    window: str | Sequence[int] | None
    cog: bool
    amp: str
    tiles_only: str | Path | None
    rank: int
    world_size: int
    unknown: str
    overwrite: bool
    quiet: bool
    block_size: int
    compress: str
    creation_options: dict[str, str]
    stac: bool
    stac_item: Path | None = None  # set by with_outputs_prepared

    @property
    def inputs(self) -> list[tuple[str, str | Path | None]]:
        """``(what, path)`` of every file the run reads: no output may replace one."""
        inputs = [("the land cover", self.landcover), ("the edits file", self.edits),
                  ("the style image", self.style)]
        if not isinstance(self.checkpoint, SynthesisModel):
            inputs.append(("the checkpoint", self.checkpoint))
        return inputs

    def check(self) -> None:
        """Refuse bad arguments before anything is read or written."""
        lc = self.landcover
        if is_local(lc) and not is_glob(lc) and not Path(lc).is_file():
            raise GeospadeError(f"land cover not found: {lc}")
        input_files(lc, "land cover")  # a glob matching nothing, an empty list file: one line
        if self.unknown not in ("error", "ignore"):
            raise ArgumentError("unknown", f"must be 'error' or 'ignore', not "
                                           f"{self.unknown!r}")
        self._check_ranks()
        if self.batch_size < 1:
            raise ArgumentError("batch_size", f"must be at least 1, not {self.batch_size}")
        check_output_codec(self.compress, self.cog)  # a bad codec fails before any work
        check_block_size(self.block_size)
        if self.bbox is not None and self.window is not None:
            raise ArgumentError("bbox", "give bbox or window, not both",
                                others=("bbox", "window"), leading=False)
        check_seed(self.seed)
        if self.edit_field is not None and self.edits is None:
            raise ArgumentError("edit_field", "needs edits (the vector file whose attribute it "
                                "names)", others=("edits",))
        self._check_outputs()

    def _check_ranks(self) -> None:
        world_size, rank = self.world_size, self.rank
        if world_size < 1:
            raise ArgumentError("world_size", f"must be at least 1, not {world_size}")
        if not 0 <= rank < world_size:
            raise ArgumentError("rank", f"must be in 0..{world_size - 1} (world_size="
                                f"{world_size}), not {rank}", others=("world_size",))
        if world_size > 1 and self.tiles_only is None:
            raise ArgumentError("world_size", "> 1 needs tiles_only (a folder: each rank writes "
                                "its tiles, stitch joins them)", others=("tiles_only",))

    def _check_outputs(self) -> None:
        if self.tiles_only is None and self.out is None:
            raise ArgumentError("out", "is needed: the output raster's path", flag="-o")
        if self.save_landcover is not None and self.world_size > 1:
            raise ArgumentError("save_landcover", "cannot be combined with world_size > 1",
                                others=("world_size",))
        if (self.tiles_only is None and self.save_landcover is not None
                and same_file(self.out, self.save_landcover)):
            raise ArgumentError("out", f"and save_landcover name the same file ({self.out}); "
                                "give two different files", flag="-o",
                                others=("save_landcover",))
        if self.tiles_only is not None:
            check_not_an_input(self.tiles_only, self.inputs, "tiles folder",
                               "write the tiles to a new folder")
        if self.stac and self.tiles_only is not None:
            raise ArgumentError("stac", "describes the out raster: with tiles_only, give "
                                "stac=True to 'geospade stitch', which joins the tiles",
                                others=(("out", "-o"), "tiles_only"))
        if (self.stac and self.save_landcover is not None
                and same_file(item_path(self.out), self.save_landcover)):
            raise ArgumentError("save_landcover", f"{self.save_landcover} is where stac=True "
                                "writes the STAC Item of out; choose another name",
                                others=("stac", ("out", "-o")))

    def output_folders(self) -> list[Path]:
        """The folders the outputs go to (taken back when the run fails and created them)."""
        folders = [Path(self.out).parent] if self.tiles_only is None else [Path(self.tiles_only)]
        if self.save_landcover is not None:
            folders.append(Path(self.save_landcover).parent)
        return folders

    def locks(self) -> list[tuple[str | Path | None, str]]:
        """``(path, what)`` of the outputs to lock (one lock per rank in a tiles folder)."""
        tiles = self.tiles_only
        return [(None if tiles is not None else self.out, "output"),
                (item_path(self.out) if self.stac and tiles is None else None, "--stac item"),
                (self.save_landcover, "--save-landcover output"),
                (None if tiles is None else Path(tiles) / f"rank{self.rank}", "tiles folder")]

    def with_outputs_prepared(self) -> _Request:
        """Check (and create the folders of) the outputs; call with their locks held."""
        out, save_landcover = self.out, self.save_landcover
        if self.tiles_only is None:
            out = prepare_output(out, self.overwrite, self.inputs)
        if save_landcover is not None:
            save_landcover = prepare_output(save_landcover, self.overwrite, self.inputs)
        if self.tiles_only is not None:
            prepare_folder(self.tiles_only, "tiles folder")
        stac_item = prepare_item(out, self.overwrite, self.inputs) if self.stac else None
        return dataclasses.replace(self, out=out, save_landcover=save_landcover,
                                   stac_item=stac_item)


def _synthesize(request: _Request, start: float) -> dict[str, Any]:
    """:func:`synthesize` with the arguments checked and the outputs locked."""
    r = request
    model = r.checkpoint if isinstance(r.checkpoint, SynthesisModel) else load_synthesis_model(
        r.checkpoint, device=r.device, amp=r.amp, seed=r.seed, style=r.style)
    size = model.chip_size
    overlap = size // 4 if r.overlap is None else r.overlap
    if not 0 <= overlap <= size // 2:
        raise ArgumentError("overlap", f"must be between 0 and {size // 2} (half the "
                            f"{size}-pixel window), not {overlap}")
    r = _with_output_checked(r, model)
    try:
        src = open_raster(r.landcover, "land cover")
    except rasterio.errors.RasterioIOError as exc:
        raise GeospadeError(f"{r.landcover} is not a readable raster "
                            f"({first_line(exc)})") from None
    with src, limited_cache(GDAL_NUM_THREADS="ALL_CPUS"):
        area = _area(r, src, model.scheme)
        grid = Grid(src.crs, window_transform(area, src.transform), int(area.width),
                    int(area.height))
        edit_layer = _edits(r, model.scheme, src.crs, grid)
        plan = WindowPlan.over(grid.width, grid.height, size, overlap, r.rank, r.world_size)
        return _run(r, model, src, area, grid, plan, edit_layer, start)


def _with_output_checked(request: _Request, model: SynthesisModel) -> _Request:
    """The request with its creation options checked for the model's bands (a lossy codec
    needs 3 uint8 bands), before the land cover is read."""
    r = request
    count, dtype = len(model.bands), np.dtype(model.bands[0].dtype).name
    check_output_codec(r.compress, r.cog, count, dtype)
    options = check_creation_options(r.creation_options, cog=r.cog and r.tiles_only is None,
                                     count=count, dtype=dtype, compress=r.compress)
    return dataclasses.replace(r, creation_options=options)


def _provenance(request: _Request, model: SynthesisModel, overlap: int) -> Provenance:
    """The run's provenance (hashes the checkpoint, edits and style files once).

    The seed is recorded only where it decides pixels (a VAE's style code not taken from a
    style image, or a noise generator's noise): two runs that differ only in an unused seed
    give the same bytes.
    """
    r = request
    checkpoint = None if isinstance(r.checkpoint, SynthesisModel) else r.checkpoint
    seeded = (getattr(model, "noise", None) is not None
              or (model.z is not None and not getattr(model, "styled", r.style is not None)))
    seed = getattr(model, "seed", r.seed) if seeded else None
    return Provenance.of_run(checkpoint, r.landcover, seed=seed, overlap=overlap,
                             edits=r.edits, style=r.style, step=getattr(model, "step", None))


def _area(request: _Request, src: rasterio.DatasetReader, scheme: ClassScheme) -> Window:
    """The window of the land cover to synthesize, checked (north-up for tiles, no unknown
    values unless they are to be ignored)."""
    if request.tiles_only is not None and is_rotated(src.transform):
        raise ArgumentError(
            "tiles_only", f"{request.landcover} is rotated (not north-up), and tiles_only "
            "writes tiles for 'geospade stitch', which joins north-up tiles only; synthesize the "
            "whole raster with out=PATH instead, or warp it north-up first (gdalwarp IN.tif "
            "NORTHUP.tif)", others=["tiles_only", ("out=PATH", "-o")],
            leading=False)
    area = area_window(request.window, request.bbox, src.transform, src.width, src.height)
    if request.unknown == "error":
        refuse_unknown_values(src, area, scheme, request.landcover)
    return area


def _edits(request: _Request, scheme: ClassScheme, crs: Any, grid: Grid) -> Edits | None:
    """The vector edits, if any, placed on the land cover; a warning when none touches the
    area (one edits layer may serve many rasters or parts, so that is no error)."""
    if request.edits is None:
        return None
    edits = load_edits(request.edits, request.edit_field, scheme, crs)
    if not edits.cover(grid.height, grid.width, grid.transform):
        part = "" if request.window is None and request.bbox is None else " part asked for"
        get_logger("synthesize").warning(
            f"no polygon of edits {request.edits} overlaps the land cover{part}; the output "
            "is unedited (check the edits' CRS and extent)")
    return edits


def _run_id(request: _Request, model: SynthesisModel, area: Window, overlap: int) -> str:
    """The id of the run's tiles (:func:`geospade.raster.tiles_folder.run_id`): the same for
    every rank of one run."""
    r = request
    identity = tiles_folder.file_identity
    return tiles_folder.run_id({
        "checkpoint": identity(None if isinstance(r.checkpoint, SynthesisModel)
                               else r.checkpoint),
        "landcover": identity(r.landcover), "edits": identity(r.edits),
        "edit_field": r.edit_field, "style": identity(r.style), "seed": r.seed,
        "area": [int(v) for v in area.flatten()], "overlap": overlap, "amp": model.amp,
        "world_size": r.world_size, "unknown": r.unknown,
    })


def _run(request: _Request, model: SynthesisModel, src: rasterio.DatasetReader, area: Window,
         grid: Grid, plan: WindowPlan, edits: Edits | None, start: float) -> dict[str, Any]:
    """Open the outputs, run every window of the plan through the model into them, and
    summarize; a failure deletes every unfinished output."""
    r = request
    bands = model.bands
    provenance = _provenance(r, model, plan.overlap)
    options = {"count": len(bands), "dtype": np.dtype(bands[0].dtype).name,
               "nodata": output_nodata(bands), "to_output": lambda v: denormalize(v, bands),
               "descriptions": [b.name for b in bands], "block_size": r.block_size,
               "compress": r.compress, "tags": provenance.tags(),
               "creation_options": r.creation_options}
    if r.tiles_only is not None:
        sink = TileSink(plan, r.tiles_only, Path(src.name).stem, grid, int(area.row_off),
                        r.overwrite, **options)
        sink.claim(_run_id(r, model, area, plan.overlap), r.inputs)
    else:
        sink = BlendedSink(plan, r.out, grid, r.cog, r.overwrite, **options)
    class_map = None
    try:
        if r.save_landcover is not None:
            class_map = ClassMapWriter(r.save_landcover, grid, model.scheme, src.dtypes[0],
                                       src.nodata, cog=r.cog, overwrite=r.overwrite,
                                       block_size=r.block_size, compress=r.compress,
                                       tags=provenance.class_map_tags())
        source = WindowSource(src, area, plan, model.scheme, edits, class_map)
        with progress(total=plan.window_count, desc="synthesize", unit="win", quiet=r.quiet,
                      logger="synthesize") as bar:
            windows_run, generator_seconds = _generate(model, source, sink, r.batch_size, bar)
            output, tiles = sink.close()
            if class_map is not None:
                class_map.close()
            stac = None if r.stac_item is None else str(write_item(output, r.stac_item))
    except BaseException:
        for writer in (sink, class_map):
            if writer is not None:
                writer.abort()
        raise
    seconds = time.perf_counter() - start
    return {
        "output": output, "tiles": tiles, "width": grid.width, "height": grid.height,
        "bands": len(bands), "windows": plan.window_count, "windows_run": windows_run,
        "window_size": plan.size, "overlap": plan.overlap, "seconds": seconds,
        "generator_seconds": generator_seconds,
        "mpx_per_s": plan.rows_covered() * grid.width / seconds / 1e6,
        "amp": model.amp, "device": str(model.device),
        "landcover_out": str(r.save_landcover) if r.save_landcover is not None else None,
        "stac": stac,
    }


def _generate(model: SynthesisModel, source: WindowSource, sink: BlendedSink | TileSink,
              batch_size: int, bar: Progress) -> tuple[int, float]:
    """Run the source's windows through the model in batches and hand them to the sink.

    Returns:
        Windows run, and seconds spent in the model.
    """
    windows_run, seconds = 0, 0.0
    for batch in source.batches(batch_size):
        chips = [item.chip for item in batch if item.chip is not None]
        images = iter(())
        if chips:
            t0 = time.perf_counter()
            images = iter(model(np.stack(chips)))
            seconds += time.perf_counter() - t0
            windows_run += len(chips)
        for item in batch:
            sink.add(item, next(images) if item.chip is not None else None)
        bar.update(len(batch))
    return windows_run, seconds


def format_summary(summary: dict[str, Any]) -> str:
    """A one-paragraph human summary of :func:`synthesize`'s result."""
    where = summary["output"] or f"{len(summary['tiles'])} tile(s) in " + (
        str(Path(summary["tiles"][0]).parent) if summary["tiles"] else "(none)")
    text = (f"synthesized {summary['width']}x{summary['height']} px, {summary['bands']} band(s): "
            f"{summary['windows']} windows of {summary['window_size']} px (overlap "
            f"{summary['overlap']}, {summary['windows_run']} run) in {summary['seconds']:.1f} s "
            f"({summary['mpx_per_s']:.3f} Mpx/s, {summary['device']}, amp {summary['amp']}) "
            f"-> {where}")
    if summary.get("landcover_out"):
        text += f"; class map -> {summary['landcover_out']}"
    if summary.get("stac"):
        text += f"; STAC Item -> {summary['stac']}"
    return text
