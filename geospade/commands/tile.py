"""`geospade tile LANDCOVER IMAGERY -o OUT`: cut aligned mask/image chips (a chip store)."""

from __future__ import annotations

import click

from geospade.commands.options import codec_option, overwrite_option, quiet_option, seed_option


@click.command("tile")
@click.argument("landcover", type=click.Path(dir_okay=False, path_type=str))
@click.argument("imagery", type=click.Path(dir_okay=False, path_type=str))
@click.option("-o", "--out", required=True, type=click.Path(path_type=str),
              help="Chip store folder to create (images/, masks/, index.gpkg, manifest.json).")
@click.option("--scheme", default="chesapeake7", show_default=True,
              help="Class scheme: chesapeake7, chesapeake13, nlcd, or a JSON scheme file.")
@click.option("--size", default=256, show_default=True, type=int,
              help="Chip size in pixels (square chips).")
@click.option("--stride", default=None, type=int,
              help="Step between chips in pixels; smaller than --size gives overlapping chips "
                   "[default: --size].")
@click.option("--max-nodata", default=0.0, show_default=True, type=float,
              help="Largest fraction of nodata/unlabelled pixels (labels or imagery) a kept chip "
                   "may have.")
@click.option("--aoi", default=None, type=click.Path(path_type=str),
              help="Vector file (any CRS); chips not intersecting its geometries are dropped.")
@click.option("--val-fraction", default=0.0, show_default=True, type=float,
              help="Fraction of split blocks that become validation chips.")
@click.option("--test-fraction", default=0.0, show_default=True, type=float,
              help="Fraction of split blocks that become test chips.")
@click.option("--block", default=8, show_default=True, type=int,
              help="Side of a split block, in chip steps. Whole blocks go to val/test; chips "
                   "straddling blocks of two splits are dropped, so val/test never overlap train.")
@click.option("--workers", default=1, show_default=True, type=int,
              help="Processes reading and writing chips.")
@seed_option("Seed of the split assignment and of the normalisation sample.")
@click.option("--unknown", type=click.Choice(["error", "ignore"]), default="error",
              show_default=True,
              help="Label values outside the scheme: stop with an error listing them, or map "
                   "them to the ignore index (255).")
@click.option("--resampling", type=click.Choice(["bilinear", "cubic"]), default="bilinear",
              show_default=True,
              help="Resampling of imagery warped onto the land-cover grid (labels never are).")
@codec_option("none", "Compression of the chip GeoTIFFs: none is fastest; zstd and deflate "
              "(level 1) write smaller stores, lzw is slowest.")
@overwrite_option("Replace OUT if it exists.")
@quiet_option("No progress bar and no summary.")
def command(landcover: str, imagery: str, out: str, scheme: str, size: int, stride: int | None,
            max_nodata: float, aoi: str | None, val_fraction: float, test_fraction: float,
            block: int, workers: int, seed: int, unknown: str, resampling: str, compress: str,
            overwrite: bool, quiet: bool) -> None:
    """Cut LANDCOVER (single-band class raster) and IMAGERY into aligned chips.

    The land-cover grid is the reference: imagery in another CRS, resolution or extent is
    warped onto it, and only the overlap is tiled. The last chip row/column is shifted back to
    the edge, so the whole overlap is covered.

    \b
    Example:
      geospade tile landcover.tif naip.tif -o chips --size 256 --val-fraction 0.1
    """
    from geospade.raster.tiling import tile

    summary = tile(
        landcover, imagery, out, scheme=scheme, size=size, stride=stride, max_nodata=max_nodata,
        aoi=aoi, val_fraction=val_fraction, test_fraction=test_fraction, block=block,
        workers=workers, seed=seed, unknown=unknown, resampling=resampling, compress=compress,
        overwrite=overwrite, quiet=quiet,
    )
    if not quiet:
        click.echo(summary.describe())
