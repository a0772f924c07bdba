"""`geospade train CHIPS -o RUN [--config FILE.toml] [options]`: train a SPADE generator."""

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
from geospade.training.config import (
    AMP_MODES,
    DISCRIMINATORS,
    GAN_MODES,
    NORMS,
    PARAM_FREE_NORMS,
    UPSAMPLING,
)


def _opt(name: str, type_, help_: str, **kw):
    """An option whose default is None ("not given"), so the config file's value stands."""
    return click.option(name, type=type_, default=None, help=help_, **kw)


def _flag(name: str, help_: str):
    return click.option(name, default=None, help=help_)


@click.command("train", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("chips", type=click.Path(path_type=Path))
@click.option("-o", "--output", "run_dir", required=True, type=click.Path(path_type=Path),
              help="Run folder: checkpoint.pt, config.toml, metrics.csv, previews/, validation/.")
@click.option("--config", "config_file", type=click.Path(path_type=Path), default=None,
              help="TOML file with the same keys as the options (flat or under [train]); "
                   "options given on the command line override it.")
@_opt("--steps", click.IntRange(min=1), "Training iterations (G step + D step). [2000]")
@_opt("--epochs", click.IntRange(min=1), "Train this many passes over the train split instead "
      "of --steps (give one of the two; either overrides the other from --config).")
@batch_size_option(None, "Chips per iteration (per process). [4]")
@_opt("--ngf", click.IntRange(min=2), "Generator width. [64]")
@_opt("--ndf", click.IntRange(min=1), "Discriminator width. [64]")
@_opt("--discriminator", click.Choice(DISCRIMINATORS), "patchgan: SPADE's multi-scale PatchGAN "
      "on (class map, image) with feature matching; oasis: a U-Net that segments each pixel "
      "into the classes or 'fake' (OASIS), trained with LabelMix, no VGG loss needed (with "
      "--vgg-weights auto the VGG loss is then off). [patchgan]")
@_opt("--num-d", click.IntRange(min=1), "Discriminator scales (patchgan). [2]")
@_opt("--n-layers-d", click.IntRange(min=1), "Conv layers per discriminator scale (patchgan). "
      "[4]")
@_opt("--lr-g", float, "Generator learning rate (TTUR). [1e-4]")
@_opt("--lr-d", float, "Discriminator learning rate (TTUR). [4e-4]")
@_opt("--beta1", float, "Adam beta1. [0]")
@_opt("--beta2", float, "Adam beta2. [0.9]")
@_opt("--lambda-fm", float, "Weight of the feature-matching loss (patchgan). [10]")
@_opt("--lambda-vgg", float, "Weight of the VGG19 perceptual loss; 0 turns it off. [10]")
@_opt("--lambda-kl", float, "Weight of the style encoder's KL loss (with --use-vae). [0.05]")
@_opt("--lambda-labelmix", float, "Weight of the LabelMix loss (oasis): the discriminator must "
      "segment a mix of real and generated pixels consistently with its two parts; 0 turns it "
      "off. [10]")
@_opt("--gan-mode", click.Choice(GAN_MODES), "Adversarial loss. [hinge]")
@_flag("--use-vae/--no-vae", "Train a style encoder (multi-modal, style-guided output). [off]")
@_opt("--z-dim", click.IntRange(min=1), "Size of the style code (with --use-vae). [256]")
@_opt("--noise-dim", click.IntRange(min=0), "Noise channels beside the class map in the "
      "generator (OASIS's 3D noise: one random vector per image at every pixel), so one class "
      "map gives many images (synthesize --seed picks one); 0: none, one image per class map. "
      "[0]")
@_opt("--norm", click.Choice(NORMS), "clade (per-class lookup of the modulation: faster, and its "
      "images trained land-cover models better at the same CPU time) or spade (conv net on the "
      "class map, as in the SPADE paper). [clade]")
@_opt("--param-free-norm", click.Choice(PARAM_FREE_NORMS), "Normalisation before modulation; "
      "batch statistics are frozen at inference (no seams when tiling). [batch]")
@_opt("--num-upsampling-layers", click.Choice(UPSAMPLING), "normal (stride 32), more (64) or "
      "most (128); the chip size must be a multiple of the stride. [normal]")
@_flag("--spectral-norm/--no-spectral-norm", "Spectral normalisation in G and D. [on]")
@_opt("--spade-hidden", click.IntRange(min=1), "Channels of each SPADE layer's shared conv. "
      "[128]")
@device_option(from_config=True)
@_opt("--amp", click.Choice(AMP_MODES), "Mixed precision: bf16 (CUDA, or CPUs with native bf16), "
      "fp16 (CUDA, with gradient scaling) or auto (bf16 where the device has it natively, else "
      "none; config.toml records which). [none]")
@_flag("--channels-last/--no-channels-last", "Channels-last feature maps, what makes bf16 and "
       "fp16 fast (no faster in fp32); the parameters stay contiguous for fused Adam. [auto: on "
       "with --amp bf16 or fp16]")
@seed_option("Seed of weights, data order, augmentation and noise. [0]", default=None)
@_opt("--workers", click.IntRange(min=0), "DataLoader worker processes. [0]")
@_opt("--threads", click.IntRange(min=0), "Torch CPU threads while training; 0: automatic, "
      "from the CPUs free (OMP_NUM_THREADS, when set, is taken as the count). On a small shared "
      "machine 1 can beat 2. [0]")
@_flag("--augment/--no-augment", "Random flips and 90-degree rotations of train chips. [on]")
@_opt("--ema-decay", float, "Decay of the generator weights' moving average. [0.999]")
@_opt("--lr-decay-start", click.IntRange(min=0), "Step from which learning rates fall linearly "
      "to 0 at the last step. [half-way]")
@_opt("--checkpoint-every", click.IntRange(min=1), "Write the checkpoint every N steps (and at "
      "the end). [500]")
@_opt("--preview-every", click.IntRange(min=0), "Write a preview PNG every N steps; 0 never. "
      "[500]")
@_opt("--val-every", click.IntRange(min=0), "Validate on the val split every N steps; 0 only "
      "at the end. [1000]")
@_opt("--log-every", click.IntRange(min=1), "Write a metrics.csv row every N steps. [10]")
@_opt("--val-chips", click.IntRange(min=1), "At most this many val chips per validation. [16]")
@_opt("--vgg-weights", str, "auto (torchvision's ImageNet VGG19 weights; downloaded if not "
      "cached and the network allows, else the loss is off), off, or PATH to a VGG19 state "
      "dict. [auto]")
@click.option("--no-vgg", is_flag=True, help="Same as --vgg-weights off.")
@click.option("--resume", is_flag=True, help="Continue the run in RUN exactly from its "
              "checkpoint (only --steps/--epochs and logging options may change).")
@click.option("--allow-other-chips", is_flag=True, help="With --resume: continue on CHIPS even "
              "though the checkpoint was trained on another chip store (same bands, classes "
              "and chip size), with a warning; without it that is an error.")
@overwrite_option("Replace an existing RUN folder.")
@quiet_option("No progress bar and no messages.")
def command(chips: Path, run_dir: Path, config_file: Path | None, no_vgg: bool, resume: bool,
            allow_other_chips: bool, overwrite: bool, quiet: bool, **options) -> None:
    """Train a SPADE generator on the chip store CHIPS (from `geospade tile`).

    Writes RUN/checkpoint.pt (everything `geospade synthesize` needs) every --checkpoint-every
    steps and at the end, RUN/config.toml (the resolved options), RUN/metrics.csv, preview PNGs
    and per-class validation. Under torchrun it trains data-parallel on all processes.
    """
    from geospade.training.loop import train

    if no_vgg:
        options["vgg_weights"] = "off"
    if allow_other_chips and not resume:
        raise click.UsageError("--allow-other-chips only goes with --resume")
    result = train(chips, run_dir, config=config_file, resume=resume, overwrite=overwrite,
                   quiet=quiet, allow_other_chips=allow_other_chips, **options)
    if result.checkpoint is not None and not quiet:
        click.echo(f"checkpoint: {result.checkpoint} (step {result.step})")
