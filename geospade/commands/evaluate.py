"""`geospade evaluate CHECKPOINT CHIPS`: usefulness (TSTR) and per-class realism of a checkpoint,
with baselines."""

from __future__ import annotations

from pathlib import Path

import click

from geospade.commands.options import (
    batch_size_option,
    device_option,
    overwrite_option,
    quiet_option,
    seed_option,
)


@click.command("evaluate")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.argument("chips", type=click.Path(exists=True, file_okay=False))
@click.option("--split", type=click.Choice(["val", "test", "train"]), default="val",
              show_default=True, help="Which split's masks and real images to compare with.")
@click.option("-o", "--out", type=click.Path(dir_okay=False),
              help="report.json to write (default: report-SPLIT.json next to the checkpoint). "
                   "The PNG figure goes next to it with a .png suffix.")
@click.option("--no-figure", is_flag=True, help="Do not write the PNG figure.")
@click.option("--segmenter-steps", type=click.IntRange(min=1), default=400, show_default=True,
              help="Training steps of the segmentation-consistency U-Net (cached per chip store).")
@click.option("--no-segmenter", is_flag=True,
              help="Skip segmentation consistency (no U-Net is trained).")
# Defaults as literals, equal to UtilitySettings' (tested): importing the settings here would import
# torch for `geospade evaluate --help`.
@click.option("--utility-steps", type=click.IntRange(min=1), default=200, show_default=True,
              help="Training steps of each train-on-synthetic, test-on-real (TSTR) U-Net.")
@click.option("--utility-seeds", type=click.IntRange(min=1), default=3, show_default=True,
              help="TSTR seeds (0..N-1): one U-Net per training source and seed; the report "
                   "gives mean ± sd over them.")
@click.option("--augmentation-ratio", type=click.FloatRange(min=0, min_open=True), default=1.0,
              show_default=True,
              help="Synthetic chips added per real chip to the batches of TSTR's real+synthetic "
                   "U-Net (its real chips are the real-trained U-Net's).")
@click.option("--variants", type=click.IntRange(min=1), default=1, show_default=True,
              help="Generated images per train mask for TSTR, painted as `geospade generate "
                   "--variants N --seed SEED` paints them (needs a checkpoint trained with "
                   "--noise-dim or --use-vae). With --augmentation-ratio N it measures mixing "
                   "such a store into the real one.")
@click.option("--no-utility", is_flag=True,
              help="Skip TSTR (no U-Nets are trained on real or synthetic chips).")
@click.option("--inception-weights", type=click.Path(exists=True, dir_okay=False),
              help="Local Inception v3 weight file for FID (default: the torch hub cache; FID is "
                   "skipped when none is found, never downloaded).")
@batch_size_option(8, "Chips per generator call.")
@device_option()
@seed_option("Seed of the shuffled-real baseline and of generator noise (TSTR's synthetic "
             "chips are `geospade generate --seed SEED`'s).")
@overwrite_option("Replace an existing report and figure.")
@quiet_option("No progress bars and no summary table.")
def command(checkpoint: str, chips: str, split: str, out: str | None, no_figure: bool,
            segmenter_steps: int, no_segmenter: bool, utility_steps: int, utility_seeds: int,
            augmentation_ratio: float, variants: int, no_utility: bool,
            inception_weights: str | None, batch_size: int, device: str, seed: int,
            overwrite: bool, quiet: bool) -> None:
    """Measure how useful and how real CHECKPOINT's imagery is on chip store CHIPS (real chips).

    Usefulness first (train on synthetic, test on real): the same U-Net trained on the real train
    chips, on CHECKPOINT's paintings of their masks, on class-mean paintings and on real +
    synthetic, each tested on the real SPLIT chips; the utility ratio (synthetic / real mIoU)
    and the augmentation gain, mean ± sd over --utility-seeds. The real-trained and class-mean
    U-Nets are cached in CHIPS, so another checkpoint trains only its own.

    Then realism, on the SPLIT masks. Per class and band: Wasserstein distance of pixel values to
    the real imagery (normalised and source units); per class: texture ratio (1.0 = as textured
    as the real imagery, near 0 = flat); segmentation consistency (a U-Net trained on real train
    chips reads the generated images: its mIoU there over its mIoU on the real images); FID when
    Inception weights are on this machine. Two baselines on the same masks give every number a
    reference: each class painted with its mean real spectrum, and real imagery of other chips.

    Example: geospade evaluate run/checkpoint.pt chips/ --split val -o run/report.json
    """
    from geospade.errors import GeospadeError
    from geospade.evaluation.report import evaluate
    from geospade.evaluation.segmenter import SegmenterSettings
    from geospade.evaluation.summary import format_summary
    from geospade.evaluation.utility import TooFewChipsError, UtilitySettings

    report_path = Path(out) if out else Path(checkpoint).parent / f"report-{split}.json"
    utility = None if no_utility else UtilitySettings(
        steps=utility_steps, seeds=tuple(range(utility_seeds)),
        augmentation_ratio=augmentation_ratio, variants=variants)
    try:
        report = evaluate(
            checkpoint, chips, split=split, out=report_path, figure=not no_figure,
            segmenter=None if no_segmenter else SegmenterSettings(steps=segmenter_steps),
            utility=utility, inception_weights=inception_weights, batch_size=batch_size,
            device=device, seed=seed, overwrite=overwrite, quiet=quiet,
        )
    except TooFewChipsError as exc:
        raise GeospadeError(f"{exc}: evaluate another --split, or pass --no-utility") from None
    if not quiet:
        click.echo(format_summary(report))
        click.echo("")
    click.echo(f"report: {report_path}")
    if "figure" in report:
        click.echo(f"figure: {report['figure']}")
