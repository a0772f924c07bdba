"""Time `geospade demo` stage by stage and check its headline numbers.

    flock /tmp/geospade-bench.lock .venv/bin/python benchmarks/bench_demo.py [--steps 1500]

Target (issue 6): the whole demo under 10 minutes on a 2-core CPU machine (aim: ~5), and the
trained model clearly better than the class-mean baseline on texture (ratio nearer 1.0).
Prints one table: seconds per stage, then the headline numbers of the model and both baselines.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time

from geospade.demo import run_demo
from geospade.evaluation.report import METHOD_LABELS, headline


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--out", help="work folder (default: a temporary one)")
    args = parser.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="geospade-bench-demo-")
    start = time.perf_counter()
    overrides = {"landscape": {"width": args.size, "height": args.size},
                 "train": {"steps": args.steps}}
    result = run_demo(out, data="landscape", overrides=overrides, force="all", quiet=True)
    total = time.perf_counter() - start
    print(f"geospade demo: {args.size} x {args.size} px, {args.steps} steps, "
          f"{os.cpu_count()} CPUs, torch threads 1 (run_demo's default), "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    print(f"{'stage':<12}{'seconds':>10}")
    for stage, seconds in result.seconds.items():
        print(f"{stage:<12}{seconds:>10.1f}")
    print(f"{'total':<12}{total:>10.1f}   (target < 600, aim ~300)")
    print()
    print(f"{'method':<16}{'W1 (src)':>10}{'texture':>10}{'|log tex|':>11}{'mIoU ratio':>12}")
    for method in result.report["methods"]:
        h = headline(result.report, method)
        tex = h["texture_ratio"]
        dist = abs(math.log(tex)) if tex else math.inf
        print(f"{METHOD_LABELS[method]:<16}{h['wasserstein_source']:>10.2f}{tex:>10.3f}"
              f"{dist:>11.2f}{h['miou_ratio'] or float('nan'):>12.3f}")
    model = headline(result.report, "model")["texture_ratio"] or 0.0
    flat = headline(result.report, "class_mean")["texture_ratio"] or 0.0
    beats = model > 0 and abs(math.log(model)) < 0.5 and abs(model - 1) < abs(flat - 1) / 2
    print(f"model clearly beats the class-mean baseline on texture: {'yes' if beats else 'NO'}")
    print(f"outputs in {out}")


if __name__ == "__main__":
    main()
