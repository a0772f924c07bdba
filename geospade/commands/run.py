"""`geospade run` (placeholder until its issue lands)."""

import click

from geospade.errors import GeospadeError


@click.command("run", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def command(args) -> None:
    """Not built yet."""
    raise GeospadeError("'geospade run' is not built yet")
