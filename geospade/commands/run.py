"""`geospade run CONFIG.toml`: tile -> train -> synthesize -> evaluate, skipping done stages."""

from __future__ import annotations

import click

from geospade.commands.options import quiet_option
from geospade.pipeline import STAGES


@click.command("run")
@click.argument("config")
@click.option("-o", "--out", type=click.Path(),
              help="Work folder (default: the config's `out`, relative to the config file, or "
                   "for an installed pipeline to the current folder): new, empty, or the work "
                   "folder of an earlier run, which is continued.")
@click.option("--force", type=click.Choice(["all", *STAGES]),
              help="Rerun this stage and every later one even if they are up to date.")
@quiet_option("No progress bars, stage messages or evaluation summary; only the paths of the "
              "outputs are printed (and errors).")
def command(config: str, out: str | None, force: str | None, quiet: bool) -> None:
    """Run the pipeline in CONFIG: a TOML file, or the name of a pipeline installed with
    geospade: demo (real data installed with geospade; what `geospade demo` runs),
    demo-landscape (a generated landscape), chesapeake (a template for your data).

    Stages: [landscape] (optional synthetic inputs) -> tile -> train -> synthesize -> evaluate.
    A stage is skipped when its outputs exist and its settings and input files are unchanged
    (fingerprints in OUT/pipeline-state.json); a changed setting reruns that stage and the ones
    after it (an input counts as changed when its size or modification time does). An
    interrupted training run is resumed. The whole config is checked before any stage runs,
    and paths in it are relative to its folder (for an installed pipeline, its work folder
    too, to the current folder; `package:` paths name files installed with geospade). A folder
    that is not a pipeline work folder is never written into, nor are inputs where a stage
    writes; one run at a time per folder.

    Examples: geospade run demo;  geospade run pipelines/chesapeake.toml
    """
    from geospade.evaluation.summary import format_summary
    from geospade.pipeline import run_pipeline

    result = run_pipeline(config, out, force=force, quiet=quiet)
    if result.report and not quiet:
        click.echo(format_summary(result.report))
        click.echo("")
    for key, path in result.paths.items():
        click.echo(f"{key:<11} {path}")
