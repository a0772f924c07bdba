"""`geospade stitch TILES... -o OUT.tif`: join georeferenced tiles into one GeoTIFF/COG."""

from __future__ import annotations

import click

from geospade.commands.options import codec_option, overwrite_option, quiet_option


@click.command("stitch")
@click.argument("tiles", nargs=-1, required=True,
                type=click.Path(dir_okay=False, path_type=str))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=str),
              help="Output GeoTIFF covering all tiles (never one of the TILES, even with "
                   "--overwrite).")
@click.option("--cog", is_flag=True, help="Write a Cloud-Optimized GeoTIFF (GDAL's COG driver).")
@codec_option()
@overwrite_option("Replace OUT if it exists.")
@quiet_option("No progress bar and no summary.")
def command(tiles: tuple[str, ...], out: str, cog: bool, compress: str, overwrite: bool,
            quiet: bool) -> None:
    """Join georeferenced TILES into one seamless GeoTIFF.

    The tiles must share CRS, pixel size, pixel grid, band count and dtype (else: an error
    naming the odd tile). Where they overlap they are cross-faded with the same smooth weights
    'geospade synthesize' uses between windows; nodata pixels of a tile get no weight, and
    pixels no tile covers are nodata. Tiles are read one at a time, in order of their top row.

    Example: geospade stitch tiles/*.tif -o synthetic.tif --cog
    """
    from geospade.raster.stitch import stitch

    summary = stitch(list(tiles), out, cog=cog, compress=compress, overwrite=overwrite,
                     quiet=quiet)
    if not quiet:
        click.echo(f"stitched {summary['tiles']} tile(s) into {summary['width']}x"
                   f"{summary['height']} px in {summary['seconds']:.1f} s -> {summary['output']}")
