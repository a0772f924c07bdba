"""Training speed on a shared machine: quiet, beside a busy core, beside a second training.

On 2 CPUs, beside another geospade process, a training with torch's default thread count (one
OpenMP thread per CPU, spinning while it waits) ran 40x slower than with 1 thread. This times a
short, tiny training (64-px chips, ngf = ndf = 16, one discriminator, no VGG) through
``geospade.training.loop.train`` in a fresh process per measurement, under three thread
policies:

* ``default``: torch's default threads, OpenMP's default (spinning) wait;
* ``one``: 1 thread (``geospade train --threads 1``);
* ``auto``: :func:`geospade.threads.choose_threads` (CPUs in the affinity mask less the busy
  ones) with ``OMP_WAIT_POLICY=PASSIVE`` set before torch is imported;

each quiet, beside a process spinning on one core, and beside a second training that uses the
same policy. It prints it/s and the ratio to the same policy's quiet rate; the target is that
every contended rate stays at or above 0.4x quiet.

    flock /tmp/geospade-bench.lock .venv/bin/python benchmarks/bench_contention.py

Run it on an otherwise idle machine: other load counts as contention in every row.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

POLICIES = ("default", "one", "auto")
SCENARIOS = ("quiet", "busy loop", "2nd training")
TARGET = 0.4
TINY = dict(batch_size=4, ngf=16, ndf=16, num_d=1, n_layers_d=3, spade_hidden=32,
            lambda_vgg=0.0, vgg_weights="off", preview_every=0, val_every=0,
            checkpoint_every=10**6, device="cpu", seed=0)


class _Stop(Exception):
    """Raised from the step callback when a measurement has run long enough."""


def make_chips(folder: Path) -> Path:
    """A 16-chip store (256 x 256 px synthetic landscape, 64-px chips)."""
    from geospade.landscape import make_landscape
    from geospade.raster.tiling import tile

    make_landscape(folder / "lc.tif", folder / "img.tif", width=256, height=256, bands=4, seed=0)
    tile(folder / "lc.tif", folder / "img.tif", folder / "chips", size=64, quiet=True)
    return folder / "chips"


def worker(policy: str, chips: str, run_dir: str, steps: int, warmup: int,
           max_seconds: float, ready: bool) -> None:
    """One training in this (fresh) process under ``policy``; prints a JSON result line."""
    threads = 0
    if policy == "auto":
        # Before torch is imported: OpenMP reads its wait policy once, when torch loads it.
        from geospade.threads import choose_threads, describe_threads, use_passive_wait

        use_passive_wait()
        threads = choose_threads(None)
    elif policy == "one":
        threads = 1
    import torch

    from geospade.training.loop import train

    times: list[float] = []
    seen: list[str] = []
    warmup = max(1, warmup)

    def callback(step: int, losses: dict[str, float]) -> None:
        times.append(time.perf_counter())
        if len(times) == 1:  # while training: train() restores the thread count after
            seen.append(describe_threads() if policy == "auto"
                        else f"threads: {torch.get_num_threads()}")
        if ready and len(times) == warmup:
            print("ready", flush=True)
        if len(times) > warmup and times[-1] - times[warmup - 1] > max_seconds:
            raise _Stop

    try:
        train(chips, run_dir, steps=steps, quiet=True, callback=callback, threads=threads,
              **TINY)
    except _Stop:
        pass
    done = len(times) - warmup
    rate = done / (times[-1] - times[warmup - 1]) if done > 0 else float("nan")
    print(json.dumps({"rate": rate, "steps": done, "threads": seen[0]}), flush=True)


def _env() -> dict[str, str]:
    """A child's environment without OpenMP/MKL settings: each policy sets its own."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("OMP_", "GOMP_", "KMP_", "MKL_NUM"))}


def _worker_cmd(policy: str, chips: Path, run_dir: Path, args: argparse.Namespace,
                steps: int, ready: bool = False) -> list[str]:
    return [sys.executable, __file__, "--worker", policy, "--chips", str(chips),
            "--run-dir", str(run_dir), "--steps", str(steps), "--warmup", str(args.warmup),
            "--max-seconds", str(args.max_seconds), *(["--ready"] if ready else [])]


def _start_competitor(scenario: str, policy: str, chips: Path, tmp: Path,
                      args: argparse.Namespace) -> subprocess.Popen | None:
    if scenario == "busy loop":
        return subprocess.Popen([sys.executable, "-c", "while True: pass"])
    if scenario == "2nd training":
        cmd = _worker_cmd(policy, chips, tmp / f"rival-{policy}", args, steps=10**6, ready=True)
        cmd[cmd.index("--max-seconds") + 1] = "1e9"
        rival = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, text=True)
        rival.stdout.readline()  # "ready": it is past its start-up and training
        return rival
    return None


def measure(scenario: str, policy: str, chips: Path, tmp: Path,
            args: argparse.Namespace) -> dict:
    """it/s of one training under ``policy`` while ``scenario`` runs beside it."""
    rival = _start_competitor(scenario, policy, chips, tmp, args)
    try:
        run_dir = tmp / f"run-{policy}-{scenario.replace(' ', '-')}"
        done = subprocess.run(_worker_cmd(policy, chips, run_dir, args, args.steps),
                              env=_env(), capture_output=True, text=True, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        if rival is not None:
            rival.kill()
            rival.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=30, help="steps per measurement (default 30)")
    p.add_argument("--warmup", type=int, default=3, help="steps not timed (default 3)")
    p.add_argument("--max-seconds", type=float, default=60.0,
                   help="stop a measurement after this long (default 60)")
    p.add_argument("--policies", default=",".join(POLICIES))
    p.add_argument("--worker", choices=POLICIES, help=argparse.SUPPRESS)
    p.add_argument("--chips", help=argparse.SUPPRESS)
    p.add_argument("--run-dir", help=argparse.SUPPRESS)
    p.add_argument("--ready", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker, args.chips, args.run_dir, args.steps, args.warmup,
               args.max_seconds, args.ready)
        return
    policies = args.policies.split(",")
    with tempfile.TemporaryDirectory(prefix="geospade-contention-") as name:
        tmp = Path(name)
        chips = make_chips(tmp)
        rates: dict[tuple[str, str], dict] = {}
        for scenario in SCENARIOS:
            for policy in policies:
                rates[scenario, policy] = measure(scenario, policy, chips, tmp, args)
    report(rates, policies, args)


def report(rates: dict[tuple[str, str], dict], policies: list[str],
           args: argparse.Namespace) -> None:
    print(f"Tiny training (64 px, batch 4, ngf=ndf=16, 1 D), {args.steps} steps "
          f"({args.warmup} untimed, at most {args.max_seconds:.0f} s); "
          f"{len(os.sched_getaffinity(0))} CPUs in the affinity mask; it/s (x own quiet rate)")
    print(f"{'policy':<9}" + "".join(f"{s:>22}" for s in SCENARIOS))
    verdicts = []
    for policy in policies:
        quiet = rates["quiet", policy]["rate"]
        cells, worst = [], float("inf")
        for scenario in SCENARIOS:
            rate = rates[scenario, policy]["rate"]
            cells.append(f"{rate:>12.2f} ({rate / quiet:4.2f}x)")
            if scenario != "quiet":
                worst = min(worst, rate / quiet)
        print(f"{policy:<9}" + "".join(f"{c:>22}" for c in cells))
        verdicts.append(f"{policy} {'meets' if worst >= TARGET else 'misses'} it ({worst:.2f}x)")
    for policy in policies:
        print(f"  {policy} beside a 2nd training: {rates['2nd training', policy]['threads']}")
    print(f"target, every contended rate >= {TARGET}x quiet: " + "; ".join(verdicts))


if __name__ == "__main__":
    main()
