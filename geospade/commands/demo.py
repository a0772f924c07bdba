"""`geospade demo`: tile -> train -> synthesize -> evaluate on real data or a landscape."""

from __future__ import annotations

import click

from geospade.commands.options import quiet_option

# The demo trains a small model for a fixed number of steps whatever the size; the landscape,
# tiling, synthesis and evaluation grow with its area (4096 px is 64 times the default's).
MIN_SIZE, MAX_SIZE = 256, 4096


@click.command("demo")
@click.option("-o", "--out", type=click.Path(file_okay=False), default="geospade-demo",
              show_default=True, help="Work folder for every output of the demo.")
@click.option("--data", type=click.Choice(["zion", "landscape"]), default="zion",
              show_default=True,
              help="zion: real data installed with geospade (Landsat 8 + NLCD land cover of "
                   "Zion National Park, pipelines/demo.toml); landscape: a generated synthetic "
                   "landscape, no data needed (pipelines/demo-landscape.toml).")
@click.option("--size", type=click.IntRange(min=MIN_SIZE, max=MAX_SIZE), default=None,
              help=f"With --data landscape: width and height of the landscape in pixels "
                   f"[default: 512] (smaller is quicker; at least {MIN_SIZE} so train and val "
                   f"both get chips; at most {MAX_SIZE}: for larger rasters use `geospade run` "
                   "with a [landscape] table).")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Training steps (fewer is quicker and worse). [default: 1500, as in "
                   "pipelines/demo.toml]")
@click.option("--force", is_flag=True,
              help="Rerun every stage even if the folder already holds a finished demo.")
@quiet_option("No progress bars or stage messages.")
def command(out: str, data: str, size: int | None, steps: int | None, force: bool,
            quiet: bool) -> None:
    """Run the whole product on real data (about 5 minutes on two CPU cores).

    Tiles a 15 km crop of Zion National Park installed with geospade (Landsat 8 bands 2-5,
    uint16, and NLCD 2011 land cover in 8 classes, on another grid and CRS: tile warps the
    imagery) into overlapping 64-px chips, trains a small generator, synthesizes the whole land
    cover as a Cloud-Optimized GeoTIFF, evaluates it on the held-out chips against two
    baselines, and prints where each output is with the headline numbers. Rerunning in the same
    folder skips what is done. The settings are those of pipelines/demo.toml (`geospade run
    demo` does the same); --data landscape runs pipelines/demo-landscape.toml on a generated
    landscape instead.

    Example: geospade demo -o demo/
    """
    from geospade.demo import describe_result, run_demo

    if size is not None and data != "landscape":
        raise click.UsageError("--size sets the generated landscape's size: add --data landscape")
    overrides: dict = {}
    if size is not None:
        overrides["landscape"] = {"width": size, "height": size}
    if steps is not None:
        overrides["train"] = {"steps": steps}
    result = run_demo(out, data=data, overrides=overrides, force="all" if force else None,
                      quiet=quiet)
    click.echo(describe_result(result))
