"""Speed and memory of `geospade synthesize`: prints a table (not a test).

For each land-cover size, generator (SPADE, CLADE; ngf 16, 64-px windows, random weights with
the last conv scaled so the output spreads like imagery, see ``make_checkpoint``), overlap,
precision and output codec it runs one synthesis in a fresh process and reports:

* Mpx/s end to end (reading, class mapping, generator, blending, writing, overviews);
* end-to-end time over the generator's own time for the same windows (target <= 1.15 at
  overlap 0: reading, blending and writing add at most 15 %);
* peak RSS of the process (target: under 1.5 GB and the same for every size);
* fp32 and bf16, with the fused generator synthesize runs on CPUs, or ("-eager") the eager one.

With ``--reference DIR`` it also runs the NVlabs SPADE generator (config A: 64 px, batch 4,
ngf 16, 7 classes, fp32) through ``/work/shared/anchors/nvlabs_spade_bench.py`` beside it, so the
numbers come from the same machine under the same load.

Run one at a time on a shared machine:
    flock /tmp/geospade-bench.lock python benchmarks/bench_synthesize.py --sizes 4096 \
        --reference /work/ref/nvlabs
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ANCHOR = Path("/work/shared/anchors/nvlabs_spade_bench.py")
# name -> (amp, channels_last, fused). The default CPU generator is the oneDNN-fused one, which
# picks its own layout (bf16 channels-last); "-eager" runs the eager inference copy instead.
PRECISIONS = {"fp32": ("none", None, True), "bf16": ("bf16", None, True),
              "fp32-eager": ("none", False, False), "bf16-cl-eager": ("bf16", True, False)}


def make_landcover(path: Path, size: int, seed: int = 0) -> Path:
    """A chesapeake7 land cover of size x size: blocky regions of all six classes with roads,
    written in strips (any size fits in memory)."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    cell = 97
    n = size // cell + 2
    coarse = rng.integers(1, 5, (n, n), dtype=np.uint8)  # water, trees, low veg, barren
    built = rng.random((n, n)) < 0.15
    coarse[built] = 5
    road_rows = set(rng.choice(size, size // 300 + 1, replace=False).tolist())
    road_cols = rng.choice(size, size // 300 + 1, replace=False)
    tmp = path.with_suffix(".tmp.tif")
    with rasterio.open(tmp, "w", driver="GTiff", width=size, height=size, count=1,
                       dtype="uint8", crs="EPSG:26918", nodata=0,
                       transform=from_origin(360000.0, 4350000.0, 1.0, 1.0), tiled=True,
                       blockxsize=512, blockysize=512, compress="deflate") as dst:
        step = 512
        cols = np.arange(size) // cell
        for r0 in range(0, size, step):
            rows = np.arange(r0, min(r0 + step, size))
            strip = coarse[(rows // cell)[:, None], cols[None, :]]
            for dr in (-2, -1, 0, 1, 2):
                strip[:, np.clip(road_cols + dr, 0, size - 1)] = 6
            for i, r in enumerate(rows):
                if any(abs(r - rr) <= 2 for rr in road_rows):
                    strip[i] = 6
            dst.write(strip, 1, window=Window(0, r0, size, len(rows)))
    tmp.rename(path)
    return path


def make_checkpoint(path: Path, norm: str, ngf: int, window: int) -> Path:
    """A random-weight generator whose output spreads over the value range like imagery.

    Freshly initialised, the generator's output is a flat grey (std 1e-6 to 4e-4 in [-1, 1])
    that DEFLATE squeezes 27:1, which would make writing look free. Its last conv is scaled so
    the output has std 0.4; the generator computes the same FLOPs, and the file compresses
    like generated imagery (about 1.6:1).
    """
    import torch

    from geospade.formats.checkpoint import save_checkpoint
    from geospade.models import Generator
    from geospade.normalization import BandStats
    from geospade.schemes import CHESAPEAKE7

    if path.exists():
        return path
    torch.manual_seed(0)
    g = Generator(6, 4, ngf=ngf, crop_size=window, norm=norm).eval()
    with torch.no_grad():
        sample = torch.from_numpy(np.kron(np.random.default_rng(0).integers(0, 6, (4, 4)),
                                          np.ones((window, window), np.int64)))[None]
        g.conv_img.weight.mul_(0.4 / float(g(sample).std()))
    bands = [BandStats(n, "uint8", 0, 255).to_dict() for n in ("red", "green", "blue", "nir")]
    return save_checkpoint(path, {
        "generator_config": g.config, "scheme": CHESAPEAKE7.to_dict(), "bands": bands,
        "chip_size": window, "generator": g.state_dict(), "config": {"ngf": ngf}})


def worker(args: argparse.Namespace) -> None:
    """One synthesis in this process; prints one JSON line."""
    import torch

    from geospade.synthesis import load_synthesis_model, synthesize

    torch.set_num_threads(args.threads)
    work = Path(args.workdir)
    lc = make_landcover(work / f"landcover_{args.size}.tif", args.size)
    ckpt = make_checkpoint(work / f"{args.norm}_ngf{args.ngf}_spread.pt", args.norm, args.ngf,
                           args.window)
    amp, channels_last, fused = PRECISIONS[args.precision]
    model = load_synthesis_model(ckpt, device="cpu", amp=amp, channels_last=channels_last,
                                 fused=fused)
    out = work / "out.tif"
    summary = synthesize(model, lc, out, overlap=args.overlap, batch_size=args.batch_size,
                         compress=args.compress, overwrite=True, quiet=True)
    summary["file_mb"] = out.stat().st_size / 1e6
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB
    print("RESULT " + json.dumps({**vars(args), "summary": summary, "peak_rss_mb": peak}),
          flush=True)


def run_config(args: argparse.Namespace, **config) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--workdir", args.workdir,
           "--threads", str(args.threads), "--batch-size", str(args.batch_size),
           "--ngf", str(args.ngf), "--window", str(args.window)]
    for key, value in config.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"worker failed: {proc.stderr.strip()[-2000:]}")


def run_reference(ref_dir: str, threads: int) -> float | None:
    """NVlabs SPADE generator, config A: ms per 64-px image at batch 4 (fp32)."""
    proc = subprocess.run([sys.executable, str(ANCHOR), ref_dir, "A"], capture_output=True,
                          text=True, cwd="/tmp")
    match = re.search(r"G inference ([\d.]+) ms/img", proc.stdout)
    return float(match.group(1)) if match else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[4096],
                   help="land-cover sizes (square); 16384 takes long on 2 cores")
    p.add_argument("--norms", nargs="+", default=["spade", "clade"], choices=["spade", "clade"])
    p.add_argument("--overlaps", type=int, nargs="+", default=[0, 16, 32])
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"],
                   choices=list(PRECISIONS))
    p.add_argument("--compressions", nargs="+", default=["deflate"],
                   choices=["deflate", "zstd", "lzw", "none"],
                   help="output codecs for the overlap-0 rows (overlap rows: the first)")
    p.add_argument("--extra-overlap-precision", default=None,
                   help="precision used for the overlap > 0 rows (default: the first)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--ngf", type=int, default=16)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", default="/tmp/geospade-bench-synthesize")
    p.add_argument("--reference", default=None, help="NVlabs SPADE checkout (materialised)")
    # internal: one configuration in a fresh process
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--norm", help=argparse.SUPPRESS)
    p.add_argument("--overlap", type=int, help=argparse.SUPPRESS)
    p.add_argument("--precision", help=argparse.SUPPRESS)
    p.add_argument("--compress", default="deflate", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    Path(args.workdir).mkdir(parents=True, exist_ok=True)

    configs = []
    overlap_precision = args.extra_overlap_precision or args.precisions[0]
    for size in args.sizes:
        for norm in args.norms:
            for precision in args.precisions:
                for compress in args.compressions:
                    configs.append({"size": size, "norm": norm, "overlap": 0,
                                    "precision": precision, "compress": compress})
            for overlap in [o for o in args.overlaps if o]:
                configs.append({"size": size, "norm": norm, "overlap": overlap,
                                "precision": overlap_precision,
                                "compress": args.compressions[0]})

    ref_before = run_reference(args.reference, args.threads) if args.reference else None
    rows = []
    start = time.time()
    for config in configs:
        r = run_config(args, **config)
        s = r["summary"]
        rows.append((config, s, r["peak_rss_mb"]))
        print(f"  done {config} in {s['seconds']:.0f} s", file=sys.stderr, flush=True)
    ref_after = run_reference(args.reference, args.threads) if args.reference else None

    print(f"\ngeospade synthesize: ngf {args.ngf}, {args.window}-px windows, batch "
          f"{args.batch_size}, {args.threads} threads, CPU, 4 uint8 bands, GeoTIFF deflate + "
          f"overviews ({time.time() - start:.0f} s total)\n")
    head = ("| generator | size | overlap | precision | codec | windows | end-to-end s | "
            "Mpx/s | generator s | e2e / generator | peak RSS MB | file MB |")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for config, s, rss in rows:
        print(f"| {config['norm']} | {config['size']}² | {config['overlap']} | "
              f"{config['precision']} | {config['compress']} | {s['windows_run']} | "
              f"{s['seconds']:.1f} | {s['mpx_per_s']:.3f} | {s['generator_seconds']:.1f} | "
              f"{s['seconds'] / s['generator_seconds']:.3f} | {rss:.0f} | "
              f"{s['file_mb']:.0f} |")
    if args.reference:
        print()
        for label, ms in (("before", ref_before), ("after", ref_after)):
            if ms is None:
                print(f"NVlabs SPADE reference ({label}): failed to run")
            else:
                print(f"NVlabs SPADE generator, config A (64 px, batch 4, ngf 16, 7 classes, "
                      f"fp32), run {label} the table: {ms:.1f} ms/img = "
                      f"{64 * 64 / ms / 1000:.3f} Mpx/s (generator only, no I/O)")
        mss = [m for m in (ref_before, ref_after) if m]
        if mss:
            ref_mpx = 64 * 64 / (sum(mss) / len(mss)) / 1000
            for config, s, _ in rows:
                if config["overlap"] == 0:
                    print(f"  {config['norm']} {config['precision']} {config['compress']} "
                          f"{config['size']}²: "
                          f"{s['mpx_per_s'] / ref_mpx:.2f}x the reference, end to end")


if __name__ == "__main__":
    main()
