"""Options shared by several commands, each declared once (as rasterio's ``rio/options.py``).

Every decorator here adds one click option with the same flag names, type and help wording in
every command; what differs between commands (what ``--overwrite`` replaces, what ``--seed``
seeds) is an argument of the decorator.
"""

from __future__ import annotations

from collections.abc import Callable

import click

from geospade.raster.codecs import CODECS, OUTPUT_CODECS

RASTER_CODEC_HELP = ("Codec of the output (fast levels; deflate opens everywhere, zstd is faster "
                     "and smaller but needs GDAL >= 2.3 or a recent reader).")

DEVICE_HELP = "Torch device: auto (CUDA when available, else CPU), cpu, cuda, cuda:1 …"

#: ``--device``'s default: the library functions resolve it with
#: :func:`geospade.models.precision.resolve_device` (CUDA when available, else CPU).
DEFAULT_DEVICE = "auto"


def codec_option(default: str = "deflate", help: str = RASTER_CODEC_HELP) -> Callable:
    """``--compress``, one of :data:`geospade.raster.codecs.CODECS`."""
    return click.option("--compress", type=click.Choice(list(CODECS)), default=default,
                        show_default=True, help=help)


def overwrite_option(help: str = "Replace OUT if it exists.") -> Callable:
    """``--overwrite``: a flag; ``help`` says what it replaces, e.g. "Replace OUT if it exists."."""
    return click.option("--overwrite", is_flag=True, help=help)


def quiet_option(help: str = "No progress bar and no summary.") -> Callable:
    """``-q/--quiet``: a flag; ``help`` says what it silences."""
    return click.option("-q", "--quiet", is_flag=True, help=help)


def device_option(from_config: bool = False) -> Callable:
    """``--device``, default ``auto`` (CUDA when available, else CPU) in every command.

    The value is passed through unchanged: every library function taking a device accepts
    ``"auto"``. With ``from_config`` (``geospade train``) the option's value is None when not
    given, so a ``--config`` file's device stands; --help still shows the default, auto.
    """
    if from_config:  # click shows a string show_default as "(auto)": write the same text
        return click.option("--device", default=None,
                            help=f"{DEVICE_HELP}  [default: {DEFAULT_DEVICE}]")
    return click.option("--device", default=DEFAULT_DEVICE, show_default=True, help=DEVICE_HELP)


def seed_option(help: str, default: int | None = 0) -> Callable:
    """``--seed``, a non-negative integer; ``help`` says what it seeds.

    ``default=None`` (``geospade train``) means "not given", so a config file's seed stands;
    ``help`` then states the default itself.
    """
    return click.option("--seed", type=click.IntRange(min=0), default=default,
                        show_default=default is not None, help=help)


def batch_size_option(default: int | None, help: str) -> Callable:
    """``--batch-size``, at least 1; ``help`` says what a batch holds.

    ``default=None`` (``geospade train``) means "not given", so a config file's value stands;
    ``help`` then states the default itself.
    """
    return click.option("--batch-size", type=click.IntRange(min=1), default=default,
                        show_default=default is not None, help=help)


# -- the layout of an imagery output (synthesize, stitch) ---------------------------------------


def image_codec_option() -> Callable:
    """``--compress`` of an imagery output: the lossless codecs, and JPEG/WEBP for RGB."""
    return click.option(
        "--compress", type=click.Choice(list(OUTPUT_CODECS)), default="deflate",
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
