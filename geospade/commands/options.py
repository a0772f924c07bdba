"""Options shared by several commands, each declared once (as rasterio's ``rio/options.py``).

Every decorator here adds one click option with the same flag names, type and help wording in
every command; what differs between commands (what ``--overwrite`` replaces, what ``--seed``
seeds) is an argument of the decorator.
"""

from __future__ import annotations

from collections.abc import Callable

import click

from geospade.raster.codecs import CODECS

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
