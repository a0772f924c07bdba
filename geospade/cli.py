"""The ``geospade`` command: a thin click layer over functions users can import.

Each command lives in :mod:`geospade.commands` and is imported only when it runs, so
``geospade --help`` stays fast (no torch import). Every :class:`~geospade.errors.GeospadeError`,
unreadable file or interrupt ends in a one-line message and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings

import click

from geospade import __version__
from geospade.errors import GeospadeError, cli_wording
from geospade.io_errors import out_of_room, read_failure, room_error
from geospade.log import get_logger, log_to_stderr

COMMANDS = {
    "tile": "Cut land cover + imagery into aligned mask/image chips (a chip store).",
    "train": "Train a SPADE generator on a chip store.",
    "synthesize": "Turn a land-cover raster (optionally edited) into a georeferenced GeoTIFF/COG.",
    "generate": "Paint a synthetic chip store over a real chip store's masks (training data).",
    "stitch": "Join overlapping georeferenced tiles into one seamless GeoTIFF/COG.",
    "evaluate": "Measure how useful (train on synthetic, test on real) and how real it is.",
    "demo": "Run tile -> train -> synthesize -> evaluate on demo data (Zion, or a landscape).",
    "run": "Run a pipeline config (tile -> train -> synthesize -> evaluate), skipping done stages.",
    "info": "Describe a raster, chip store or checkpoint.",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        return importlib.import_module(f"geospade.commands.{name}").command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl(list(COMMANDS.items()))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="geospade")
def cli() -> None:
    """geospade: realistic, georeferenced aerial imagery from land-cover maps (SPADE GANs).

    Typical run: tile -> train -> synthesize -> evaluate. `geospade COMMAND --help` explains each.
    """


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    if "Original Traceback" in text:
        # Raised in a DataLoader worker: torch re-raises it with the worker's traceback in
        # the message; its last line is the error itself ("geospade.errors.…Error: message").
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    msg = " ".join(text.split())
    return msg or exc.__class__.__name__


def _reworded(exc: BaseException, args: list[str]) -> GeospadeError | None:
    """The one-line error of a failed read or write that no library code wrapped: a damaged
    raster (rasterio's "Read failed. See previous exception …", named as in ``args``), a full
    disk."""
    reason = out_of_room(exc)
    if reason is not None:
        return room_error(getattr(exc, "filename", None) or "an output", reason)
    return read_failure(exc, args)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script: run the CLI, turning errors into one-line messages.

    Status and progress go through :mod:`logging`; for the command's run, a handler prints
    them as plain lines on stderr (``geospade train: …``). ``-q`` keeps them quiet through the
    library's ``quiet`` arguments. Called in-process (tests, a script), the ``geospade``
    logger is left as it was found.
    """
    from geospade.threads import use_passive_wait
    use_passive_wait()  # OpenMP reads its wait policy once, when a command first imports torch
    args = list(sys.argv[1:] if argv is None else argv)
    logger = get_logger()
    level, handlers = logger.level, list(logger.handlers)
    log_to_stderr()
    try:
        _run(args)
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        for handler in handlers:
            logger.addHandler(handler)
        logger.setLevel(level)


def _run(args: list[str]) -> None:
    """Run the command line ``args``; every failure ends in one line on stderr and an exit."""
    try:
        # make_context + invoke (rather than cli.main) lets Ctrl-C reach the handler below
        # untouched, so the interrupt message is one line too.
        with cli.make_context("geospade", args) as ctx, warnings.catch_warnings():
            # geospade checks georeferencing itself and says so in its own words ("has no
            # CRS"); rasterio's warning about it (also from a file cut short) is only noise.
            warnings.filterwarnings("ignore", message="Dataset has no geotransform")
            cli.invoke(ctx)
    except click.exceptions.Exit as exc:  # --help, --version
        if exc.exit_code:
            sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("geospade: aborted", err=True)
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError as exc:
        # `geospade` (or a group) alone: the help, as with --help.
        click.echo(exc.ctx.get_help())
    except click.UsageError as exc:
        # One line, like every other error; the hint names the help to read.
        where = exc.ctx.command_path if exc.ctx is not None else "geospade"
        click.echo(f"geospade: error: {_one_line(exc.format_message())} (see '{where} --help')",
                   err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"geospade: error: {_one_line(exc.format_message())}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("geospade: interrupted", err=True)
        sys.exit(130)
    except GeospadeError as exc:
        # An ArgumentError names the function's argument ("batch_size"); here, its flag.
        click.echo(f"geospade: error: {_one_line(cli_wording(exc))}", err=True)
        sys.exit(1)
    except BrokenPipeError:
        # Output piped into a reader that stopped early (`geospade info chips | head`): no
        # message, and nothing more written to the closed pipe when Python flushes at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except (OSError, ValueError) as exc:
        # Unreadable files (rasterio's RasterioIOError is an OSError), bad values from libraries.
        click.echo(f"geospade: error: {_one_line(_reworded(exc, args) or exc)}", err=True)
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - last line of defence: still one line, no traceback
        if _debug():
            raise
        known = _reworded(exc, args)
        if known is not None:
            click.echo(f"geospade: error: {_one_line(known)}", err=True)
            sys.exit(1)
        click.echo(
            f"geospade: error: {exc.__class__.__name__}: {_one_line(exc)} "
            "(set GEOSPADE_DEBUG=1 for a traceback)",
            err=True,
        )
        sys.exit(1)


def _debug() -> bool:
    return os.environ.get("GEOSPADE_DEBUG", "") not in ("", "0")


if __name__ == "__main__":
    main()
