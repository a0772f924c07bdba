"""One module per CLI command; each defines a click command named ``command``."""

from __future__ import annotations

from collections.abc import Callable

import click

from geospade.raster.codecs import CODECS

RASTER_CODEC_HELP = ("Codec of the output (fast levels; deflate opens everywhere, zstd is faster "
                     "and smaller but needs GDAL >= 2.3 or a recent reader).")


def codec_option(default: str = "deflate", help: str = RASTER_CODEC_HELP) -> Callable:
    """``--compress``, one of :data:`geospade.raster.codecs.CODECS`."""
    return click.option("--compress", type=click.Choice(list(CODECS)), default=default,
                        show_default=True, help=help)
