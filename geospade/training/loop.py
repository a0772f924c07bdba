"""The SPADE training loop behind ``geospade train``.

One iteration is a generator step then a discriminator step (TTUR learning rates, Adam betas
(0, 0.9) by default), followed by an update of the generator's exponential moving average (EMA),
which is what ``synthesize`` uses. The discriminator step reuses the generator step's images
(detached), so each iteration runs the generator forward once (:mod:`geospade.training.step`).
The discriminator is SPADE's multi-scale PatchGAN or (``discriminator="oasis"``) OASIS's
segmentation U-Net with LabelMix, which needs no VGG loss; the generator may take OASIS's 3D
noise (``noise_dim``), drawn per image from torch's global RNG while training and from a fixed
seed for previews and validation.

The run starts by saying how fast it can be: precision, layout (channels-last by default with
bf16/fp16) and torch's CPU threads (by default as many as CPUs are free).

Runs are exactly resumable: data order and augmentation are functions of (seed, epoch, index)
(:mod:`geospade.training.batches`); model, optimiser, EMA, gradient-scaler and RNG states are in
the checkpoint (:class:`~geospade.training.state.TrainingState`). Under ``torchrun`` the loop runs
data-parallel (:mod:`geospade.training.ddp`) and only rank 0 writes files. The run folder's
layout: docs/design.md, "Run folder".

:func:`train` checks its inputs and opens the run; the run itself is a plan (device, precision,
length), a state, a source of batches and a sink of outputs (metrics, previews, validation,
checkpoints).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geospade.atomic import atomic_path
from geospade.data.chips import ChipDataset
from geospade.errors import ArgumentError, GeospadeError
from geospade.formats.checkpoint import load_checkpoint, save_checkpoint
from geospade.formats.chip_store import manifest_sha256
from geospade.log import Progress, get_logger, progress
from geospade.models.losses import load_vgg_loss
from geospade.models.precision import (
    Precision,
    autocast_context,
    resolve_precision,
    to_channels_last,
)
from geospade.outputs import OutputLock, check_not_an_input, remove_stale_temporaries_in
from geospade.threads import choose_threads, configure_threads, usable_cpus
from geospade.training.batches import EpochSampler, epoch_batches
from geospade.training.config import TrainConfig, given_options, resolve_config, to_toml
from geospade.training.ddp import (
    DistContext,
    barrier,
    close_distributed,
    init_distributed,
    share_buffers,
    training_device,
    wrap,
)
from geospade.training.metrics import (
    METRICS_NAME,
    VALIDATION_NAME,
    MetricsLog,
    append_validation,
    validation_summary,
)
from geospade.training.preview import fixed_batch, save_validation_figure, write_preview
from geospade.training.resume import check_resumable, merge_resume_config
from geospade.training.run_folder import CHECKPOINT_NAME, RunFolder, check_run_folder
from geospade.training.state import TrainingData, TrainingState, build_models
from geospade.training.step import TrainStep

Callback = Callable[[int, dict[str, float]], None]

_LOG = get_logger("train")


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Args:
        run_dir: the run folder.
        checkpoint: path of the final checkpoint (``None`` on ranks other than 0).
        step: training steps done.
        losses: the last step's losses.
        validation: the last validation summary (``None`` without val chips).
        vgg: whether the VGG perceptual loss was used.
        models: the trained ``generator``, ``generator_ema``, ``discriminator`` (and ``encoder``).
    """

    run_dir: Path
    checkpoint: Path | None
    step: int
    losses: dict[str, float]
    validation: dict[str, Any] | None
    vgg: bool
    models: dict[str, nn.Module] = field(repr=False, default_factory=dict)


def train(
    chips: str | Path,
    run_dir: str | Path,
    config: TrainConfig | dict[str, Any] | str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
    callback: Callback | None = None,
    allow_other_chips: bool = False,
    **overrides: Any,
) -> TrainResult:
    """Train a SPADE generator (PatchGAN or OASIS discriminator) on a chip store.

    Args:
        chips: chip store folder (``geospade tile``'s output).
        run_dir: run folder; receives ``checkpoint.pt``, ``config.toml``, ``metrics.csv``,
            ``previews/``, ``validation/``.
        config: a :class:`TrainConfig`, a dict of its fields, or a TOML file path.
        resume: continue the run in ``run_dir`` from its checkpoint, exactly.
        overwrite: replace an existing run folder.
        quiet: no progress bar and no messages.
        callback: called on rank 0 after every step with ``(step, losses)``.
        allow_other_chips: with ``resume``, continue on a chip store other than the one the
            checkpoint was trained on (same bands, classes and chip size), with a warning;
            without it that is an error. Later checkpoints name the new store.
        **overrides: :class:`TrainConfig` fields that override ``config`` (``None`` = not given).

    Returns:
        A :class:`TrainResult`.

    Raises:
        GeospadeError: bad chip store, chip size not a multiple of the generator's stride,
            existing run folder, unusable checkpoint on resume, or a loss that became NaN/inf.
    """
    run_dir = Path(run_dir)
    cfg = resolve_config(config, **overrides)
    ddp = init_distributed(cfg.device)
    lock = OutputLock(run_dir, "run folder")
    try:
        _check_not_an_input(run_dir, chips, cfg, config)
        if ddp.main:  # one run per folder; removes what killed runs left beside and in it
            lock.acquire()
            remove_stale_temporaries_in(run_dir)
        # Every rank checks the same inputs (and fails the same way) before rank 0 writes.
        check_run_folder(run_dir, resume, overwrite)
        given = given_options(config, **overrides) if resume else None
        inputs = _open_inputs(chips, run_dir, cfg, given, allow_other_chips, ddp)
        folder = RunFolder(run_dir)
        with _torch_threads(inputs.config.threads, ddp) as threads:
            try:
                return _train(inputs, folder, overwrite, quiet, callback, ddp, threads)
            except BaseException:
                if ddp.main and not resume:
                    folder.abort()
                raise
    finally:
        lock.release()
        close_distributed(ddp)


# -- inputs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Inputs:
    """What a run trains on and with, checked: the chip store, its identity, the resolved config
    and (resuming) the checkpoint."""

    chips: str | Path
    dataset: ChipDataset
    chips_sha256: str
    config: TrainConfig
    checkpoint: dict[str, Any] | None


def _check_not_an_input(run_dir: Path, chips: str | Path, cfg: TrainConfig,
                        config: TrainConfig | dict[str, Any] | str | Path | None) -> None:
    """The run folder must not be, or hold, a file the run reads."""
    inputs = [("the chip store", chips)]
    if cfg.vgg_weights not in ("auto", "off"):
        inputs.append(("the VGG weights", cfg.vgg_weights))
    if isinstance(config, (str, Path)):
        inputs.append(("the config file", config))
    check_not_an_input(run_dir, inputs, hint="give the run its own folder")


def _open_inputs(chips: str | Path, run_dir: Path, cfg: TrainConfig,
                 given: dict[str, Any] | None, allow_other_chips: bool, ddp: DistContext
                 ) -> _Inputs:
    """Open the train split; resuming (``given``: the options set explicitly), load the
    checkpoint, take its config and check that it may continue on ``chips``."""
    dataset = ChipDataset(chips, "train", augment=cfg.augment, seed=cfg.seed)
    chips_sha256 = manifest_sha256(chips)  # the store this run trains on, for --resume
    ckpt = None
    if given is not None:
        path = run_dir / CHECKPOINT_NAME
        ckpt = load_checkpoint(path)
        cfg = merge_resume_config(ckpt.get("config") or {}, given)
        warning = check_resumable(ckpt, dataset, path, chips, chips_sha256, allow_other_chips)
        if warning is not None and ddp.main:
            _LOG.warning(warning)  # also with quiet, as synthesize's warnings
        dataset = ChipDataset(chips, "train", augment=cfg.augment, seed=cfg.seed)
    return _Inputs(chips, dataset, chips_sha256, cfg, ckpt)


@contextlib.contextmanager
def _torch_threads(threads: int, ddp: DistContext) -> Iterator[str]:
    """torch's CPU threads at ``threads`` inside the block; yields what was chosen, in words.

    0 chooses automatically (:func:`geospade.threads.choose_threads`: the CPUs free), unless
    ``OMP_NUM_THREADS`` is set, which is then taken as the request (``torchrun`` sets it to 1
    for several processes per machine). Processes of one machine share its CPUs, so under
    ``torchrun`` an automatic count is divided among them.
    """
    before = torch.get_num_threads()
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if threads:
        requested, asked = threads, f"--threads {threads}"
    elif env.isdigit() and int(env) > 0:
        requested, asked = int(env), f"OMP_NUM_THREADS={env}"
    else:
        requested, asked = None, None
    chosen = choose_threads(requested)
    cpus, local = usable_cpus(), int(os.environ.get("LOCAL_WORLD_SIZE", ddp.world))
    if requested is None and local > 1:
        chosen = max(1, min(chosen, cpus // local))
    configure_threads(chosen)
    count = f"{chosen} thread{'s' if chosen != 1 else ''}"
    if local > 1:
        count += f" per process ({local} processes)"
    if asked is not None:
        words = f"{count} ({asked}; {cpus} CPUs)"
    elif local > 1:
        words = f"{count} (automatic; {cpus} CPUs)"
    else:  # automatic: the CPUs free are the threads chosen
        words = f"{count} ({chosen} of {cpus} CPUs free)"
    try:
        yield words
    finally:
        torch.set_num_threads(before)


# -- the plan -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """Where and how long the run trains, checked before anything is built.

    Args:
        device: this process's device.
        precision: the autocast precision.
        sampler: this rank's data order.
        total: the step the run ends at.
        quiet: no messages (also on ranks other than 0).
    """

    device: torch.device
    precision: Precision
    sampler: EpochSampler
    total: int
    quiet: bool

    def autocast(self) -> contextlib.AbstractContextManager:
        """The precision context of every forward pass."""
        return autocast_context(self.device, self.precision)


def _plan(inputs: _Inputs, quiet: bool, ddp: DistContext) -> _Plan:
    cfg, dataset, ckpt = inputs.config, inputs.dataset, inputs.checkpoint
    device = training_device(cfg.device, ddp)
    precision = resolve_precision(cfg.amp, device)
    autocast_context(device, precision)  # raises for fp16 on a CPU, or bf16 where unsupported
    sampler = EpochSampler(len(dataset), cfg.seed, ddp.rank, ddp.world)
    steps_per_epoch = sampler.per_rank() // cfg.batch_size
    if steps_per_epoch == 0:
        raise GeospadeError(
            f"the train split has {len(dataset)} chip(s), fewer than the batch size "
            f"{cfg.batch_size} x {ddp.world} process(es)"
        )
    total = cfg.epochs * steps_per_epoch if cfg.epochs else cfg.steps
    if ckpt is not None and int(ckpt["step"]) >= total:
        raise ArgumentError(
            "steps", f"nothing to do: the checkpoint is at step {ckpt['step']} and the run ends "
            f"at step {total}; raise steps (or epochs) to train further",
            others=("steps", "epochs"), leading=False
        )
    return _Plan(device, precision, sampler, total, quiet or not ddp.main)


def _lr_factor(step: int, total: int, decay_start: int | None) -> float:
    """1 until ``decay_start``, then linearly to 0 at ``total`` (SPADE's niter_decay)."""
    start = total // 2 if decay_start is None else decay_start
    if step < start or total <= start:
        return 1.0
    return max(0.0, 1.0 - (step - start) / (total - start))


# -- the run ------------------------------------------------------------------------------------


def _train(inputs: _Inputs, folder: RunFolder, overwrite: bool, quiet: bool,
           callback: Callback | None, ddp: DistContext, threads: str) -> TrainResult:
    """Plan, build, (resume,) train to the end and write the last outputs; ``threads``: the
    thread choice in words."""
    plan = _plan(inputs, quiet, ddp)
    if inputs.config.amp != plan.precision.value:  # amp "auto", resolved: recorded as resolved
        inputs = replace(inputs, config=replace(inputs.config, amp=plan.precision.value))
    # First: how fast this run can be (precision, layout, threads), before any other message.
    _say_setup(inputs.config, plan, threads)
    state, vgg = _build_state(inputs, plan)
    try:
        val = ChipDataset(inputs.chips, "val")
    except GeospadeError:
        val = None
    # Everything is validated: now the run folder may change.
    barrier(ddp)
    if inputs.checkpoint is not None:
        if ddp.main:
            folder.commit()  # a resumed run's folder is already committed: nothing to undo
        state.load_state_dict(inputs.checkpoint, folder.path / CHECKPOINT_NAME)
    elif ddp.main:
        folder.begin(overwrite)
    if ddp.main:  # after the checkpoint's weights and states loaded: a failed resume keeps it
        with atomic_path(folder.path / "config.toml") as tmp:
            tmp.write_text(to_toml(inputs.config))
    train_step = _train_step(state, vgg, plan, ddp, folder.path / CHECKPOINT_NAME)
    bar = _progress_bar(plan, state.step)
    outputs = None
    if ddp.main:
        outputs = _RunOutputs(folder, state, plan, inputs.dataset, val, bar, callback,
                              resumed=inputs.checkpoint is not None)
    _say_start(inputs.dataset, plan, state.step, ddp)
    losses = _run_steps(state, train_step, inputs.dataset, plan, bar, outputs)
    bar.close()
    share_buffers(state.models().values(), ddp)
    if outputs is not None:
        outputs.finish()
    return TrainResult(folder.path, folder.path / CHECKPOINT_NAME if ddp.main else None,
                       state.step, losses, None if outputs is None else outputs.validation,
                       vgg is not None, state.models())


def _build_state(inputs: _Inputs, plan: _Plan) -> tuple[TrainingState, nn.Module | None]:
    """The untrained state and the VGG loss (seeded: the same weights for the same seed)."""
    cfg, dataset = inputs.config, inputs.dataset
    torch.manual_seed(cfg.seed)
    models = build_models(cfg, dataset.scheme.num_classes, len(dataset.bands),
                          dataset.chip_size)
    vgg = _build_vgg(cfg, plan.quiet)  # after the models: it draws from the seeded RNG too
    data = TrainingData(dataset.scheme, tuple(dataset.bands), dataset.chip_size,
                        inputs.chips_sha256)
    state = TrainingState(cfg, data, *models, device=plan.device, vgg=vgg is not None)
    if vgg is not None:
        vgg.to(device=plan.device)
        if cfg.uses_channels_last():
            to_channels_last(vgg, parameters=False)
    return state, vgg


def _build_vgg(cfg: TrainConfig, quiet: bool) -> nn.Module | None:
    """The VGG19 perceptual loss per ``vgg_weights``, or None (and the run says why)."""
    if cfg.lambda_vgg == 0 or cfg.vgg_weights == "off":
        _say("perceptual (VGG) loss OFF (" + ("--lambda-vgg 0" if cfg.lambda_vgg == 0
                                              else "--vgg-weights off") + ")", quiet)
        return None
    if cfg.discriminator == "oasis" and cfg.vgg_weights == "auto":
        # OASIS trains without it (Schönfeld et al. 2021); a path given on purpose is used.
        _say("perceptual (VGG) loss OFF (OASIS needs no VGG loss; --vgg-weights PATH to use "
             "it anyway)", quiet)
        return None
    path = None if cfg.vgg_weights == "auto" else cfg.vgg_weights
    loss, message = load_vgg_loss(path, download=True)
    _say(message, quiet)
    return loss


def _train_step(state: TrainingState, vgg: nn.Module | None, plan: _Plan, ddp: DistContext,
                checkpoint: Path) -> TrainStep:
    """One iteration over ``state``'s models (in DDP wrappers under torchrun)."""
    cfg = state.config

    def check(values: dict[str, float]) -> None:
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if bad:
            raise ArgumentError(
                "amp",
                f"loss {bad[0]} became {values[bad[0]]} at step {state.step + 1}; training "
                + (f"stopped, the last good checkpoint ({checkpoint}) is intact"
                   if checkpoint.is_file() else "stopped before any checkpoint was written")
                + " (try lower learning rates or amp='none')", leading=False
            )

    g_train = wrap(state.g_module, plan.device, ddp)
    d_train = wrap(state.discriminator, plan.device, ddp)
    return TrainStep(
        state.g_module, state.discriminator, state.opt_g, state.opt_d,
        ema=state.generator_ema, encoder_ema=state.encoder_ema, ema_decay=cfg.ema_decay,
        gan_mode=cfg.gan_mode, lambda_fm=cfg.lambda_fm, vgg=vgg, lambda_vgg=cfg.lambda_vgg,
        lambda_kl=cfg.lambda_kl, lambda_labelmix=cfg.lambda_labelmix, autocast=plan.autocast,
        scaler_g=state.scaler_g, scaler_d=state.scaler_d, g_train=g_train, d_train=d_train,
        check=check,
    )


def _run_steps(state: TrainingState, train_step: TrainStep, dataset: ChipDataset, plan: _Plan,
               bar: Progress, outputs: _RunOutputs | None) -> dict[str, float]:
    """Train from ``state.step`` to ``plan.total``; returns the last step's losses.

    Ctrl-C stops after a whole step (the state is consistent then), writes a checkpoint and
    raises again.
    """
    cfg = state.config
    memory_format = torch.channels_last if cfg.uses_channels_last() else torch.contiguous_format
    losses: dict[str, float] = {}
    batches = epoch_batches(dataset, plan.sampler, state.step, cfg.batch_size, cfg.seed,
                            cfg.workers, pin_memory=plan.device.type == "cuda")
    try:
        with contextlib.closing(batches):
            for epoch, batch in batches:
                factor = _lr_factor(state.step, plan.total, cfg.lr_decay_start)
                state.set_lr_factor(factor)
                labels = batch["mask"].to(plan.device, non_blocking=True)
                real = batch["image"].to(plan.device, non_blocking=True)
                losses = train_step(labels, real.contiguous(memory_format=memory_format))
                state.step += 1
                bar.update(1)
                if outputs is not None:
                    outputs.after_step(epoch, factor, losses)
                if state.step >= plan.total:
                    break
    except KeyboardInterrupt:
        bar.close(final=False)  # the interrupt message says where it stopped
        if outputs is not None:
            outputs.interrupted()
        raise
    return losses


def _progress_bar(plan: _Plan, step: int) -> Progress:
    return progress(total=plan.total, initial=step, desc="train", unit="it", quiet=plan.quiet,
                    logger=_LOG)


class _RunOutputs:
    """What rank 0 writes while training: metrics rows, previews, validation and checkpoints
    (each at its ``*_every`` steps), and the caller's callback.

    Args:
        folder: the run folder (a checkpoint commits it).
        state: the training state.
        plan: the run's plan.
        dataset: the train split (previews without val chips).
        val: the val split, or None.
        bar: the progress bar (losses shown at log steps).
        callback: called after every step with ``(step, losses)``.
        resumed: the run continues a checkpoint (metrics logged after it are dropped).
    """

    def __init__(self, folder: RunFolder, state: TrainingState, plan: _Plan,
                 dataset: ChipDataset, val: ChipDataset | None, bar: Progress,
                 callback: Callback | None, resumed: bool) -> None:
        self.folder, self.state, self.plan, self.val = folder, state, plan, val
        self.bar, self.callback, self.palette = bar, callback, dataset.scheme.palette()
        self.checkpoint_path = folder.path / CHECKPOINT_NAME
        self.metrics = MetricsLog(folder.path / METRICS_NAME, state.step if resumed else None)
        self.preview_batch = fixed_batch(val if val is not None else dataset, 4)
        self.validation: dict[str, Any] | None = None
        self.metrics.start(state.step)

    def after_step(self, epoch: int, factor: float, losses: dict[str, float]) -> None:
        """The outputs due at this step."""
        step, cfg = self.state.step, self.state.config
        if step % cfg.log_every == 0 or step == self.plan.total:
            rate = self.metrics.rate(step)
            self.bar.set_postfix(**{k: f"{v:.3f}" for k, v in losses.items()})
            self.metrics.log({"step": step, "epoch": epoch, "lr_g": cfg.lr_g * factor,
                              "lr_d": cfg.lr_d * factor, **losses, "it_per_s": round(rate, 4)})
        if cfg.preview_every and step % cfg.preview_every == 0:
            write_preview(self.state.generator_ema, self.preview_batch, self.palette,
                          self.plan.device, self.plan.autocast,
                          self.folder.path / "previews" / f"step_{step:07d}.png", seed=cfg.seed)
        if self.val is not None and cfg.val_every and step % cfg.val_every == 0:
            self.validate()
        if step % cfg.checkpoint_every == 0 and step < self.plan.total:
            self.checkpoint()
        if self.callback is not None:
            self.callback(step, losses)

    def validate(self) -> None:
        """Score the EMA generator on the val chips: a ``validation.csv`` row per class and a
        figure."""
        assert self.val is not None
        cfg, step = self.state.config, self.state.step
        summary = validation_summary(self.state.generator_ema, self.val, step, cfg.val_chips,
                                     cfg.batch_size, self.plan.device, self.plan.autocast,
                                     seed=cfg.seed)
        append_validation(self.folder.path / VALIDATION_NAME, summary)
        save_validation_figure(summary, self.val.scheme.palette(),
                               self.folder.path / "validation" / f"step_{step:07d}.png")
        self.validation = summary

    def checkpoint(self) -> None:
        """Write the checkpoint (which commits a new run folder), never over a good one with
        weights that overflowed."""
        bad = self.state.nonfinite_model()
        if bad is not None:
            raise ArgumentError(
                "amp",
                f"{bad} weights became NaN/inf by step {self.state.step}; training stopped, "
                + (f"the last good checkpoint ({self.checkpoint_path}) is intact"
                   if self.checkpoint_path.is_file() else "no checkpoint was written")
                + " (try lower learning rates or amp='none')", leading=False
            )
        save_checkpoint(self.checkpoint_path, self.state.state_dict())
        self.folder.commit()

    def interrupted(self) -> None:
        """Ctrl-C: keep the steps done (they are whole) in a checkpoint."""
        step = self.state.step
        if step > 0:
            self.checkpoint()
            _say(f"interrupted; checkpoint at step {step} written, continue with --resume",
                 self.plan.quiet)
        self.metrics.close()

    def finish(self) -> None:
        """The last validation (unless this step had one) and the final checkpoint."""
        step = self.state.step
        if self.val is not None and (self.validation is None or self.validation["step"] != step):
            self.validate()
        self.checkpoint()
        _say(f"done: {step} steps; checkpoint {self.checkpoint_path}", self.plan.quiet)
        self.metrics.close()


# -- messages -----------------------------------------------------------------------------------


def _say_setup(cfg: TrainConfig, plan: _Plan, threads: str) -> None:
    """E.g. "bf16, channels-last, 2 threads (2 of 2 CPUs free)"."""
    precision = "fp32" if plan.precision is Precision.NONE else str(plan.precision)
    layout = "channels-last" if cfg.uses_channels_last() else "contiguous"
    _say(f"{precision}, {layout}, {threads}", plan.quiet)


def _say_start(dataset: ChipDataset, plan: _Plan, step: int, ddp: DistContext) -> None:
    _say(
        f"{len(dataset)} train chips of {dataset.chip_size} px, {len(dataset.bands)} band(s), "
        f"{dataset.scheme.num_classes} classes; {plan.total} steps on {plan.device}"
        + (f" x {ddp.world} processes" if ddp.world > 1 else "")
        + (f", resuming at step {step}" if step else ""), plan.quiet,
    )


def _say(message: str, quiet: bool) -> None:
    if not quiet:
        _LOG.info(message)
