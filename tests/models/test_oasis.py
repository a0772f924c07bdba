"""OASIS pieces: the segmentation discriminator, its class-balanced losses, LabelMix, the
generator's 3D noise (plain, inference and fused forms) and the OASIS training step."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
import torch.nn.functional as F

from geospade.errors import GeospadeError
from geospade.models import (
    CLADE,
    SPADE,
    Generator,
    MultiscaleDiscriminator,
    OasisDiscriminator,
    autocast_context,
    build_generator,
    cpu_supports_bf16,
    fused_available,
    fused_generator,
    inference_generator,
    make_noise,
    synthesis_generator,
)
from geospade.models.fused import FusedGenerator
from geospade.models.oasis import (
    balanced_cross_entropy,
    class_balance_weights,
    fake_cross_entropy,
    labelmix,
    labelmix_loss,
    labelmix_mask,
    oasis_depth,
    oasis_discriminator_loss,
    oasis_generator_loss,
)
from geospade.schemes import IGNORE_INDEX
from geospade.training.config import TrainConfig, to_toml
from geospade.training.step import GeneratorStep, TrainStep, adam

K = 5


def labels(n: int, size: int, seed: int = 0, classes: int = K) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, classes, (n, size // 8, size // 8), generator=gen)
    return coarse.repeat_interleave(8, dim=1).repeat_interleave(8, dim=2)


def generator(seed: int = 0, **kw) -> Generator:
    torch.manual_seed(seed)
    return Generator(K, 4, **{"ngf": 8, "hidden": 16, "crop_size": 64, **kw})


# ------------------------------------------------------------------------------ discriminator


def test_discriminator_gives_class_and_fake_logits_per_pixel_of_a_64px_chip():
    torch.manual_seed(0)
    d = OasisDiscriminator(K, 4, ndf=8, crop_size=64)
    assert d.depth == 4 and d.fake_index == K
    out = d(torch.randn(3, 4, 64, 64))
    assert out.shape == (3, K + 1, 64, 64) and out.dtype == torch.float32
    # Rectangular images whose sides are multiples of 2 ** depth work too.
    assert d(torch.randn(1, 4, 32, 80)).shape == (1, K + 1, 32, 80)
    with pytest.raises(GeospadeError, match="not a multiple of 16"):
        d(torch.randn(1, 4, 40, 64))
    with pytest.raises(GeospadeError, match=r"expects \(N, 4, H, W\)"):
        d(torch.randn(1, 3, 64, 64))


@pytest.mark.parametrize("size, depth", [(64, 4), (32, 3), (256, 6), (512, 6), (96, 4), (8, 1)])
def test_discriminator_depth_follows_the_chip_size(size, depth):
    assert oasis_depth(size) == depth


def test_discriminator_is_spectrally_normed_except_its_classifier():
    d = OasisDiscriminator(K, 4, ndf=8, crop_size=32)
    normed = [name for name, m in d.named_modules() if hasattr(m, "parametrizations")]
    convs = [name for name, m in d.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert set(normed) == set(convs) - {"classify"} and len(normed) >= 12
    plain = OasisDiscriminator(K, 4, ndf=8, crop_size=32, spectral_norm=False)
    assert not any(hasattr(m, "parametrizations") for m in plain.modules())


def test_discriminator_logits_depend_on_the_image_pixel_by_pixel_region():
    """A change in one corner changes the logits there more than far away (a U-Net, not a
    global classifier)."""
    torch.manual_seed(0)
    d = OasisDiscriminator(K, 4, ndf=8, crop_size=64).eval()
    x = torch.randn(1, 4, 64, 64)
    y = x.clone()
    y[..., :8, :8] += 2.0
    with torch.no_grad():
        diff = (d(x) - d(y)).abs().mean(dim=1)[0]
    assert diff[:8, :8].mean() > 3 * diff[48:, 48:].mean() > 0


# ------------------------------------------------------------------------------------- losses


def test_class_weights_are_inverse_frequency_and_ignore_pixels_do_not_count():
    lab = torch.zeros(1, 10, 10, dtype=torch.long)
    lab[0, :, 9] = 1  # 10 pixels of class 1
    lab[0, 0, :4] = IGNORE_INDEX  # 4 ignored pixels (in class 0's area)
    weights = class_balance_weights(lab, 3)
    valid = 96  # 86 of class 0, 10 of class 1, class 2 absent
    assert torch.allclose(weights, torch.tensor([valid / (2 * 86), valid / (2 * 10), 0.0]))
    assert weights[1] > 8 * weights[0]  # the rare class weighs more


def test_balanced_cross_entropy_is_the_mean_of_per_class_means():
    torch.manual_seed(0)
    lab = torch.zeros(2, 8, 8, dtype=torch.long)
    lab[:, :2, :2] = 1  # 8 pixels of class 1, 112 of class 0
    lab[1, 7, :] = IGNORE_INDEX
    logits = torch.randn(2, 3, 8, 8)
    ce = F.cross_entropy(logits, lab.clamp(max=2), reduction="none")
    expected = (ce[lab == 0].mean() + ce[lab == 1].mean()) / 2
    torch.testing.assert_close(balanced_cross_entropy(logits, lab), expected)
    # Logits at ignored pixels do not matter; neither does making them "fake".
    changed = logits.clone()
    changed[1, :, 7, :] = torch.tensor([-50.0, -50.0, 50.0])[:, None]
    torch.testing.assert_close(balanced_cross_entropy(changed, lab), expected)
    # The same error on 8 pixels costs 14x more on the rare class (8 pixels) than on the common
    # one (112): each class counts equally, not each pixel.
    good = F.one_hot(lab.clamp(max=1), 3).permute(0, 3, 1, 2).float() * 30
    rare_wrong, common_wrong = good.clone(), good.clone()
    rare_wrong[:, :, :2, :2] = 0.0  # all 8 class-1 pixels: logits (0, 0, 0)
    common_wrong[:, :, 4, 2:6] = 0.0  # 8 of class 0's pixels
    rare, common = (float(balanced_cross_entropy(x, lab)) for x in (rare_wrong, common_wrong))
    assert rare == pytest.approx(math.log(3) / 2, rel=1e-4)
    assert common == pytest.approx(8 / 112 * math.log(3) / 2, rel=1e-4)


def test_fake_cross_entropy_targets_the_last_channel_on_valid_pixels():
    lab = torch.zeros(1, 4, 4, dtype=torch.long)
    lab[0, 0] = IGNORE_INDEX
    logits = torch.zeros(1, K + 1, 4, 4)
    logits[:, K, 1:] = 30.0  # confident "fake" on every valid pixel
    assert float(fake_cross_entropy(logits, lab)) < 1e-6
    assert float(oasis_generator_loss(logits, lab)) > 25  # the generator wants its class
    # Real pixels toward their class, fake ones toward "fake": both right -> about 0.
    real = torch.zeros(1, K + 1, 4, 4)
    real[:, 0] = 30.0
    assert float(oasis_discriminator_loss(real, logits, lab)) < 1e-6
    everything_ignored = torch.full((1, 4, 4), IGNORE_INDEX)
    assert float(oasis_discriminator_loss(real, logits, everything_ignored)) == 0.0


def test_labelmix_mask_takes_whole_classes_per_image():
    lab = labels(6, 32, seed=3)
    lab[0, :8, :8] = IGNORE_INDEX
    torch.manual_seed(0)
    mask = labelmix_mask(lab, K)
    assert mask.shape == (6, 1, 32, 32) and mask.dtype == torch.bool
    for i in range(6):
        for c in torch.unique(lab[i]):
            values = mask[i, 0][lab[i] == c]
            assert bool((values == values[0]).all())
    assert 0.2 < mask.float().mean() < 0.8  # both sources are used
    real, fake = torch.ones(6, 4, 32, 32), -torch.ones(6, 4, 32, 32)
    mixed = labelmix(real, fake, mask)
    assert torch.equal(mixed, torch.where(mask, 1.0, -1.0).expand(-1, 4, -1, -1))


def test_labelmix_loss_is_zero_when_real_and_fake_are_the_same_image():
    g = generator(crop_size=32)
    d = OasisDiscriminator(K, 4, ndf=8, crop_size=32)
    step = TrainStep(GeneratorStep(g, None), d, *_optimisers(g, d))
    lab = labels(2, 32)
    real = torch.rand(2, 4, 32, 32) * 2 - 1
    with torch.no_grad():
        same = step.oasis_discriminator_terms(lab, real, real.clone())
        other = step.oasis_discriminator_terms(lab, real, -real)
    assert abs(float(same["d_labelmix"])) < 1e-10
    assert float(other["d_labelmix"]) > 1e-6
    # The formula itself: equal logits give 0; otherwise the squared error of the mix.
    a, b = torch.randn(2, K + 1, 8, 8), torch.randn(2, K + 1, 8, 8)
    mask = torch.rand(2, 1, 8, 8) > 0.5
    assert float(labelmix_loss(a, a, a, mask)) == 0.0
    torch.testing.assert_close(labelmix_loss(a, a, b, mask),
                               ((a - torch.where(mask, a, b)) ** 2).mean())


# ---------------------------------------------------------------------------------- 3D noise


def _trained_looking(g: Generator) -> Generator:
    """``g`` with outputs far from flat (an untrained one's are about 0), conditioning that
    matters and batch-norm statistics moved away from (0, 1), in eval mode."""
    torch.manual_seed(1)
    with torch.no_grad():
        g.fc.weight.normal_(0, g.fc.weight[0].numel() ** -0.5)
        for module in g.modules():
            if isinstance(module, torch.nn.Conv2d) and module.bias is not None:
                module.bias.normal_(0, 0.2)
            if isinstance(module, SPADE):  # weights that carry the class map and the noise
                for conv in (module.mlp_shared, module.mlp_gamma_beta):
                    conv.weight.normal_(0, conv.weight[0].numel() ** -0.5)
            if isinstance(module, CLADE):
                module.gamma_beta.weight[:-1].normal_(0, 0.3)
                if module.noise_dim:
                    module.noise_gamma_beta.weight.normal_(0, 0.3)
        for seed in range(3):  # running statistics and power iterations move
            g(labels(4, 64, seed=seed))
    return g.eval()


@pytest.mark.parametrize("norm", ["spade", "clade"])
def test_noise_dim_0_is_the_generator_without_the_argument(norm):
    """Same seed -> same weights, same state-dict keys, same outputs as before noise existed."""
    old, new = generator(norm=norm), generator(norm=norm, noise_dim=0)
    old_state, new_state = old.state_dict(), new.state_dict()
    assert list(old_state) == list(new_state)
    assert all(torch.equal(old_state[k], new_state[k]) for k in old_state)
    assert old.fc.in_channels == K
    lab = labels(2, 64)
    lab[0, :5, :9] = IGNORE_INDEX
    assert torch.equal(old(lab), new(lab))  # training mode
    with torch.no_grad():
        assert torch.equal(old.eval()(lab), new.eval()(lab))
    # Without noise the config (what a checkpoint stores) is today's: no noise_dim key, so older
    # versions read it, and it builds the same generator.
    config = old.config
    assert "noise_dim" not in config
    torch.manual_seed(0)
    rebuilt = build_generator(config)
    assert rebuilt.noise_dim == 0 and rebuilt.config == config
    with pytest.raises(GeospadeError, match="takes no noise"):
        old(lab, noise=torch.zeros(2, 4))


@pytest.mark.parametrize("norm", ["spade", "clade"])
def test_noise_makes_different_images_and_a_seed_picks_one(norm):
    g = _trained_looking(generator(norm=norm, noise_dim=8))
    assert g.config["noise_dim"] == 8 and g.fc.in_channels == K + 8
    lab = labels(2, 64)
    with torch.no_grad():
        a = g(lab, noise=make_noise(2, 8, seed=1))
        b = g(lab, noise=make_noise(2, 8, seed=2))
        again = g(lab, noise=make_noise(2, 8, seed=1))
        drawn = g(lab, rng=torch.Generator().manual_seed(1))
        torch.manual_seed(5)
        global_1 = g(lab)
        global_2 = g(lab)
    assert torch.equal(a, again) and torch.equal(a, drawn)
    assert a.std() > 0.05
    assert (a - b).abs().mean() > 0.05 * a.std()
    assert (global_1 - global_2).abs().mean() > 0.05 * a.std()
    # Each image of a batch gets its own vector: the same class map, two different images.
    same = labels(1, 64).expand(2, 64, 64)
    with torch.no_grad():
        pair = g(same, noise=make_noise(2, 8, seed=1))
    assert (pair[0] - pair[1]).abs().mean() > 0.05 * a.std()


@pytest.mark.parametrize("norm", ["spade", "clade"])
def test_noise_vectors_broadcast_like_their_spatial_maps(norm):
    g = _trained_looking(generator(norm=norm, noise_dim=4))
    lab = labels(3, 64, seed=1)
    vec = make_noise(1, 4, seed=0)
    with torch.no_grad():
        one = g(lab, noise=vec)  # one vector for the whole batch (tiles of one raster)
        expanded = g(lab, noise=vec.expand(3, 4))
        spatial = g(lab, noise=vec[:, :, None, None].expand(3, 4, 64, 64).contiguous())
    assert torch.equal(one, expanded)
    torch.testing.assert_close(one, spatial)
    # Training sees the same gradients: CLADE convolves a vector's one pixel (noise_offset),
    # a spatial map's every pixel.
    grads = []
    for noise in (make_noise(3, 4, seed=2), make_noise(3, 4, seed=2)[:, :, None, None]
                  .expand(3, 4, 64, 64).contiguous()):
        g.zero_grad()
        g(lab, noise=noise).square().mean().backward()
        grads.append([p.grad.clone() for p in g.parameters() if p.grad is not None])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    with pytest.raises(GeospadeError, match=r"noise must be \(N, 4\)"):
        g(lab, noise=torch.zeros(3, 5))
    with pytest.raises(GeospadeError, match="noise has 2 images"):
        g(lab, noise=torch.zeros(2, 4))
    with pytest.raises(GeospadeError, match="noise map is 32x32"):
        g(lab, noise=torch.zeros(3, 4, 32, 32))
    with pytest.raises(GeospadeError, match="not both"):
        make_noise(1, 4, seed=0, rng=torch.Generator())


def test_noise_reaches_every_normalisation_layer():
    g = generator(noise_dim=3)
    assert all(layer.mlp_shared.in_channels == K + 3
               for block in g.blocks for layer in (block.norm_0, block.norm_1))
    g = generator(norm="clade", noise_dim=3)
    assert all(layer.noise_gamma_beta.in_channels == 3
               for block in g.blocks for layer in (block.norm_0, block.norm_1))


@pytest.mark.parametrize("norm", ["spade", "clade"])
def test_inference_generator_with_noise_computes_the_same_function(norm):
    g = _trained_looking(generator(norm=norm, noise_dim=6))
    lab = labels(2, 64, seed=4)
    noise = make_noise(2, 6, seed=3)
    with torch.no_grad():
        expected = g(lab, noise=noise)
        torch.testing.assert_close(inference_generator(g)(lab, noise=noise), expected,
                                   rtol=1e-4, atol=1e-5)
        fast = inference_generator(g, dtype=torch.bfloat16, channels_last=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fast(lab, noise=noise)
    assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=torch.channels_last)
    assert (out.float() - expected).abs().max() < 0.01


needs_fused = pytest.mark.skipif(not fused_available(), reason="PyTorch lacks oneDNN fusion")


@needs_fused
@pytest.mark.parametrize("norm", ["spade", "clade"])
@pytest.mark.parametrize("param_free_norm", ["batch", "instance"])
def test_fused_generator_with_noise_computes_the_same_function(norm, param_free_norm):
    g = _trained_looking(generator(norm=norm, param_free_norm=param_free_norm, noise_dim=6))
    lab = labels(3, 64, seed=5)
    lab[0, :3, :7] = IGNORE_INDEX
    fused = synthesis_generator(g, "cpu")  # what synthesize takes on this CPU
    assert isinstance(fused, FusedGenerator) and fused.noise_dim == 6
    for noise in (make_noise(1, 6, seed=1), make_noise(3, 6, seed=2),
                  torch.randn(3, 6, 64, 64, generator=torch.Generator().manual_seed(0))):
        with torch.no_grad():
            expected = g(lab, noise=noise)
            out = fused(lab, noise=noise)
        assert expected.std() > 0.05
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # a seed's generator draws the same noise in both forms
        torch.testing.assert_close(fused(lab, rng=torch.Generator().manual_seed(9)),
                                   g(lab, rng=torch.Generator().manual_seed(9)),
                                   rtol=1e-4, atol=1e-5)


@needs_fused
@pytest.mark.skipif(not cpu_supports_bf16(), reason="no native bf16 on this CPU")
@pytest.mark.parametrize("norm", ["spade", "clade"])
def test_fused_generator_with_noise_in_bf16(norm):
    g = _trained_looking(generator(norm=norm, noise_dim=6))
    lab = labels(2, 64, seed=2)
    noise = make_noise(2, 6, seed=4)
    with torch.no_grad():
        expected = g(lab, noise=noise)
        out = fused_generator(g, torch.bfloat16)(lab, noise=noise)
    assert out.dtype == torch.bfloat16
    assert (out.float() - expected).abs().max() < 0.02


# ------------------------------------------------------------------------------ training step


def _optimisers(g: torch.nn.Module, d: torch.nn.Module, lr_g: float = 1e-3, lr_d: float = 2e-3):
    return adam(g.parameters(), lr_g, (0.0, 0.9)), adam(d.parameters(), lr_d, (0.0, 0.9))


def _two_class_problem() -> tuple[torch.Tensor, torch.Tensor]:
    """Four 64-px chips split at a column into class 0 | class 1, each class one colour."""
    gen = torch.Generator().manual_seed(0)
    cols = torch.randint(8, 56, (4,), generator=gen)
    lab = (torch.arange(64)[None, None, :] >= cols[:, None, None]).long().expand(4, 64, 64)
    lab = lab.clone()
    lab[0, :4, :4] = IGNORE_INDEX
    colours = torch.tensor([[-0.6, 0.4, 0.8, -0.2], [0.7, -0.5, -0.3, 0.5]])
    real = colours[lab.clamp(max=1)].permute(0, 3, 1, 2)
    return lab, (real + 0.05 * torch.randn(real.shape, generator=gen)).contiguous()


@pytest.mark.parametrize("amp, noise_dim", [("none", 0), ("bf16", 8)])
def test_oasis_step_learns_a_two_class_problem_without_vgg(amp, noise_dim):
    if amp == "bf16" and not cpu_supports_bf16():
        pytest.skip("this CPU has no native bf16")
    torch.set_num_threads(1)
    lab, real = _two_class_problem()
    torch.manual_seed(0)
    g = Generator(2, 4, ngf=8, hidden=16, crop_size=64, param_free_norm="instance",
                  noise_dim=noise_dim)
    d = OasisDiscriminator(2, 4, ndf=8, crop_size=64)
    step = TrainStep(GeneratorStep(g, None), d, *_optimisers(g, d), vgg=None,
                     autocast=(lambda: autocast_context("cpu", "bf16")) if amp == "bf16"
                     else contextlib.nullcontext)

    def colour_error() -> float:
        with torch.no_grad():
            return float((g(lab, noise=None if noise_dim == 0 else make_noise(4, noise_dim, 0))
                          - real).abs().mean())

    before = colour_error()
    losses = [step(lab, real) for _ in range(20)]
    assert set(losses[0]) == {"g_gan", "d_labelmix", "d"}  # no feature matching, no VGG
    assert all(math.isfinite(v) for row in losses for v in row.values())
    first, last = (sum(r["d"] for r in rows) / 5 for rows in (losses[:5], losses[-5:]))
    assert last < 0.95 * first, (first, last)  # D learns to segment and to spot fakes
    after = colour_error()
    assert after < 0.9 * before, (before, after)  # G learns each class's colour from D


def test_oasis_step_without_labelmix_runs_two_images_per_chip():
    torch.manual_seed(0)
    g, d = generator(crop_size=32), OasisDiscriminator(K, 4, ndf=8, crop_size=32)
    seen = []
    d.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    step = TrainStep(GeneratorStep(g, None), d, *_optimisers(g, d), lambda_labelmix=0.0)
    values = step(labels(2, 32), torch.rand(2, 4, 32, 32) * 2 - 1)
    assert set(values) == {"g_gan", "d"} and seen == [2, 4]  # G step: fakes; D step: both
    step.lambda_labelmix = 10.0
    seen.clear()
    step(labels(2, 32), torch.rand(2, 4, 32, 32) * 2 - 1)
    assert seen == [2, 6]  # fake, real and mixed in one discriminator call


def test_patchgan_step_keeps_its_losses():
    torch.manual_seed(0)
    g = generator(crop_size=32)
    d = MultiscaleDiscriminator(K, 4, ndf=8, n_layers=2, num_d=1)
    step = TrainStep(GeneratorStep(g, None), d, *_optimisers(g, d))
    assert not step.oasis
    values = step(labels(2, 32), torch.rand(2, 4, 32, 32) * 2 - 1)
    assert set(values) == {"g_gan", "g_fm", "d"}


# ------------------------------------------------------------------------------------ config


def test_config_fields_validate_and_round_trip():
    cfg = TrainConfig(discriminator="oasis", noise_dim=64, lambda_labelmix=5.0)
    assert 'discriminator = "oasis"' in to_toml(cfg) and "noise_dim = 64" in to_toml(cfg)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    for bad, message in [({"discriminator": "unet"}, "discriminator must be one of patchgan"),
                         ({"noise_dim": -1}, "noise_dim must be 0 or more"),
                         ({"lambda_labelmix": -1.0}, "lambda_labelmix must be a finite")]:
        with pytest.raises(GeospadeError, match=message):
            TrainConfig.from_dict(bad)


def test_saved_configs_without_the_fields_keep_todays_behaviour():
    saved = TrainConfig().to_dict()
    for key in ("discriminator", "noise_dim", "lambda_labelmix"):
        del saved[key]
    cfg = TrainConfig.from_saved(saved)
    assert (cfg.discriminator, cfg.noise_dim) == ("patchgan", 0)
