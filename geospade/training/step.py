"""One SPADE training iteration: a generator step, a discriminator step, the EMA update.

``geospade train`` calls :class:`TrainStep` once per batch and ``benchmarks/bench_train.py`` times
the same object on a fake batch, so the benchmark measures what users run.

The discriminator step reuses the generator step's images (detached) instead of running the
generator again, with real and fake images in one discriminator batch.

The generator step's forward passes run inside ``torch.nn.utils.parametrize.cached()``: each
spectral-normed weight ``W / sigma`` is computed once there. The discriminator is called twice in
that step (fake, then real without gradients); in training mode each call would otherwise run
its own power iteration and recompute ``W / sigma``. With the cache both calls see the same
weights after one power iteration, as in the reference's single call on the concatenated batch.
Backward goes through the cached tensor's graph, as for a shared weight (the generator's convs
use each weight once; the discriminator's weights are frozen in this step). The discriminator
step runs outside the cache, with its own power iteration.
https://pytorch.org/docs/stable/generated/torch.nn.utils.parametrize.cached.html

With an :class:`~geospade.models.oasis.OasisDiscriminator` (OASIS, Schönfeld et al. 2021) the
discriminator segments images into the classes and "fake": the generator's adversarial loss is
the class-balanced cross-entropy of its images toward their class map (no feature matching; a
perceptual loss only if one is passed), and the discriminator step runs one batch of fake, real
and LabelMix images: cross-entropies (real -> class, fake -> "fake") plus ``lambda_labelmix``
times the LabelMix consistency. (One call, so one power iteration for all three, as the
PatchGAN step's single call on real and fake.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.utils import parametrize

from geospade.models.encoder import StyleEncoder, kl_loss, reparameterize
from geospade.models.generator import Generator
from geospade.models.losses import discriminator_loss, feature_matching_loss, generator_loss
from geospade.models.oasis import (
    OasisDiscriminator,
    labelmix,
    labelmix_loss,
    labelmix_mask,
    oasis_discriminator_loss,
    oasis_generator_loss,
)

Outputs = list[list[torch.Tensor]]


class GeneratorStep(nn.Module):
    """Generator (and style encoder with a VAE) as one module, so DDP wraps them together."""

    def __init__(self, generator: Generator, encoder: StyleEncoder | None):
        super().__init__()
        self.generator = generator
        self.encoder = encoder

    def forward(self, labels: torch.Tensor, image: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.encoder is None:
            return self.generator(labels), None
        mu, logvar = self.encoder(image)
        fake = self.generator(labels, reparameterize(mu, logvar))
        return fake, kl_loss(mu, logvar)


def split_batch(outputs: Outputs) -> tuple[Outputs, Outputs]:
    """Discriminator outputs of a (first half, second half) batch, each as D would return it."""
    first = [[t.chunk(2)[0] for t in scale] for scale in outputs]
    second = [[t.chunk(2)[1] for t in scale] for scale in outputs]
    return first, second


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * model`` for parameters; buffers are copied."""
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()],
                         1.0 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers(), strict=True):
        b_ema.copy_(b)


def adam(params: Iterable[torch.Tensor], lr: float, betas: tuple[float, float]
         ) -> torch.optim.Adam:
    """Adam with its fused kernel (one pass over each parameter, CPU and CUDA).

    The same update as the default implementation up to float rounding, and measured faster on
    the 2-core CPU: at config C's generator (92 M parameters) a step takes 0.045 s fused, 0.12 s
    per-tensor (the CPU default) and 0.17 s with ``foreach``.
    """
    return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)


class TrainStep:
    """One training iteration on a batch: G step, D step on the same fakes, EMA update.

    Args:
        g_module: generator (and encoder) whose forward gives ``(fake, kl)``.
        discriminator: the multi-scale (PatchGAN) discriminator, or an
            :class:`~geospade.models.oasis.OasisDiscriminator` (OASIS losses and LabelMix;
            ``gan_mode`` and ``lambda_fm`` are then not used).
        opt_g: optimiser of ``g_module``'s parameters.
        opt_d: optimiser of the discriminator's parameters.
        ema: EMA copy of ``g_module.generator`` (``None``: no EMA update).
        encoder_ema: EMA copy of ``g_module.encoder`` (VAE runs), updated with ``ema``.
        ema_decay: EMA decay per step.
        gan_mode: "hinge", "ls" or "original".
        lambda_fm: feature-matching weight (0 = off).
        vgg: perceptual loss module, or ``None``.
        lambda_vgg: its weight.
        lambda_kl: KL weight (used when ``g_module`` has an encoder).
        lambda_labelmix: LabelMix weight with an OASIS discriminator (0 = off).
        autocast: returns the precision context of the forward passes.
        scaler_g, scaler_d: gradient scalers (fp16); ``None`` = disabled ones.
        g_train, d_train: the modules to call for G's forward and D's step (DDP wrappers of
            ``g_module`` and ``discriminator``); default the modules themselves. The G step
            calls the unwrapped discriminator: its weights are frozen there.
        check: called with the step's losses (averaged over ranks) before any weight changes;
            may raise to stop (e.g. on a NaN).
    """

    def __init__(self, g_module: GeneratorStep, discriminator: nn.Module,
                 opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer, *,
                 ema: nn.Module | None = None, encoder_ema: nn.Module | None = None,
                 ema_decay: float = 0.999,
                 gan_mode: str = "hinge", lambda_fm: float = 10.0,
                 vgg: nn.Module | None = None, lambda_vgg: float = 10.0,
                 lambda_kl: float = 0.05, lambda_labelmix: float = 10.0,
                 autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                 scaler_g: torch.amp.GradScaler | None = None,
                 scaler_d: torch.amp.GradScaler | None = None,
                 g_train: nn.Module | None = None, d_train: nn.Module | None = None,
                 check: Callable[[dict[str, float]], None] | None = None) -> None:
        self.g_module = g_module
        self.discriminator = discriminator
        self.opt_g = opt_g
        self.opt_d = opt_d
        self.ema = ema
        self.encoder_ema = encoder_ema
        self.ema_decay = ema_decay
        self.gan_mode = gan_mode
        self.lambda_fm = lambda_fm
        self.vgg = vgg
        self.lambda_vgg = lambda_vgg
        self.lambda_kl = lambda_kl
        self.lambda_labelmix = lambda_labelmix
        self.oasis = isinstance(discriminator, OasisDiscriminator)
        self.autocast = autocast
        self.scaler_g = scaler_g or torch.amp.GradScaler("cuda", enabled=False)
        self.scaler_d = scaler_d or torch.amp.GradScaler("cuda", enabled=False)
        self.g_train = g_train if g_train is not None else g_module
        self.d_train = d_train if d_train is not None else discriminator
        self.check = check

    def __call__(self, labels: torch.Tensor, real: torch.Tensor) -> dict[str, float]:
        """Train on one batch.

        Args:
            labels: class indices (N, H, W).
            real: images (N, bands, H, W) in [-1, 1], on the models' device and memory format.

        Returns:
            the losses (``g_gan``, ``g_fm``, ``g_vgg``, ``g_kl`` where used, ``d_labelmix``
            with OASIS, and ``d``, the discriminator's total), averaged over ranks under DDP.
        """
        discriminator = self.discriminator
        # Generator step: D's weights are frozen (its unwrapped module avoids DDP hooks).
        discriminator.requires_grad_(False)
        with self.autocast(), parametrize.cached():
            fake, kl = self.g_train(labels, real)
            if self.oasis:
                terms = {"g_gan": oasis_generator_loss(discriminator(fake), labels)}
            else:
                terms = self._patch_generator_terms(labels, real, fake)
            if self.vgg is not None:
                terms["g_vgg"] = self.lambda_vgg * self.vgg(fake.float(), real)
            if kl is not None:
                terms["g_kl"] = self.lambda_kl * kl
            loss_g = sum(terms.values())
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler_g.scale(loss_g).backward()
        discriminator.requires_grad_(True)

        # Discriminator step on the same (detached) images, real and fake in one batch.
        with self.autocast():
            if self.oasis:
                terms.update(self.oasis_discriminator_terms(labels, real, fake.detach()))
            else:
                both = torch.cat([fake.detach(), real])
                preds = self.d_train(torch.cat([labels, labels]), both)
                d_fake, d_real = split_batch(preds)
                terms["d"] = discriminator_loss(d_real, d_fake, self.gan_mode)
            loss_d = terms["d"]
        stacked = torch.stack([v.detach().float() for v in terms.values()])
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # Every rank sees a NaN on any rank, and stops with it.
            dist.all_reduce(stacked)
            stacked /= dist.get_world_size()
        values = dict(zip(terms, stacked.tolist(), strict=True))
        if self.check is not None:
            self.check(values)
        self.scaler_g.step(self.opt_g)
        self.scaler_g.update()
        self.opt_d.zero_grad(set_to_none=True)
        self.scaler_d.scale(loss_d).backward()
        self.scaler_d.step(self.opt_d)
        self.scaler_d.update()
        if self.ema is not None:
            update_ema(self.ema, self.g_module.generator, self.ema_decay)
        if self.encoder_ema is not None and self.g_module.encoder is not None:
            update_ema(self.encoder_ema, self.g_module.encoder, self.ema_decay)
        return values

    def _patch_generator_terms(self, labels: torch.Tensor, real: torch.Tensor,
                               fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """The PatchGAN generator losses: adversarial and feature matching."""
        pred_fake = self.discriminator(labels, fake)
        with torch.no_grad():
            pred_real = self.discriminator(labels, real)
        terms = {"g_gan": generator_loss(pred_fake, self.gan_mode)}
        if self.lambda_fm > 0:
            terms["g_fm"] = self.lambda_fm * feature_matching_loss(pred_fake, pred_real)
        return terms

    def oasis_discriminator_terms(self, labels: torch.Tensor, real: torch.Tensor,
                                   fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """The OASIS discriminator losses on one batch of fake, real (and LabelMix) images:
        ``d_labelmix`` (when its weight is not 0) and ``d``, the total."""
        images = [fake, real]
        if self.lambda_labelmix > 0:
            mask = labelmix_mask(labels, self.discriminator.num_classes)
            images.append(labelmix(real, fake, mask))
        logits = self.d_train(torch.cat(images)).chunk(len(images))
        terms = {}
        loss = oasis_discriminator_loss(logits[1], logits[0], labels)
        if self.lambda_labelmix > 0:
            terms["d_labelmix"] = self.lambda_labelmix * labelmix_loss(
                logits[2], logits[1], logits[0], mask)
            loss = loss + terms["d_labelmix"]
        terms["d"] = loss
        return terms
