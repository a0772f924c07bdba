"""`geospade info PATH`: describe a raster, chip store or checkpoint."""

from __future__ import annotations

import json
from typing import Any

import click


@click.command("info")
@click.argument("path", type=click.Path(exists=True))
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
def command(path: str, as_json: bool) -> None:
    """Describe PATH: a land-cover/imagery raster, a chip store folder or a checkpoint (.pt).

    For a raster geospade wrote, also its provenance (the GEOSPADE_* tags: synthetic or not,
    version, checkpoint SHA-256 and step, seed, overlap, edits, land cover) and its class names.

    Example: geospade info chips/
    """
    from geospade.info import describe

    facts = describe(path)
    if as_json:
        click.echo(json.dumps(facts, indent=2, default=str))
        return
    _echo_facts(facts)


def _echo_facts(facts: dict[str, Any], indent: str = "") -> None:
    """``key  value`` lines; a non-empty mapping (provenance, sources) as indented lines."""
    width = max(len(str(k)) for k in facts)
    for key, value in facts.items():
        if isinstance(value, dict) and value and key not in ("counts", "generator"):
            click.echo(f"{indent}{key}")
            _echo_facts(value, indent + "  ")
        else:
            click.echo(f"{indent}{str(key):<{width}}  {value}")
