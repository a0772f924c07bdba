"""The SPADE training loop behind ``geospade train``.

One iteration is a generator step then a discriminator step (TTUR learning rates, Adam betas
(0, 0.9) by default), followed by an update of the generator's exponential moving average (EMA),
which is what ``synthesize`` uses. The discriminator step reuses the generator step's images
(detached), so each iteration runs the generator forward once.

Runs are exactly resumable: data order and augmentation are functions of (seed, epoch, index);
model, optimiser, EMA, gradient-scaler and RNG states are in the checkpoint. Under ``torchrun`` the
loop runs data-parallel (DDP; gloo on CPU, NCCL on GPU) and only rank 0 writes files.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Sampler

from geospade.atomic import atomic_path
from geospade.data.chips import ChipDataset
from geospade.errors import GeospadeError
from geospade.formats.checkpoint import load_checkpoint, load_weights, save_checkpoint
from geospade.models.discriminator import MultiscaleDiscriminator
from geospade.models.encoder import StyleEncoder
from geospade.models.generator import Generator
from geospade.models.losses import load_vgg_loss
from geospade.models.precision import autocast_context, resolve_device, to_channels_last
from geospade.outputs import (
    RUN_FOLDER,
    OutputLock,
    check_not_an_input,
    check_writable,
    remove_stale_temporaries_in,
)
from geospade.training.config import TrainConfig, given_options, resolve_config, to_toml
from geospade.training.preview import preview_grid, save_png
from geospade.training.step import GeneratorStep, TrainStep, adam
from geospade.training.validation import mean_colour_error, spectral_distance

CHECKPOINT_NAME = "checkpoint.pt"
CHIPS_IDENTITY_KEY = "chips_manifest_sha256"
"""Checkpoint key: :func:`chips_identity` of the chip store the run trains on."""
# Options that may differ between a checkpoint and ``--resume`` (they do not change the model or
# the optimisation already done).
RESUMABLE_CHANGES = frozenset({
    "steps", "epochs", "checkpoint_every", "preview_every", "val_every", "log_every", "workers",
    "threads", "device", "val_chips",
})


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


# -- distributed --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owned: bool = False  # this call initialised the process group

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: str) -> _Dist:
    """Join the process group torchrun describes (env WORLD_SIZE > 1), if any."""
    if dist.is_available() and dist.is_initialized():
        return _Dist(dist.get_rank(), dist.get_world_size(),
                     int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    backend = "nccl" if device.startswith("cuda") else "gloo"
    dist.init_process_group(backend=backend)
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")),
                 owned=True)


def _resolve_device(name: str, ddp: _Dist) -> torch.device:
    device = resolve_device(name)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", ddp.local_rank if ddp.world > 1 else 0)
        torch.cuda.set_device(device)
    return device


class EpochSampler(Sampler[int]):
    """Indices of one epoch: a permutation drawn from (seed, epoch), split across ranks,
    starting after ``skip`` samples of this rank (to resume mid-epoch).

    Every rank gets ``len(dataset) // world`` indices (the tail is dropped, so ranks stay in step).
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world: int = 1, shuffle: bool = True):
        self.size, self.seed, self.rank, self.world, self.shuffle = size, seed, rank, world, shuffle
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def per_rank(self) -> int:
        return self.size // self.world

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        mine = order[: self.per_rank() * self.world][self.rank :: self.world]
        return iter(mine[self.skip :])

    def __len__(self) -> int:
        return self.per_rank() - self.skip


# -- models and losses -------------------------------------------------------------------------


def _build_models(cfg: TrainConfig, num_classes: int, bands: int, chip_size: int
                  ) -> tuple[Generator, MultiscaleDiscriminator, StyleEncoder | None]:
    try:
        generator = Generator(
            num_classes, bands, ngf=cfg.ngf, num_upsampling_layers=cfg.num_upsampling_layers,
            crop_size=chip_size, norm=cfg.norm, param_free_norm=cfg.param_free_norm,
            use_vae=cfg.use_vae, z_dim=cfg.z_dim, spectral_norm=cfg.spectral_norm,
            hidden=cfg.spade_hidden,
        )
    except GeospadeError as exc:
        if "multiple of" in str(exc):
            stride = 2 ** {"normal": 5, "more": 6, "most": 7}[cfg.num_upsampling_layers]
            problem = "must be a positive multiple of" if chip_size <= 0 else "is not a multiple of"
            raise GeospadeError(
                f"chip size {chip_size} {problem} the generator's stride {stride} "
                f"(num_upsampling_layers={cfg.num_upsampling_layers}); tile with --size a "
                f"multiple of {stride} or choose fewer upsampling layers"
            ) from None
        raise
    discriminator = MultiscaleDiscriminator(
        num_classes, bands, ndf=cfg.ndf, n_layers=cfg.n_layers_d, num_d=cfg.num_d,
        spectral_norm=cfg.spectral_norm,
    )
    encoder = StyleEncoder(bands, **_encoder_config(cfg, chip_size)) if cfg.use_vae else None
    return generator, discriminator, encoder


def _encoder_config(cfg: TrainConfig, chip_size: int) -> dict[str, Any]:
    return {"ndf": cfg.ndf, "z_dim": cfg.z_dim, "crop_size": chip_size,
            "spectral_norm": cfg.spectral_norm}


def _lr_factor(step: int, total: int, decay_start: int | None) -> float:
    """1 until ``decay_start``, then linearly to 0 at ``total`` (SPADE's niter_decay)."""
    start = total // 2 if decay_start is None else decay_start
    if step < start or total <= start:
        return 1.0
    return max(0.0, 1.0 - (step - start) / (total - start))


# -- RNG state (tensors and plain values only, for weights_only loading) -----------------------


def _rng_state(device: torch.device) -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": _plain(random.getstate()),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _tuple(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuple(v) for v in value)
    return value


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["key"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    random.setstate(_tuple(state["python"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


# -- run folder ---------------------------------------------------------------------------------


def _prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Check (no side effects) that ``run_dir`` may be used as asked."""
    if resume and overwrite:
        raise GeospadeError("--resume and --overwrite exclude each other")
    existing = run_dir if run_dir.exists() else next(p for p in run_dir.absolute().parents
                                                     if p.exists())
    # A replaced run is moved aside in its parent folder, so that must be writable too.
    for folder in {existing, run_dir.absolute().parent} if overwrite else {existing}:
        if folder.is_dir():
            check_writable(folder)
    if resume:
        if not (run_dir / CHECKPOINT_NAME).is_file():
            raise GeospadeError(f"nothing to resume: {run_dir / CHECKPOINT_NAME} does not exist")
        return
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        if not overwrite:
            raise GeospadeError(
                f"{run_dir} already exists; pass --resume to continue it or --overwrite to "
                "start again"
            )
        if not RUN_FOLDER.recognise(run_dir):
            raise GeospadeError(
                f"{run_dir} exists and is not a geospade run folder; refusing to overwrite it"
            )


class _RunFolder:
    """The run folder of a new run, replaced or created so that a failed start loses nothing.

    :meth:`begin` moves a run being overwritten aside (to a hidden sibling) and creates the new
    folder. The first checkpoint of the new run (:meth:`commit`) deletes the old run. A run that
    fails before that (:meth:`abort`: bad chips, a NaN at step 1, Ctrl-C) leaves things as they
    were: its own files are removed, the old run is put back, and a folder it created is
    deleted, so the same command can simply be run again.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.old: Path | None = None
        self.created = False
        self.begun = False
        self.committed = False

    def begin(self, overwrite: bool) -> None:
        if overwrite and self.path.exists():
            self.old = self.path.with_name(f".{self.path.name}.replaced-{os.getpid()}")
            self.path.rename(self.old)
        self.created = not self.path.exists()
        self.begun = True
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a folder os.access let through (/proc, a full disk)
            raise GeospadeError(f"cannot create run folder {self.path}: {exc.strerror}"
                                ) from None

    def commit(self) -> None:
        if self.old is not None:
            shutil.rmtree(self.old, ignore_errors=True)
            self.old = None
        self.committed = True

    def abort(self) -> None:
        if not self.begun or self.committed:
            return
        if self.created:  # also when the old run was moved aside
            shutil.rmtree(self.path, ignore_errors=True)
        else:  # an empty folder the user made: empty it again
            for child in self.path.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        if self.old is not None:
            self.old.rename(self.path)
            self.old = None


def chips_identity(chips: str | Path) -> str:
    """A chip store's identity: the SHA-256 of its ``manifest.json`` (written once, last, by
    ``geospade tile``; a copy of the store has the same, a store tiled again another)."""
    return hashlib.sha256((Path(chips) / "manifest.json").read_bytes()).hexdigest()


def _check_resume(ckpt: dict[str, Any], cfg: TrainConfig, dataset: ChipDataset, path: Path,
                  chips: str | Path, allow_other_chips: bool = False, warn: bool = True) -> None:
    """Refuse to resume ``ckpt`` on a chip store it cannot continue on.

    Bands, classes and chip size must agree; and the store must be the one the checkpoint was
    trained on (:func:`chips_identity`, key ``chips_manifest_sha256``), unless
    ``allow_other_chips``, which warns. A checkpoint older than that key warns once.
    """
    bands = ckpt.get("bands", [])
    if len(bands) != len(dataset.bands):
        raise GeospadeError(
            f"{path} was trained on {len(bands)} band(s), but the chip store has "
            f"{len(dataset.bands)}"
        )
    names = [c.get("name") for c in ckpt["scheme"].get("classes", [])]
    if names != dataset.scheme.names:
        raise GeospadeError(f"{path} was trained on other classes than the chip store's")
    if ckpt.get("chip_size") != dataset.chip_size:
        raise GeospadeError(
            f"{path} was trained on {ckpt.get('chip_size')} px chips, the chip store has "
            f"{dataset.chip_size} px"
        )
    for key in ("discriminator", "optimizer_g", "optimizer_d", "rng", "generator_ema"):
        if key not in ckpt:
            raise GeospadeError(f"{path} cannot be resumed (it has no {key} state)")
    trained_on = ckpt.get(CHIPS_IDENTITY_KEY)
    if trained_on is None:
        if warn:
            _warn(f"{path} does not record which chip store it was trained on (it predates "
                  f"that check); continuing on {chips}")
    elif trained_on != chips_identity(chips):
        message = (f"{path} was trained on another chip store than {chips} (its manifest.json "
                   f"differs)")
        if not allow_other_chips:
            raise GeospadeError(f"{message}; resume on the run's own chips, or pass "
                                "--allow-other-chips to continue on these")
        if warn:
            _warn(f"{message}; continuing on it (--allow-other-chips)")


def _merge_resume_config(saved: dict[str, Any], cfg: TrainConfig, given: dict[str, Any]
                         ) -> TrainConfig:
    """The checkpoint's config, with the options the user gave that may change on resume."""
    base = TrainConfig.from_saved(saved)
    changed = {k: v for k, v in given.items() if v is not None and getattr(base, k) != v}
    fixed = sorted(set(changed) - RESUMABLE_CHANGES)
    if fixed:
        raise GeospadeError(
            f"cannot change {', '.join(fixed)} when resuming (the checkpoint was trained with "
            + ", ".join(f"{k}={getattr(base, k)!r}" for k in fixed) + ")"
        )
    return base.replace(**changed)


# -- the loop ------------------------------------------------------------------------------------


class _Metrics:
    """``RUN/metrics.csv`` (one row per log step), plus TensorBoard when it is installed."""

    def __init__(self, path: Path, resume_step: int | None, enabled: bool):
        self.path, self.enabled, self.writer, self.fields = path, enabled, None, None
        if not enabled:
            return
        if resume_step is not None and path.is_file():
            # Drop rows an interrupted run logged after its last checkpoint.
            with path.open(newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= resume_step]
            if rows:
                self.fields = list(rows[0])
                self._write(rows, "w")
            else:
                path.unlink()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(path.parent / "tensorboard"))
        except Exception:  # noqa: BLE001 - TensorBoard is optional
            self.writer = None

    def _write(self, rows: list[dict[str, Any]], mode: str) -> None:
        with self.path.open(mode, newline="") as fh:
            out = csv.DictWriter(fh, fieldnames=self.fields, extrasaction="ignore")
            if mode == "w":
                out.writeheader()
            out.writerows(rows)

    def log(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self.fields is None:
            self.fields = list(row)
            self._write([row], "w")
        else:
            self._write([row], "a")
        if self.writer is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, row["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _say(message: str, quiet: bool) -> None:
    if not quiet:
        print(f"geospade train: {message}", file=sys.stderr, flush=True)


def _warn(message: str) -> None:
    """A warning, printed also with ``quiet`` (as synthesize's)."""
    print(f"geospade: warning: {message}", file=sys.stderr, flush=True)


def train(
    chips: str | Path,
    run_dir: str | Path,
    config: TrainConfig | dict[str, Any] | str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    allow_other_chips: bool = False,
    **overrides: Any,
) -> TrainResult:
    """Train a SPADE generator on a chip store.

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
    ddp = _init_distributed(cfg.device if cfg.device != "auto" else
                            ("cuda" if torch.cuda.is_available() else "cpu"))
    lock = OutputLock(run_dir, "run folder")
    try:
        inputs = [("the chip store", chips)]
        if cfg.vgg_weights not in ("auto", "off"):
            inputs.append(("the VGG weights", cfg.vgg_weights))
        if isinstance(config, (str, Path)):
            inputs.append(("the config file", config))
        check_not_an_input(run_dir, inputs, hint="give the run its own folder")
        if ddp.main:  # one run per folder; removes what killed runs left beside and in it
            lock.acquire()
            remove_stale_temporaries_in(run_dir)
        # Every rank checks the same inputs (and fails the same way) before rank 0 writes.
        _prepare_run_dir(run_dir, resume, overwrite)
        dataset = ChipDataset(chips, "train", augment=cfg.augment, seed=cfg.seed)
        ckpt = None
        if resume:
            ckpt = load_checkpoint(run_dir / CHECKPOINT_NAME)
            cfg = _merge_resume_config(ckpt.get("config") or {}, cfg,
                                       given_options(config, **overrides))
            _check_resume(ckpt, cfg, dataset, run_dir / CHECKPOINT_NAME, chips,
                          allow_other_chips, warn=ddp.main)
            dataset = ChipDataset(chips, "train", augment=cfg.augment, seed=cfg.seed)
        threads_before = torch.get_num_threads()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        folder = _RunFolder(run_dir)
        try:
            return _train(dataset, chips, folder, cfg, ckpt, resume, overwrite, quiet, callback,
                          ddp)
        except BaseException:
            if ddp.main and not resume:
                folder.abort()
            raise
        finally:
            torch.set_num_threads(threads_before)
    finally:
        lock.release()
        if ddp.owned:
            dist.destroy_process_group()


def _train(dataset: ChipDataset, chips: str | Path, folder: _RunFolder, cfg: TrainConfig,
           ckpt: dict[str, Any] | None, resume: bool, overwrite: bool, quiet: bool,
           callback: Callable[[int, dict[str, float]], None] | None, ddp: _Dist) -> TrainResult:
    run_dir = folder.path
    device = _resolve_device(cfg.device, ddp)
    quiet = quiet or not ddp.main
    ckpt_path = run_dir / CHECKPOINT_NAME
    amp = "off" if cfg.amp == "none" else cfg.amp
    autocast_context(device, amp)  # raises for fp16 on a CPU, or bf16 where unsupported
    num_classes, bands, size = dataset.scheme.num_classes, len(dataset.bands), dataset.chip_size

    sampler = EpochSampler(len(dataset), cfg.seed, ddp.rank, ddp.world)
    steps_per_epoch = sampler.per_rank() // cfg.batch_size
    if steps_per_epoch == 0:
        raise GeospadeError(
            f"the train split has {len(dataset)} chip(s), fewer than the batch size "
            f"{cfg.batch_size} x {ddp.world} process(es)"
        )
    total = cfg.epochs * steps_per_epoch if cfg.epochs else cfg.steps
    if ckpt is not None and int(ckpt["step"]) >= total:
        raise GeospadeError(
            f"nothing to do: the checkpoint is at step {ckpt['step']} and the run ends at step "
            f"{total}; raise --steps (or --epochs) to train further"
        )

    torch.manual_seed(cfg.seed)
    generator, discriminator, encoder = _build_models(cfg, num_classes, bands, size)
    vgg = _build_vgg(cfg, quiet)

    try:
        val = ChipDataset(chips, "val")
    except GeospadeError:
        val = None

    # Everything is validated: now the run folder may change.
    if ddp.world > 1:
        dist.barrier()
    if ddp.main:
        if resume:
            folder.commit()
        else:
            folder.begin(overwrite)

    ema = copy.deepcopy(generator).eval().requires_grad_(False)
    step = 0
    if ckpt is not None:
        saved = run_dir / CHECKPOINT_NAME
        load_weights(generator, ckpt["generator"], saved, "generator")
        load_weights(ema, ckpt["generator_ema"], saved, "generator_ema")
        load_weights(discriminator, ckpt["discriminator"], saved, "discriminator",
                     "discriminator config")
        if encoder is not None:
            load_weights(encoder, ckpt["encoder"], saved, "encoder", "encoder config")
        step = int(ckpt["step"])
    # The style encoder is averaged with the generator: synthesize --style pairs the two EMAs.
    encoder_ema = None
    if encoder is not None:
        encoder_ema = copy.deepcopy(encoder).eval().requires_grad_(False)
        if ckpt is not None and "encoder_ema" in ckpt:
            load_weights(encoder_ema, ckpt["encoder_ema"], run_dir / CHECKPOINT_NAME,
                         "encoder_ema", "encoder config")

    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    for module in (generator, discriminator, encoder, ema, encoder_ema, vgg):
        if module is not None:
            module.to(device=device)
            if cfg.channels_last:  # feature maps only: trained parameters stay contiguous
                to_channels_last(module, parameters=False)

    g_module = GeneratorStep(generator, encoder)
    g_params = list(g_module.parameters())
    opt_g = adam(g_params, cfg.lr_g, (cfg.beta1, cfg.beta2))
    opt_d = adam(discriminator.parameters(), cfg.lr_d, (cfg.beta1, cfg.beta2))
    scaler_g = torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16")
    scaler_d = torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16")
    if ckpt is not None:
        opt_g.load_state_dict(ckpt["optimizer_g"])
        opt_d.load_state_dict(ckpt["optimizer_d"])
        if "scaler_g" in ckpt:
            scaler_g.load_state_dict(ckpt["scaler_g"])
            scaler_d.load_state_dict(ckpt["scaler_d"])
        _set_rng_state(ckpt["rng"], device)
    if ddp.main:  # after the checkpoint's weights and states loaded: a failed resume keeps it
        with atomic_path(run_dir / "config.toml") as tmp:
            tmp.write_text(to_toml(cfg))

    g_train: nn.Module = g_module
    d_train: nn.Module = discriminator
    if ddp.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        g_train = DDP(g_module, device_ids=ids)
        d_train = DDP(discriminator, device_ids=ids)

    def autocast():
        return autocast_context(device, amp)

    def check(values: dict[str, float]) -> None:
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if bad:
            raise GeospadeError(
                f"loss {bad[0]} became {values[bad[0]]} at step {step + 1}; training "
                + (f"stopped, the last good checkpoint ({ckpt_path}) is intact"
                   if ckpt_path.is_file() else "stopped before any checkpoint was written")
                + " (try lower learning rates or --amp none)"
            )

    train_step = TrainStep(
        g_module, discriminator, opt_g, opt_d, ema=ema, encoder_ema=encoder_ema,
        ema_decay=cfg.ema_decay,
        gan_mode=cfg.gan_mode, lambda_fm=cfg.lambda_fm, vgg=vgg, lambda_vgg=cfg.lambda_vgg,
        lambda_kl=cfg.lambda_kl, autocast=autocast, scaler_g=scaler_g, scaler_d=scaler_d,
        g_train=g_train, d_train=d_train, check=check,
    )

    chips_sha256 = chips_identity(chips)  # the store this run trains on, for --resume

    def payload() -> dict[str, Any]:
        data = {
            "step": step, "config": cfg.to_dict(), "generator_config": generator.config,
            "scheme": dataset.scheme.to_dict(), "bands": [b.to_dict() for b in dataset.bands],
            "chip_size": size, "generator": _cpu_state(generator),
            "generator_ema": _cpu_state(ema), "discriminator": _cpu_state(discriminator),
            "optimizer_g": opt_g.state_dict(), "optimizer_d": opt_d.state_dict(),
            "scaler_g": scaler_g.state_dict(), "scaler_d": scaler_d.state_dict(),
            "rng": _rng_state(device), "vgg": vgg is not None,
            CHIPS_IDENTITY_KEY: chips_sha256,
            "discriminator_config": {"num_classes": num_classes, "in_channels": bands,
                                     "ndf": cfg.ndf, "n_layers": cfg.n_layers_d,
                                     "num_d": cfg.num_d, "spectral_norm": cfg.spectral_norm},
        }
        if encoder is not None:
            data["encoder"] = _cpu_state(encoder)
            data["encoder_ema"] = _cpu_state(encoder_ema)
            data["encoder_config"] = {"in_channels": bands, **_encoder_config(cfg, size)}
        return data

    def checkpoint() -> None:
        if not ddp.main:
            return
        # Never replace a good checkpoint with weights that overflowed.
        for name, module in (("generator", generator), ("discriminator", discriminator)):
            if not all(bool(torch.isfinite(p).all()) for p in module.parameters()):
                raise GeospadeError(
                    f"{name} weights became NaN/inf by step {step}; training stopped, "
                    + (f"the last good checkpoint ({ckpt_path}) is intact"
                       if ckpt_path.is_file() else "no checkpoint was written")
                    + " (try lower learning rates or --amp none)"
                )
        save_checkpoint(ckpt_path, payload())
        folder.commit()

    metrics = _Metrics(run_dir / "metrics.csv", step if resume else None, ddp.main)
    fixed_batch = _fixed_batch(val if val is not None else dataset, 4)
    last_losses: dict[str, float] = {}
    validation: dict[str, Any] | None = None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=step, desc="train", unit="it", dynamic_ncols=True,
               disable=quiet or not sys.stderr.isatty(), file=sys.stderr)
    _say(
        f"{len(dataset)} train chips of {size} px, {bands} band(s), {num_classes} classes; "
        f"{total} steps on {device}" + (f" x {ddp.world} processes" if ddp.world > 1 else "")
        + (f", resuming at step {step}" if step else ""), quiet,
    )
    tick, tick_step = time.perf_counter(), step
    try:
        while step < total:
            epoch, skip = divmod(step, steps_per_epoch)
            sampler.set_epoch(epoch, skip * cfg.batch_size)
            dataset.set_epoch(epoch)
            loader = DataLoader(
                dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers,
                drop_last=True, pin_memory=device.type == "cuda",
                generator=torch.Generator().manual_seed(cfg.seed + epoch),
                persistent_workers=False,
            )
            for batch in loader:
                factor = _lr_factor(step, total, cfg.lr_decay_start)
                for group in opt_g.param_groups:
                    group["lr"] = cfg.lr_g * factor
                for group in opt_d.param_groups:
                    group["lr"] = cfg.lr_d * factor
                labels = batch["mask"].to(device, non_blocking=True)
                real = batch["image"].to(device, non_blocking=True)
                real = real.contiguous(memory_format=memory_format)

                values = train_step(labels, real)
                step += 1
                last_losses = values
                bar.update(1)

                if ddp.main:
                    if step % cfg.log_every == 0 or step == total:
                        now = time.perf_counter()
                        rate = (step - tick_step) / max(now - tick, 1e-9)
                        tick, tick_step = now, step
                        bar.set_postfix({k: f"{v:.3f}" for k, v in values.items()}, refresh=False)
                        metrics.log({"step": step, "epoch": epoch, "lr_g": cfg.lr_g * factor,
                                     "lr_d": cfg.lr_d * factor, **values,
                                     "it_per_s": round(rate, 4)})
                    if cfg.preview_every and step % cfg.preview_every == 0:
                        _write_preview(ema, fixed_batch, dataset, device, autocast,
                                       run_dir / "previews" / f"step_{step:07d}.png")
                    if val is not None and cfg.val_every and step % cfg.val_every == 0:
                        validation = _validate(ema, val, cfg, device, autocast, step, run_dir)
                    if step % cfg.checkpoint_every == 0 and step < total:
                        checkpoint()
                    if callback is not None:
                        callback(step, values)
                if step >= total:
                    break
    except KeyboardInterrupt:
        # Steps are whole: the state after the last finished one is consistent.
        bar.close()
        if ddp.main and step > 0:
            checkpoint()
            _say(f"interrupted; checkpoint at step {step} written, continue with --resume", quiet)
        metrics.close()
        raise
    bar.close()
    if ddp.world > 1:
        # DDP broadcasts rank 0's buffers (batch-norm running stats) at the start of each
        # forward; after the last step each rank holds its own: take rank 0's, everywhere.
        for module in (generator, ema, discriminator, encoder, encoder_ema):
            if module is not None:
                for buffer in module.buffers():
                    dist.broadcast(buffer, src=0)
    if ddp.main:
        if val is not None and (validation is None or validation["step"] != step):
            validation = _validate(ema, val, cfg, device, autocast, step, run_dir)
        checkpoint()
        _say(f"done: {step} steps; checkpoint {ckpt_path}", quiet)
    metrics.close()
    models = {"generator": generator, "generator_ema": ema, "discriminator": discriminator}
    if encoder is not None:
        models["encoder"] = encoder
        models["encoder_ema"] = encoder_ema
    return TrainResult(run_dir, ckpt_path if ddp.main else None, step, last_losses, validation,
                       vgg is not None, models)


def _build_vgg(cfg: TrainConfig, quiet: bool) -> nn.Module | None:
    """The VGG19 perceptual loss per ``vgg_weights``, or None (and the run says why)."""
    if cfg.lambda_vgg == 0 or cfg.vgg_weights == "off":
        _say("perceptual (VGG) loss OFF (" + ("--lambda-vgg 0" if cfg.lambda_vgg == 0
                                              else "--vgg-weights off") + ")", quiet)
        return None
    path = None if cfg.vgg_weights == "auto" else cfg.vgg_weights
    loss, message = load_vgg_loss(path, download=True)
    _say(message, quiet)
    return loss


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def _fixed_batch(dataset: ChipDataset, n: int) -> dict[str, torch.Tensor]:
    """The first ``n`` chips (un-augmented): the same previews at every step."""
    saved, dataset.augment = dataset.augment, False
    try:
        items = [dataset[i] for i in range(min(n, len(dataset)))]
    finally:
        dataset.augment = saved
    return {"mask": torch.stack([i["mask"] for i in items]),
            "image": torch.stack([i["image"] for i in items])}


@torch.no_grad()
def _write_preview(ema: nn.Module, batch: dict[str, torch.Tensor], dataset: ChipDataset,
                   device: torch.device, autocast, path: Path) -> None:
    with autocast():
        fake = ema(batch["mask"].to(device)).float().cpu()
    save_png(preview_grid(batch["mask"], batch["image"], fake, dataset.scheme.palette()), path)


@torch.no_grad()
def _validate(ema: nn.Module, val: ChipDataset, cfg: TrainConfig, device: torch.device,
              autocast, step: int, run_dir: Path) -> dict[str, Any]:
    """Per-class spectral distance and mean-colour error of the EMA generator on val chips.

    Appends one row per class to ``RUN/validation.csv`` and draws ``RUN/validation/step_N.png``.
    """
    k = val.scheme.num_classes
    masks, reals, fakes = [], [], []
    count = min(cfg.val_chips, len(val))
    for start in range(0, count, cfg.batch_size):
        items = [val[i] for i in range(start, min(start + cfg.batch_size, count))]
        mask = torch.stack([i["mask"] for i in items])
        with autocast():
            fakes.append(ema(mask.to(device)).float().cpu())
        masks.append(mask)
        reals.append(torch.stack([i["image"] for i in items]))
    mask, real, fake = torch.cat(masks), torch.cat(reals), torch.cat(fakes)
    distance = spectral_distance(real, fake, mask, k).mean(axis=1)
    colour = mean_colour_error(real, fake, mask, k).mean(axis=1)
    summary = {
        "step": step, "classes": val.scheme.names,
        "spectral_distance": [None if np.isnan(v) else float(v) for v in distance],
        "mean_colour_error": [None if np.isnan(v) else float(v) for v in colour],
        "mean_spectral_distance": float(np.nanmean(distance)),
    }
    path = run_dir / "validation.csv"
    new = not path.is_file()
    with path.open("a", newline="") as fh:
        out = csv.writer(fh)
        if new:
            out.writerow(["step", "class", "spectral_distance", "mean_colour_error"])
        for name, d, c in zip(val.scheme.names, distance, colour, strict=True):
            if not np.isnan(d):
                out.writerow([step, name, f"{d:.6f}", f"{c:.6f}"])
    figure = run_dir / "validation" / f"step_{step:07d}.png"
    _validation_figure(summary, val.scheme.palette(), figure)
    return summary


def _validation_figure(summary: dict[str, Any], palette: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, d in zip(summary["classes"], summary["spectral_distance"], strict=True)
             if d is not None]
    values = [d for d in summary["spectral_distance"] if d is not None]
    colours = [palette[summary["classes"].index(n)] / 255.0 for n in names]
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(names) + 1.2), dpi=100)
    ax.barh(names, values, color=colours, edgecolor="black")
    ax.invert_yaxis()
    ax.set_xlabel("spectral distance (1-D Wasserstein, normalised units; lower is better)")
    ax.set_title(f"validation, step {summary['step']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    os.replace(tmp, path)
