"""`geospade evaluate` (placeholder until its issue lands)."""

import click

from geospade.errors import GeospadeError


@click.command("evaluate", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def command(args) -> None:
    """Not built yet."""
    raise GeospadeError("'geospade evaluate' is not built yet")
