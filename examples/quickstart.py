"""geospade quick start: the Python API end to end on a small synthetic landscape.

    python examples/quickstart.py [WORKDIR] [--steps N]

Makes a 256 x 256 land cover + 4-band imagery pair, tiles it, trains a tiny generator for a few
hundred steps, synthesizes the whole land cover as a Cloud-Optimized GeoTIFF and evaluates it
against the held-out chips. Takes a few minutes on a laptop CPU; for real data replace
make_landscape by your own land-cover and imagery rasters (see pipelines/chesapeake.toml).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import geospade
from geospade.evaluation.report import format_summary
from geospade.evaluation.segmenter import SegmenterSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", nargs="?", default="quickstart-out", type=Path)
    parser.add_argument("--steps", type=int, default=300, help="training steps")
    args = parser.parse_args()
    work: Path = args.workdir
    work.mkdir(parents=True, exist_ok=True)

    # 1. Inputs: a classified land cover (Chesapeake 7-class values) and aligned imagery.
    pair = geospade.make_landscape(work / "landcover.tif", work / "imagery.tif",
                                   width=256, height=256, scheme="chesapeake7", seed=1,
                                   feature_scale=0.5)

    # 2. Tile: 64-px mask/image chips; whole 2 x 2-chip blocks go to the val split.
    summary = geospade.tile(pair.landcover, pair.imagery, work / "chips", scheme="chesapeake7",
                            size=64, val_fraction=0.25, block=2, overwrite=True)
    print(summary.describe())

    # 3. Train: a tiny CLADE generator, no VGG loss (nothing to download).
    result = geospade.train(
        work / "chips", work / "run", steps=args.steps, batch_size=8, ngf=8, ndf=16, num_d=1,
        n_layers_d=3, norm="clade", lr_g=5e-4, lr_d=1e-3, ema_decay=0.99, lambda_vgg=0.0,
        vgg_weights="off", preview_every=0, val_every=0, overwrite=True,
    )
    print(f"trained {result.step} steps -> {result.checkpoint}")

    # 4. Synthesize the whole land cover: same CRS, grid and size, as a COG.
    info = geospade.synthesize(result.checkpoint, pair.landcover, work / "synthetic.tif",
                               cog=True, overwrite=True)
    print(f"synthetic imagery: {info['output']} ({info['width']} x {info['height']})")

    # 5. Evaluate on the val chips, with the class-mean and shuffled-real baselines.
    report = geospade.evaluate(result.checkpoint, work / "chips", split="val",
                               out=work / "report.json", segmenter=SegmenterSettings(steps=100),
                               overwrite=True)
    print(format_summary(report))
    print(f"report: {work / 'report.json'}  figure: {report['figure']}")


if __name__ == "__main__":
    main()
