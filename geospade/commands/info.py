"""`geospade info PATH`: describe a raster, chip store or checkpoint."""

from __future__ import annotations

import json

import click


@click.command("info")
@click.argument("path", type=click.Path(exists=True))
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
def command(path: str, as_json: bool) -> None:
    """Describe PATH: a land-cover/imagery raster, a chip store folder or a checkpoint (.pt).

    Example: geospade info chips/
    """
    from geospade.info import describe

    facts = describe(path)
    if as_json:
        click.echo(json.dumps(facts, indent=2, default=str))
        return
    width = max(len(k) for k in facts)
    for key, value in facts.items():
        click.echo(f"{key:<{width}}  {value}")
