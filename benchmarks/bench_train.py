"""Training and inference speed of the SPADE model (issue 4), beside the NVlabs reference.

For configs A (64 px, batch 4, ngf=ndf=16), B (128 px, batch 2, 32) and C (256 px, batch 1, 64),
all with 7 classes, 4 bands, num_D 2, n_layers_D 4, no VAE, no VGG, it times

* one training iteration: ``geospade.training.step.TrainStep``, the step ``geospade train`` runs,
  on a fixed random batch — a generator step (hinge + feature matching x 10, discriminator
  frozen), a discriminator step on the generator step's detached fakes (fake and real in one
  batch), Adam with TTUR (G 1e-4, D 4e-4, betas 0, 0.9), and the EMA update. The reference's
  discriminator step instead re-runs the generator (without gradients) for its fakes, and it has
  no EMA;
* generator inference per image, of the generator as ``geospade synthesize`` prepares it on a
  CPU (:func:`geospade.models.fused_generator`: spectral norm folded into the weights, batch
  norm folded into SPADE's convolutions, oneDNN-prepacked weights and fused post-ops; bf16
  channels-last in bf16) under ``torch.inference_mode()``;
* FLOPs of both, counted with ``torch.utils.flop_counter.FlopCounterMode``;

for SPADE and CLADE, in fp32 and in bf16 autocast with channels-last tensors. With
``--reference DIR`` (the materialised NVlabs SPADE code, see ../shared/anchors/) it builds the
reference's trainer at the same settings (3 bands, its default sync batch norm; as the anchor
script does) and times it in turns with geospade's variants, so both see the same machine load.

    flock /tmp/geospade-bench.lock .venv/bin/python benchmarks/bench_train.py \
        --reference /work/ref/nvlabs

Machines here vary by up to 1.7x from day to day: only compare numbers from the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import sys
import time
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from geospade.models import (
    Generator,
    MultiscaleDiscriminator,
    autocast_context,
    fused_available,
    synthesis_generator,
    to_channels_last,
)
from geospade.training.step import GeneratorStep, TrainStep, adam

CONFIGS = {"A": (64, 4, 16), "B": (128, 2, 32), "C": (256, 1, 64)}  # size, batch, ngf = ndf
ROUNDS = {"A": 10, "B": 5, "C": 3}
NUM_CLASSES, BANDS, NUM_D, N_LAYERS_D, LAMBDA_FM = 7, 4, 2, 4, 10.0
# The reference's FLOPs per iteration / per image (issue 4, counted with FlopCounterMode).
REFERENCE_GFLOP = {"A": (57.8, 3.5), "B": (252.0, 29.7), "C": (1210.0, 275.0)}


@dataclass
class Result:
    config: str
    norm: str
    precision: str
    train_s: float
    infer_ms: float
    gflop_iter: float
    gflop_img: float


class Setup:
    """Models, optimisers, the training step and one batch for a config."""

    def __init__(self, name: str, norm: str, bf16: bool,
                 channels_last: bool | None = None) -> None:
        size, batch, width = CONFIGS[name]
        torch.manual_seed(0)
        self.generator = Generator(NUM_CLASSES, BANDS, ngf=width, crop_size=size, norm=norm)
        self.discriminator = MultiscaleDiscriminator(NUM_CLASSES, BANDS, ndf=width,
                                                     n_layers=N_LAYERS_D, num_d=NUM_D)
        ema = copy.deepcopy(self.generator).eval().requires_grad_(False)
        self.labels = torch.randint(0, NUM_CLASSES, (batch, size, size))
        self.real = torch.rand(batch, BANDS, size, size) * 2 - 1
        self.bf16 = bf16
        if bf16 if channels_last is None else channels_last:
            for module in (self.generator, self.discriminator, ema):
                to_channels_last(module, parameters=False)  # as `geospade train` does
            self.real = self.real.contiguous(memory_format=torch.channels_last)
        g_module = GeneratorStep(self.generator, None)
        opt_g = adam(g_module.parameters(), 1e-4, (0.0, 0.9))
        opt_d = adam(self.discriminator.parameters(), 4e-4, (0.0, 0.9))
        self.step = TrainStep(g_module, self.discriminator, opt_g, opt_d, ema=ema,
                              lambda_fm=LAMBDA_FM, autocast=self.autocast)

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast_context("cpu", "bf16" if self.bf16 else None)

    def iteration(self) -> None:
        self.step(self.labels, self.real)

    def eval(self) -> None:
        # The generator as `geospade synthesize` runs it on a CPU (load_synthesis_model): the
        # oneDNN-fused form, or where PyTorch lacks it the eager inference copy (spectral norm
        # folded; in bf16 the weights stored bf16 and channels-last).
        self.inference = synthesis_generator(
            self.generator, "cpu", torch.bfloat16 if self.bf16 else None,
            batch_size=len(self.labels))

    def infer(self) -> None:
        with torch.inference_mode(), self.autocast():
            self.inference(self.labels)


class Reference:
    """The NVlabs SPADE trainer at a config, built the way the shared anchor script builds it
    (``../shared/anchors/nvlabs_spade_bench.py``): its code is run, not copied."""

    def __init__(self, directory: str, name: str) -> None:
        size, batch, width = CONFIGS[name]
        if directory not in sys.path:
            sys.path.insert(0, directory)
        from options.train_options import TrainOptions
        from trainers.pix2pix_trainer import Pix2PixTrainer

        argv = sys.argv
        sys.argv = ["train.py", "--gpu_ids", "-1", "--label_nc", str(NUM_CLASSES),
                    "--no_instance", "--no_vgg_loss", "--crop_size", str(size), "--load_size",
                    str(size), "--aspect_ratio", "1", "--batchSize", str(batch), "--ngf",
                    str(width), "--ndf", str(width), "--num_D", str(NUM_D), "--n_layers_D",
                    str(N_LAYERS_D), "--dataset_mode", "custom", "--label_dir", directory,
                    "--image_dir", directory, "--checkpoints_dir", "/tmp/nvlabs-ckpt",
                    "--name", "bench", "--nThreads", "0"]
        try:
            with contextlib.redirect_stdout(sys.stderr if VERBOSE else open("/dev/null", "w")):
                torch.manual_seed(0)
                self.trainer = Pix2PixTrainer(TrainOptions().parse())
        finally:
            sys.argv = argv
        self.batch = batch
        self.data = {"label": torch.randint(0, NUM_CLASSES, (batch, 1, size, size)).float(),
                     "instance": torch.zeros(1),
                     "image": torch.rand(batch, 3, size, size) * 2 - 1, "path": [""] * batch}
        self.semantics = None

    def iteration(self) -> None:
        self.trainer.run_generator_one_step(self.data)
        self.trainer.run_discriminator_one_step(self.data)

    def eval(self) -> None:
        model = self.trainer.pix2pix_model
        model.netG.eval()
        self.semantics = model.preprocess_input(self.data)[0]

    def infer(self) -> None:
        with torch.no_grad():
            self.trainer.pix2pix_model.netG(self.semantics)


VERBOSE = False


def _fused_conv_flop(x_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of oneDNN's fused convolutions (the fused generator), which FlopCounterMode does
    not know: those of the convolution (post-ops are elementwise, which it leaves out).
    ``args`` is ``(W, B, ...)``, or ``(other, W, B, ...)`` for the binary post-ops."""
    binary = args[1] is not None and len(args[1]) == 4
    w_shape = args[1] if binary else args[0]
    return conv_flop_count(list(x_shape), list(w_shape), list(out_shape), transposed=False)


def _flop_counter() -> FlopCounterMode:
    mapping = {}
    if fused_available():
        op = torch.ops.mkldnn._convolution_pointwise  # keyed by the overload packet
        mapping = {op: _fused_conv_flop}
    return FlopCounterMode(display=False, custom_mapping=mapping)


def _gflop(fn) -> float:
    counter = _flop_counter()
    with counter:
        fn()
    return counter.get_total_flops() / 1e9


def _interleaved_minimum(fns: list, rounds: int, warmup: int) -> list[float]:
    """Seconds per call of each function: the minimum over ``rounds`` calls, taken in turns.

    Other jobs share this machine; taking the functions in turns exposes each to the same load,
    and the minimum is the run least disturbed by them.
    """
    for fn in fns:
        for _ in range(warmup):
            fn()
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def run_config(name: str, variants: list[tuple[str, bool]], rounds: int,
               reference_dir: str | None) -> list[Result]:
    """Time the reference (if given) and each (norm, bf16) variant at config ``name``."""
    batch = CONFIGS[name][1]
    runners: list = []
    labels = []
    if reference_dir:
        runners.append(Reference(reference_dir, name))
        labels.append(("nvlabs", "fp32"))
    for norm, bf16 in variants:
        runners.append(Setup(name, norm, bf16))
        labels.append((norm, "bf16+cl" if bf16 else "fp32"))
    gflop_iter = [_gflop(r.iteration) for r in runners]
    train = _interleaved_minimum([r.iteration for r in runners], rounds, 2)
    for r in runners:
        r.eval()
    gflop_img = [_gflop(r.infer) / batch for r in runners]
    infer = _interleaved_minimum([r.infer for r in runners], max(3, rounds), 1)
    return [Result(name, norm, precision, t, i / batch * 1000, fi, fg)
            for (norm, precision), t, i, fi, fg
            in zip(labels, train, infer, gflop_iter, gflop_img, strict=True)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--norms", nargs="+", default=["spade", "clade"],
                        choices=["spade", "clade"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"],
                        choices=["fp32", "bf16"],
                        help="bf16 = bf16 autocast with channels-last models and images")
    parser.add_argument("--reference", metavar="DIR",
                        help="materialised NVlabs SPADE code: time it beside geospade")
    parser.add_argument("--rounds", type=int, default=None,
                        help="timed iterations per variant (default A 10, B 5, C 3); the "
                             "minimum is reported")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    variants = [(norm, precision == "bf16") for norm in args.norms
                for precision in args.precisions]
    rows = []
    for name in args.configs:
        results = run_config(name, variants, args.rounds or ROUNDS[name], args.reference)
        reference = results[0] if args.reference else None
        for result in results:
            print(result, file=sys.stderr, flush=True)
            if result is not reference:
                rows.append((result, reference))

    head = (f"{'cfg':3} {'norm':5} {'precision':9} {'s/iter':>7} {'ref':>7} {'x ref':>6} "
            f"{'ms/img':>8} {'ref':>8} {'x ref':>6} {'GFLOP/it':>9} {'ref':>6} {'GFLOP/img':>9}")
    print(head)
    print("-" * len(head))
    for r, ref in rows:
        ref_s = f"{ref.train_s:7.3f}" if ref else f"{'-':>7}"
        ref_ms = f"{ref.infer_ms:8.1f}" if ref else f"{'-':>8}"
        x_s = f"{ref.train_s / r.train_s:6.2f}" if ref else f"{'-':>6}"
        x_ms = f"{ref.infer_ms / r.infer_ms:6.2f}" if ref else f"{'-':>6}"
        ref_flop = f"{ref.gflop_iter:6.1f}" if ref else f"{REFERENCE_GFLOP[r.config][0]:6.1f}"
        print(f"{r.config:3} {r.norm:5} {r.precision:9} {r.train_s:7.3f} {ref_s} {x_s} "
              f"{r.infer_ms:8.1f} {ref_ms} {x_ms} {r.gflop_iter:9.1f} {ref_flop} "
              f"{r.gflop_img:9.1f}")
    print("Times: the minimum over rounds taken in turns with the reference (other jobs share "
          "this machine). x ref = reference time / geospade time (higher is faster). 'ref' "
          "columns: the NVlabs code in this same run (GFLOP counted the same way; without "
          "--reference, issue 4's figures). s/iter is not the same procedure on both sides: "
          "geospade's iteration is the step `geospade train` runs (its D step reuses the G "
          "step's detached fakes: one generator forward per iteration; plus the EMA update), "
          "while the reference's D step regenerates the fakes with a second generator forward "
          "(no gradients) and it keeps no EMA. ms/img is the generator as `geospade synthesize` "
          "runs it on a CPU (oneDNN-fused: spectral norm and batch norm folded into the weights, "
          "prepacked weights, fused post-ops; bf16: channels-last); the reference's generator "
          "in eval mode.")


if __name__ == "__main__":
    main()
