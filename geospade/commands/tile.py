"""`geospade tile LANDCOVER IMAGERY -o OUT`: cut aligned mask/image chips (a chip store)."""

from __future__ import annotations

import click

from geospade.commands.options import codec_option, overwrite_option, quiet_option, seed_option
from geospade.raster.bands import ALPHA_CHOICES


def _band_numbers(ctx: click.Context, param: click.Parameter,
                  value: str | None) -> tuple[int, ...] | None:
    """``--bands``/``--rgb``: comma-separated whole numbers, e.g. ``4,3,2``."""
    if value is None:
        return None
    try:
        numbers = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of band numbers "
                                 "such as 3,2,1") from None
    return numbers


@click.command("tile")
@click.argument("landcover", type=click.Path(path_type=str))
@click.argument("imagery", type=click.Path(path_type=str))
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
@click.option("--block", default=None, type=int,
              help="Side of a split block, in chip steps. Whole blocks go to val/test; chips "
                   "straddling blocks of two splits are dropped, so val/test never overlap train. "
                   "[default: auto, the largest block at which each fraction is at least one "
                   "block; the summary names it]")
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
@click.option("--bands", default=None, callback=_band_numbers, metavar="N,N,...",
              help="Imagery bands to keep, 1-based, in order (e.g. 4,3,2) [default: all, less "
                   "an alpha band used as the mask].")
@click.option("--alpha", type=click.Choice(ALPHA_CHOICES), default="auto", show_default=True,
              help="A band the imagery flags as alpha: 'mask' uses it as the validity mask and "
                   "drops it (true RGBA); 'band' keeps it as data and ignores it as a mask (GDAL "
                   "flags band 4 of 4-band uint8 GeoTIFFs as alpha, even NIR); 'auto' is "
                   "'mask' when the band holds only 0 and 255, else 'band'. The summary says "
                   "which.")
@click.option("--rgb", default=None, callback=_band_numbers, metavar="R,G,B",
              help="Chip bands (1-based, after --bands) drawn as red, green, blue in previews, "
                   "e.g. 3,2,1 [default: from band names or colour interpretation, else "
                   "1,2,3]; the chip store remembers them.")
@codec_option("none", "Compression of the chip GeoTIFFs: none is fastest; zstd and deflate "
              "(level 1) write smaller stores, lzw is slowest.")
@click.option("--stac", is_flag=True,
              help="Also write OUT/collection.json, a STAC Collection of the store (extent, "
                   "classes, bands; index.gpkg lists the chips).")
@overwrite_option("Replace OUT if it exists.")
@quiet_option("No progress bar and no summary.")
def command(landcover: str, imagery: str, out: str, scheme: str, size: int, stride: int | None,
            max_nodata: float, aoi: str | None, val_fraction: float, test_fraction: float,
            block: int | None, workers: int, seed: int, unknown: str, resampling: str,
            bands: tuple[int, ...] | None, alpha: str, rgb: tuple[int, ...] | None,
            compress: str, stac: bool, overwrite: bool, quiet: bool) -> None:
    """Cut LANDCOVER (single-band class raster) and IMAGERY into aligned chips.

    The land-cover grid is the reference: imagery in another CRS, resolution or extent is
    warped onto it, and only the overlap is tiled. The last chip row/column is shifted back to
    the edge, so the whole overlap is covered.

    Each input may be one file, a quoted glob ("lc/*.tif"), a text file listing paths (one per
    line, relative to the list), a GDAL VRT, or a URL / GDAL path (https://…, s3://…,
    /vsicurl/…, /vsizip/…): several files are read as one mosaic without writing it to disk.
    Land-cover files must share one grid; imagery files may differ in CRS.

    Rasters without a CRS (PNG or TIFF pairs of ML datasets) are tiled when both lack one and
    they have the same size in pixels: they are taken as pixel-aligned and the chips carry no
    CRS. LANDCOVER and IMAGERY may be two folders: each raster file (.tif, .tiff, .png, .jpg,
    .jpeg, .jp2, .img, .vrt; not hidden, not in subfolders) of one is paired with the file of
    the other that has the same name less its suffix (masks/1366.png with images/1366.tif);
    every file needs its pair, and all pairs go into one chip store (chip ids start with the
    name: 1366_000000_000256), split by blocks drawn over all pairs together.

    \b
    Examples:
      geospade tile landcover.tif naip.tif -o chips --size 256 --val-fraction 0.1
      geospade tile masks/ images/ -o chips --scheme loveda.json --val-fraction 0.2
      geospade tile "lc/*.tif" naip-tiles.txt -o chips --scheme chesapeake7
    """
    from geospade.raster.tiling import tile

    summary = tile(
        landcover, imagery, out, scheme=scheme, size=size, stride=stride, max_nodata=max_nodata,
        aoi=aoi, val_fraction=val_fraction, test_fraction=test_fraction, block=block,
        workers=workers, seed=seed, unknown=unknown, resampling=resampling, compress=compress,
        bands=bands, alpha=alpha, rgb=rgb, overwrite=overwrite, quiet=quiet,
    )
    if not quiet:
        click.echo(summary.describe())
    if stac:
        from geospade.stac import write_store_collection

        path = write_store_collection(out)
        if not quiet:
            click.echo(f"STAC Collection: {path}")
