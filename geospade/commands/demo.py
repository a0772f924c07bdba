"""`geospade demo`: synthetic landscape -> tile -> train -> synthesize -> evaluate."""

from __future__ import annotations

import click

from geospade.commands.options import quiet_option

# The demo trains a small model for a fixed number of steps whatever the size; the landscape,
# tiling, synthesis and evaluation grow with its area (4096 px is 64 times the default's).
MIN_SIZE, MAX_SIZE = 256, 4096


@click.command("demo")
@click.option("-o", "--out", type=click.Path(file_okay=False), default="geospade-demo",
              show_default=True, help="Work folder for every output of the demo.")
@click.option("--size", type=click.IntRange(min=MIN_SIZE, max=MAX_SIZE), default=512,
              show_default=True,
              help=f"Width and height of the synthetic landscape in pixels (smaller is quicker; "
                   f"at least {MIN_SIZE} so train and val both get chips; at most {MAX_SIZE}: "
                   "for larger rasters use `geospade run` with a [landscape] table).")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Training steps (fewer is quicker and worse). [default: 1500, as in "
                   "pipelines/demo.toml]")
@click.option("--force", is_flag=True,
              help="Rerun every stage even if the folder already holds a finished demo.")
@quiet_option("No progress bars or stage messages.")
def command(out: str, size: int, steps: int | None, force: bool, quiet: bool) -> None:
    """Run the whole product on a synthetic landscape (about 3 minutes on two CPU cores).

    Makes a SIZE x SIZE (default 512 x 512) land cover + 4-band imagery pair, tiles it into
    64-px chips, trains a small generator, synthesizes the whole land cover as a Cloud-Optimized
    GeoTIFF, evaluates it on the held-out chips against two baselines, and prints where each
    output is with the headline numbers. Rerunning in the same folder skips what is done. The
    settings are those of pipelines/demo.toml (`geospade run pipelines/demo.toml` does the same).

    Example: geospade demo -o demo/
    """
    from geospade.demo import describe_result, run_demo

    overrides: dict = {"landscape": {"width": size, "height": size}}
    if steps is not None:
        overrides["train"] = {"steps": steps}
    result = run_demo(out, overrides=overrides, force="all" if force else None, quiet=quiet)
    click.echo(describe_result(result))
