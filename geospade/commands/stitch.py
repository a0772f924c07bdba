"""`geospade stitch TILES... -o OUT.tif`: join georeferenced tiles into one GeoTIFF/COG.

Also the options of the output file's layout that ``synthesize`` shares (``--compress`` with the
lossy codecs, ``--co``, ``--blocksize``, ``--stac``), each declared once here.
"""

from __future__ import annotations

from collections.abc import Callable

import click

from geospade.commands.options import RASTER_CODEC_HELP, overwrite_option, quiet_option
from geospade.raster.codecs import CODECS

#: ``--compress`` choices of imagery outputs (geospade.raster.strip_writer.OUTPUT_CODECS; not
#: imported from there, so that ``--help`` imports no rasterio).
IMAGE_CODECS = (*CODECS, "jpeg", "webp")


def image_codec_option() -> Callable:
    """``--compress`` of an imagery output: the lossless codecs, and JPEG/WEBP for RGB."""
    return click.option(
        "--compress", type=click.Choice(list(IMAGE_CODECS)), default="deflate",
        show_default=True,
        help=RASTER_CODEC_HELP + " jpeg and webp (lossy, quality 75; much smaller) only for "
             "3-band 8-bit imagery: no-data pixels then go to an internal mask.")


def _parse_co(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
              ) -> dict[str, str]:
    from geospade.raster.strip_writer import parse_creation_options

    return parse_creation_options(value)


def creation_options_option() -> Callable:
    """``--co KEY=VALUE`` (repeatable), GDAL creation options as rio takes them."""
    return click.option(
        "--co", "creation_options", multiple=True, metavar="NAME=VALUE", callback=_parse_co,
        help="GDAL creation option of the output, as in rio (repeatable): e.g. --co ZLEVEL=6 "
             "or --co JPEG_QUALITY=90 for a GeoTIFF, --co QUALITY=90 with --cog (the COG "
             "driver's names). GDAL checks them before any work. Not COMPRESS nor block sizes: "
             "use --compress and --blocksize.")


def blocksize_option() -> Callable:
    """``--blocksize N``: the output's internal tile size."""
    return click.option(
        "--blocksize", "block_size", type=int, default=256, show_default=True,
        help="Internal tile width and height of the output, in pixels (a multiple of 16).")


def stac_option() -> Callable:
    """``--stac``: a STAC Item beside the output."""
    return click.option(
        "--stac", is_flag=True,
        help="Also write a STAC Item beside OUT (OUT.json: footprint in WGS84, proj and raster "
             "extensions, provenance); it is never an input, and --overwrite replaces only a "
             "STAC Item.")


@click.command("stitch")
@click.argument("tiles", nargs=-1, required=True,
                type=click.Path(dir_okay=False, path_type=str))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=str),
              help="Output GeoTIFF covering all tiles (never one of the TILES, even with "
                   "--overwrite).")
@click.option("--cog", is_flag=True, help="Write a Cloud-Optimized GeoTIFF (GDAL's COG driver).")
@image_codec_option()
@creation_options_option()
@blocksize_option()
@stac_option()
@overwrite_option("Replace OUT if it exists.")
@quiet_option("No progress bar and no summary.")
def command(tiles: tuple[str, ...], out: str, cog: bool, compress: str,
            creation_options: dict[str, str], block_size: int, stac: bool, overwrite: bool,
            quiet: bool) -> None:
    """Join georeferenced TILES into one seamless GeoTIFF.

    The tiles must share CRS, pixel size, pixel grid, band count and dtype (else: an error
    naming the odd tile). Where they overlap they are cross-faded with the same smooth weights
    'geospade synthesize' uses between windows; nodata pixels of a tile get no weight, and
    pixels no tile covers are nodata. Tiles are read one at a time, in order of their top row.
    The output keeps the provenance tags (GEOSPADE_*) its tiles share.

    Example: geospade stitch tiles/*.tif -o synthetic.tif --cog --stac
    """
    from geospade.raster.stitch import stitch

    summary = stitch(list(tiles), out, cog=cog, compress=compress, overwrite=overwrite,
                     quiet=quiet, block_size=block_size, creation_options=creation_options,
                     stac=stac)
    if not quiet:
        stac_note = f" (STAC Item {summary['stac']})" if summary["stac"] else ""
        click.echo(f"stitched {summary['tiles']} tile(s) into {summary['width']}x"
                   f"{summary['height']} px in {summary['seconds']:.1f} s -> "
                   f"{summary['output']}{stac_note}")
