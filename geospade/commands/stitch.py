"""`geospade stitch TILES... -o OUT.tif`: join georeferenced tiles into one GeoTIFF/COG."""

from __future__ import annotations

import click

from geospade.commands.options import (
    blocksize_option,
    creation_options_option,
    image_codec_option,
    overwrite_option,
    quiet_option,
    stac_option,
)


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
