"""`geospade synthesize CHECKPOINT LANDCOVER -o OUT.tif`: land cover -> georeferenced imagery."""

from __future__ import annotations

import os

import click

from geospade.commands.options import (
    batch_size_option,
    blocksize_option,
    creation_options_option,
    device_option,
    image_codec_option,
    overwrite_option,
    quiet_option,
    seed_option,
    stac_option,
)


@click.command("synthesize")
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=str))
@click.argument("landcover", type=click.Path(dir_okay=False, path_type=str))
@click.option("-o", "--out", default=None, type=click.Path(dir_okay=False, path_type=str),
              help="Output GeoTIFF: same CRS, transform and size as LANDCOVER (or its --bbox / "
                   "--window part), one band per checkpoint band, source dtype. It may not be "
                   "one of the inputs, even with --overwrite.")
@click.option("--edits", default=None, type=click.Path(dir_okay=False, path_type=str),
              help="Vector file (any format geopandas reads, any CRS) of polygons to burn into "
                   "the class map before synthesis, e.g. fields to turn into forest; other "
                   "geometry types are an error, and a warning says when no polygon overlaps "
                   "the land cover.")
@click.option("--edit-field", default=None,
              help="Attribute of --edits holding each polygon's class: a raw class value (2) or "
                   "a class name ('tree canopy and shrubs').")
@click.option("--save-landcover", default=None, type=click.Path(dir_okay=False, path_type=str),
              help="Also write the (edited) class map, in raw scheme values, to this GeoTIFF "
                   "(not OUT, and never an input, even with --overwrite): the scheme's colours "
                   "in the file, class names in its .aux.xml, which QGIS shows in the legend. "
                   "Always lossless; --co applies to OUT only.")
@click.option("--overlap", default=None, type=int,
              help="Pixels shared by neighbouring windows, cross-faded to hide seams; at most "
                   "half the window [default: a quarter of the checkpoint's chip size].")
@batch_size_option(8, "Windows per generator call.")
@device_option()
@seed_option("Seed of the random inputs: the style code of a VAE checkpoint and the noise of "
             "one trained with --noise-dim (drawn once for the whole raster); the same seed "
             "gives the same bytes, another seed another variant.")
@click.option("--style", default=None, type=click.Path(dir_okay=False, path_type=str),
              help="Image whose style the output copies (checkpoints with a style encoder): "
                   "the checkpoint's bands and dtype; georeferencing is not needed.")
@click.option("--bbox", default=None,
              help="Synthesize only the pixels that MINX,MINY,MAXX,MAXY (in LANDCOVER's CRS) "
                   "touches; the box must lie inside LANDCOVER's bounds (it is not clipped).")
@click.option("--window", default=None,
              help="Synthesize only COL_OFF,ROW_OFF,WIDTH,HEIGHT (pixels of LANDCOVER); the "
                   "window must lie inside LANDCOVER (it is not clipped).")
@click.option("--cog", is_flag=True, help="Write a Cloud-Optimized GeoTIFF (GDAL's COG driver).")
@image_codec_option()
@creation_options_option()
@blocksize_option()
@stac_option()
@click.option("--amp", type=click.Choice(["auto", "bf16", "none"]), default="auto",
              show_default=True,
              help="Inference precision: auto uses bf16 with channels-last weights where the "
                   "device has native bf16 (GPUs; CPUs with AVX512-BF16 or AMX), else fp32; "
                   "bf16 forces it; none is fp32.")
@click.option("--tiles-only", default=None, type=click.Path(file_okay=False, path_type=str),
              help="Instead of OUT, write one GeoTIFF per strip of windows into this folder; "
                   "join them with 'geospade stitch'. LANDCOVER must be north-up (stitch "
                   "joins north-up tiles).")
@click.option("--rank", default=None, type=click.IntRange(min=0),
              help="With --tiles-only: this process's share of the strips, 0..WORLD_SIZE-1 "
                   "[default: $RANK or 0].")
@click.option("--world-size", default=None, type=click.IntRange(min=1),
              help="With --tiles-only: number of processes sharing the work "
                   "[default: $WORLD_SIZE or 1].")
@click.option("--unknown", type=click.Choice(["error", "ignore"]), default="error",
              show_default=True,
              help="Land-cover values outside the checkpoint's scheme: stop with an error naming "
                   "them, or treat them as no data.")
@overwrite_option("Replace existing outputs.")
@quiet_option("No progress bar and no summary.")
def command(checkpoint: str, landcover: str, out: str | None, edits: str | None,
            edit_field: str | None, save_landcover: str | None, overlap: int | None,
            batch_size: int, device: str, seed: int, style: str | None, bbox: str | None,
            window: str | None, cog: bool, compress: str, creation_options: dict[str, str],
            block_size: int, stac: bool, amp: str, tiles_only: str | None,
            rank: int | None,
            world_size: int | None, unknown: str, overwrite: bool, quiet: bool) -> None:
    """Turn LANDCOVER into imagery with the generator in CHECKPOINT.

    The land cover is read in strips and cut into overlapping windows of the checkpoint's chip
    size; the windows are generated in batches and cross-faded, and finished rows are written
    at once, so memory does not grow with the raster. Nodata in the land cover stays nodata in
    the output (value 0 for unsigned bands, whose valid pixels are at least 1). The output's
    GeoTIFF tags say it is synthetic and how it was made (GEOSPADE_*: version, checkpoint
    SHA-256 and step, seed, overlap, edits, land cover); 'geospade info OUT' shows them.

    \b
    Examples:
      geospade synthesize run/checkpoint.pt landcover.tif -o synthetic.tif --cog --stac
      geospade synthesize run/checkpoint.pt landcover.tif -o rgb.tif --compress jpeg \\
          --co JPEG_QUALITY=90 --blocksize 512
      geospade synthesize run/checkpoint.pt landcover.tif -o forest.tif \\
          --edits fields.gpkg --edit-field new_class

    On several machines: run 'geospade synthesize ... --tiles-only tiles/ --rank R
    --world-size N' for R = 0..N-1 (or under torchrun, which sets RANK and WORLD_SIZE), copy
    the tiles together, then 'geospade stitch tiles/*.tif -o out.tif'.
    """
    from geospade.errors import GeospadeError
    from geospade.synthesis.sliding import format_summary, synthesize

    if rank is None:
        rank = _env_int("RANK", 0)
    if world_size is None:
        world_size = _env_int("WORLD_SIZE", 1)
    if out is None and tiles_only is None:
        raise GeospadeError("give -o OUT.tif (or --tiles-only DIR)")
    if out is not None and tiles_only is not None:
        raise GeospadeError("give -o OUT.tif or --tiles-only DIR, not both")
    summary = synthesize(
        checkpoint, landcover, out, edits=edits, edit_field=edit_field,
        save_landcover=save_landcover, overlap=overlap, batch_size=batch_size, device=device,
        seed=seed, style=style, bbox=bbox, window=window, cog=cog, compress=compress,
        creation_options=creation_options, block_size=block_size, stac=stac, amp=amp,
        tiles_only=tiles_only, rank=rank, world_size=world_size, unknown=unknown,
        overwrite=overwrite, quiet=quiet,
    )
    if not quiet:
        click.echo(format_summary(summary))


def _env_int(name: str, default: int) -> int:
    """An integer environment variable (torchrun's RANK, WORLD_SIZE), or ``default``."""
    from geospade.errors import GeospadeError

    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise GeospadeError(f"${name} must be an integer, not {value!r}") from None
