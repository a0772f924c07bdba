"""The SPADE model: shapes, class-map conditioning, ignore handling, losses, config round trip.

Everything runs on CPU with tiny widths and random weights (no downloads).
"""

from __future__ import annotations

import copy
import json
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
    SPADEResBlock,
    StyleEncoder,
    VGGLoss,
    autocast_context,
    bands_to_rgb,
    build_generator,
    cpu_supports_bf16,
    discriminator_loss,
    feature_matching_loss,
    fused_available,
    fused_generator,
    generator_loss,
    inference_generator,
    kl_loss,
    load_vgg_loss,
    one_hot,
    reparameterize,
    to_channels_last,
)
from geospade.models import losses as losses_module
from geospade.models.normalization import ClassMaps
from geospade.schemes import IGNORE_INDEX

K = 5  # classes in these tests


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny tensors: one thread is faster, and on a busy 2-core machine two OpenMP threads wait
    # on each other at every op (a bf16 step measured 30x slower).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_generator(**kwargs) -> Generator:
    args = {"num_classes": K, "out_channels": 4, "ngf": 2, "crop_size": 32, "hidden": 4}
    args.update(kwargs)
    return Generator(**args)


def labels(n: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, K, (n, size, size), generator=g)


# ------------------------------------------------------------------------------ shapes


@pytest.mark.parametrize("bands", [1, 3, 4, 8])
def test_generator_output_has_every_band_count_in_tanh_range(bands):
    torch.manual_seed(0)
    g = tiny_generator(out_channels=bands)
    out = g(labels(2, 32))
    assert out.shape == (2, bands, 32, 32)
    assert out.dtype == torch.float32
    assert float(out.detach().abs().max()) <= 1.0


@pytest.mark.parametrize(("ups", "stride"), [("normal", 32), ("more", 64), ("most", 128)])
def test_upsampling_settings_set_the_stride_and_output_size(ups, stride):
    g = tiny_generator(num_upsampling_layers=ups, crop_size=stride)
    assert g.stride == stride
    out = g(labels(2, stride))  # batch 2: batch norm of the 1x1 first map needs 2 values
    assert out.shape == (2, 4, stride, stride)
    # A non-square map that is a multiple of the stride works without VAE.
    assert g(labels(2, 2 * stride)[:, :stride]).shape == (2, 4, stride, 2 * stride)


@pytest.mark.parametrize("norm", ["spade", "clade"])
@pytest.mark.parametrize("pfn", ["batch", "instance"])
def test_generator_norm_and_param_free_norm_options(norm, pfn):
    g = tiny_generator(norm=norm, param_free_norm=pfn)
    out = g(labels(2, 64))  # instance norm needs more than the 1x1 first map of 32 px
    assert out.shape == (2, 4, 64, 64)
    assert torch.isfinite(out).all()
    kinds = {type(m).__name__ for m in g.modules()}
    assert ("SPADE" in kinds) == (norm == "spade") and ("CLADE" in kinds) == (norm == "clade")
    norm_cls = torch.nn.BatchNorm2d if pfn == "batch" else torch.nn.InstanceNorm2d
    assert any(isinstance(m, norm_cls) for m in g.modules())


@pytest.mark.parametrize("norm", ["spade", "clade"])
def test_resblock_shapes_and_learned_shortcut(norm):
    maps = ClassMaps(labels(2, 16), K)
    same = SPADEResBlock(6, 6, K, norm=norm, hidden=4)
    change = SPADEResBlock(6, 3, K, norm=norm, hidden=4)
    x = torch.randn(2, 6, 8, 8)
    assert same(x, maps).shape == (2, 6, 8, 8) and not same.learned_shortcut
    assert change(x, maps).shape == (2, 3, 8, 8) and change.learned_shortcut
    assert not hasattr(same, "conv_s") and change.conv_s.weight.shape == (3, 6, 1, 1)


def test_vae_generator_uses_z_and_encoder_gives_mu_logvar():
    torch.manual_seed(0)
    g = tiny_generator(use_vae=True, z_dim=8).eval()
    lab = labels(2, 32)
    z = torch.randn(2, 8)
    a, b = g(lab, z), g(lab, z)
    assert a.shape == (2, 4, 32, 32) and torch.equal(a, b)
    assert not torch.allclose(g(lab, z), g(lab, z + 1.0))  # the code changes the output
    assert g(lab).shape == (2, 4, 32, 32)  # z drawn from N(0, 1)
    assert not torch.equal(g(lab), g(lab))  # ... anew each time: multi-modal
    enc = StyleEncoder(4, ndf=2, z_dim=8, crop_size=32)
    mu, logvar = enc(a)
    assert mu.shape == logvar.shape == (2, 8)
    assert reparameterize(mu, logvar).shape == (2, 8)
    with pytest.raises(GeospadeError, match="crop size"):
        g(labels(1, 64))


def test_encoder_depth_follows_crop_size():
    assert len(StyleEncoder(3, ndf=2, crop_size=256).layers) == 6
    assert len(StyleEncoder(3, ndf=2, crop_size=64).layers) == 4
    mu, _ = StyleEncoder(3, ndf=2, z_dim=5, crop_size=64)(torch.randn(1, 3, 96, 96))
    assert mu.shape == (1, 5)


# ----------------------------------------------------------- conditioning on the class map


@pytest.mark.parametrize("layer_cls", [SPADE, CLADE])
def test_normalization_output_changes_only_where_the_class_map_changes(layer_cls):
    torch.manual_seed(0)
    layer = layer_cls(4, K) if layer_cls is CLADE else SPADE(4, K, hidden=8)
    if layer_cls is SPADE:  # make gamma/beta clearly non-zero
        for conv in (layer.mlp_shared, layer.mlp_gamma_beta):
            torch.nn.init.normal_(conv.weight, 0, 0.5)
    x = torch.randn(2, 4, 24, 24)
    lab = torch.zeros(2, 24, 24, dtype=torch.long)
    edited = lab.clone()
    edited[:, 8:12, 8:12] = 3
    with torch.no_grad():
        diff = (layer(x, lab) - layer(x, edited)).abs().amax(dim=(0, 1))
    assert (diff[8:12, 8:12] > 1e-3).all()
    # Two 3x3 convs: SPADE reaches 2 pixels beyond the edit; CLADE none.
    reach = 2 if layer_cls is SPADE else 0
    near = torch.zeros(24, 24, dtype=torch.bool)
    near[8 - reach:12 + reach, 8 - reach:12 + reach] = True
    assert float(diff[~near].detach().max()) == 0.0


@pytest.mark.parametrize("layer_cls", [SPADE, CLADE])
def test_modulation_is_x_hat_times_one_plus_gamma_plus_beta(layer_cls):
    """The 1 of (1 + gamma) is added to gamma's bias (or table row), not to gamma itself: the
    layer still computes the paper's formula from its own parameters."""
    torch.manual_seed(0)
    layer = layer_cls(3, K) if layer_cls is CLADE else SPADE(3, K, hidden=4)
    x = torch.randn(2, 3, 8, 8)
    lab = labels(2, 8)
    with torch.no_grad():
        if layer_cls is SPADE:
            torch.nn.init.normal_(layer.mlp_gamma_beta.bias, 0, 0.5)
            hidden = F.relu(layer.mlp_shared(one_hot(lab, K)))
            gamma, beta = layer.mlp_gamma_beta(hidden).chunk(2, dim=1)
        else:
            torch.nn.init.normal_(layer.gamma_beta.weight[:K], 0, 0.5)
            gamma, beta = layer.gamma_beta(lab).permute(0, 3, 1, 2).chunk(2, dim=1)
        expected = layer.norm(x) * (1 + gamma) + beta
        torch.testing.assert_close(layer(x, lab), expected, rtol=1e-5, atol=1e-5)
    # The offset is not a parameter: state dicts keep the reference's keys.
    assert not any("offset" in key for key in layer.state_dict())


def test_spade_resizes_class_map_with_nearest():
    layer = SPADE(3, K, hidden=4)
    x = torch.randn(1, 3, 8, 8)
    lab = labels(1, 32)
    by_index = layer(x, lab)
    by_onehot = layer(x, F.one_hot(lab, K).permute(0, 3, 1, 2).float())
    small = lab[:, ::4, ::4]
    assert torch.allclose(by_index, by_onehot, atol=1e-6)
    assert torch.allclose(by_index, layer(x, small), atol=1e-6)


def test_generator_is_deterministic_in_eval_and_depends_on_labels():
    torch.manual_seed(0)
    g = tiny_generator().eval()
    lab = labels(1, 32)
    other = lab.clone()
    other[:, :16] = (other[:, :16] + 1) % K
    assert torch.equal(g(lab), g(lab))
    assert not torch.allclose(g(lab), g(other))


# ------------------------------------------------------------------------- ignore index


def test_one_hot_ignore_pixels_are_all_zero():
    lab = torch.tensor([[[0, 1], [IGNORE_INDEX, 4]]])
    oh = one_hot(lab, K)
    assert oh.shape == (1, K, 2, 2)
    assert oh[0, :, 1, 0].sum() == 0
    assert oh[0, 0, 0, 0] == 1 and oh[0, 1, 0, 1] == 1 and oh[0, 4, 1, 1] == 1


def test_ignore_pixels_get_plain_normalisation_in_clade_and_zero_input_in_spade():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 8, 8)
    lab = torch.full((1, 8, 8), IGNORE_INDEX)
    clade = CLADE(3, K).eval()
    torch.nn.init.normal_(clade.gamma_beta.weight[:K], 0, 1.0)
    assert torch.allclose(clade(x, lab), clade.norm(x))
    spade = SPADE(3, K, hidden=4)
    assert torch.equal(spade(x, lab), spade(x, torch.zeros(1, K, 8, 8)))


def test_generator_accepts_ignore_and_rejects_unknown_classes():
    g = tiny_generator().eval()
    lab = labels(1, 32)
    lab[:, :8] = IGNORE_INDEX
    assert torch.isfinite(g(lab)).all()
    bad = labels(1, 32)
    bad[0, 0, 0] = K  # one past the last class, and not the ignore index
    with pytest.raises(GeospadeError, match=r"outside 0\.\.4"):
        g(bad)
    with pytest.raises(GeospadeError, match="integer"):
        g(labels(1, 32).float())


def test_generator_rejects_sizes_off_its_stride():
    g = tiny_generator().eval()
    with pytest.raises(GeospadeError, match="multiple of the generator's stride 32"):
        g(labels(1, 48))
    with pytest.raises(GeospadeError, match="multiple of the generator's stride"):
        tiny_generator(crop_size=40)
    with pytest.raises(GeospadeError, match="unknown norm"):
        tiny_generator(norm="spadebatch3x3")
    with pytest.raises(GeospadeError, match="instance norm needs a first feature map larger"):
        tiny_generator(param_free_norm="instance")(labels(2, 32))


def test_discriminator_treats_ignore_as_all_zero_one_hot():
    torch.manual_seed(0)
    d = MultiscaleDiscriminator(K, 3, ndf=4, n_layers=2, num_d=1).eval()  # fixed spectral norm
    lab = labels(1, 16)
    lab[:, :4] = IGNORE_INDEX
    img = torch.rand(1, 3, 16, 16) * 2 - 1
    explicit = F.one_hot(lab.clamp(max=K - 1), K).permute(0, 3, 1, 2).float()
    explicit[:, :, :4] = 0
    assert torch.allclose(d(lab, img)[0][-1], d(explicit, img)[0][-1], atol=1e-6)


# ------------------------------------------------------------------------ discriminator


def test_multiscale_discriminator_returns_feature_lists_per_scale():
    d = MultiscaleDiscriminator(K, 4, ndf=4, n_layers=3, num_d=3)
    out = d(labels(2, 32), torch.randn(2, 4, 32, 32))
    assert len(out) == 3
    assert all(len(scale) == 4 for scale in out)  # 3 layers + logits
    assert [f.shape[1] for f in out[0]] == [4, 8, 16, 1]
    # 4x4 convs with padding 2: 32 -> 17 -> 9 (stride 2), -> 10 (stride 1), logits 11.
    assert [f.shape[-1] for f in out[0]] == [17, 9, 10, 11]
    assert out[1][0].shape[-1] == 9 and out[2][0].shape[-1] == 5  # input pooled 32 -> 16 -> 8


# -------------------------------------------------------------------------------- losses


def as_outputs(*logits: float) -> list[list[torch.Tensor]]:
    return [[torch.full((2, 1, 3, 3), v)] for v in logits]


def test_hinge_losses_on_constructed_cases():
    assert discriminator_loss(as_outputs(2.0, 1.0), as_outputs(-2.0, -1.0)) == 0.0
    assert discriminator_loss(as_outputs(0.0), as_outputs(0.0)) == 2.0
    assert math.isclose(float(discriminator_loss(as_outputs(0.5), as_outputs(0.0))), 1.5)
    assert math.isclose(float(generator_loss(as_outputs(3.0, 1.0))), -2.0)


def test_least_squares_and_original_losses():
    assert discriminator_loss(as_outputs(1.0), as_outputs(0.0), "ls") == 0.0
    assert math.isclose(float(discriminator_loss(as_outputs(0.0), as_outputs(1.0), "ls")), 2.0)
    assert generator_loss(as_outputs(1.0), "ls") == 0.0
    softplus = math.log1p(math.exp(-2.0))  # BCE with logits at 2, target 1
    assert math.isclose(float(discriminator_loss(as_outputs(2.0), as_outputs(-2.0), "original")),
                        2 * softplus, rel_tol=1e-6)
    assert math.isclose(float(generator_loss(as_outputs(2.0), "original")), softplus,
                        rel_tol=1e-6)
    with pytest.raises(GeospadeError, match="unknown GAN loss"):
        generator_loss(as_outputs(0.0), "wgan")


def test_feature_matching_is_mean_l1_summed_over_layers_averaged_over_scales():
    real = [[torch.zeros(1, 2, 4, 4), torch.zeros(1, 3, 2, 2), torch.zeros(1, 1, 2, 2)]] * 2
    fake = [[torch.full((1, 2, 4, 4), 0.5), torch.full((1, 3, 2, 2), -1.0),
             torch.full((1, 1, 2, 2), 9.0)]] * 2
    assert math.isclose(float(feature_matching_loss(fake, real)), 1.5)  # logits ignored
    assert float(feature_matching_loss(real, real)) == 0.0


def test_kl_loss_values():
    assert float(kl_loss(torch.zeros(3, 4), torch.zeros(3, 4))) == 0.0
    # mu = 1, logvar = 0: 0.5 per dimension.
    assert math.isclose(float(kl_loss(torch.ones(3, 4), torch.zeros(3, 4))), 2.0)
    assert float(kl_loss(torch.zeros(1, 4), torch.full((1, 4), 1.0))) > 0


def test_generator_step_gradients_reach_generator_through_discriminator():
    torch.manual_seed(0)
    g = tiny_generator()
    d = MultiscaleDiscriminator(K, 4, ndf=4, n_layers=2, num_d=2)
    lab = labels(2, 32)
    real = torch.rand(2, 4, 32, 32) * 2 - 1
    fake = g(lab)
    fake_out, real_out = d(lab, fake), d(lab, real)
    loss = generator_loss(fake_out) + 10 * feature_matching_loss(fake_out, real_out)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in g.parameters() if p.requires_grad)


# --------------------------------------------------------------------------------- VGG


@pytest.mark.parametrize("bands", [1, 2, 4, 8])
def test_vgg_loss_plumbing_with_random_weights(bands):
    torch.manual_seed(0)
    vgg = VGGLoss(weights=None)
    real = torch.rand(1, bands, 32, 32) * 2 - 1
    fake = (torch.rand(1, bands, 32, 32) * 2 - 1).requires_grad_()
    assert float(vgg(real, real)) == 0.0
    loss = vgg(fake, real)
    assert float(loss.detach()) > 0
    loss.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in vgg.parameters())
    vgg.train()
    assert not vgg.training


def test_bands_to_rgb_mapping():
    x = torch.arange(8.0).view(1, 8, 1, 1)
    assert bands_to_rgb(x).flatten().tolist() == [0.0, 1.0, 2.0]
    assert bands_to_rgb(x[:, :1]).flatten().tolist() == [0.0, 0.0, 0.0]
    assert bands_to_rgb(x[:, :2]).flatten().tolist() == [0.0, 1.0, 0.5]


def test_vgg_unavailable_is_reported_not_raised(monkeypatch, tmp_path):
    monkeypatch.setattr(losses_module, "vgg_weights_cache_path", lambda: tmp_path / "none.pth")
    loss, reason = load_vgg_loss(download=False)
    assert loss is None and "OFF" in reason and "--vgg-weights" in reason
    with pytest.raises(GeospadeError, match="VGG19 weights not found"):
        load_vgg_loss(tmp_path / "missing.pth")
    wrong = tmp_path / "wrong.pth"
    torch.save({"0.weight": torch.zeros(2, 2)}, wrong)
    with pytest.raises(GeospadeError, match="does not hold VGG19 weights"):
        load_vgg_loss(wrong)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(GeospadeError, match="is not a readable VGG19 weights file"):
        load_vgg_loss(garbage)


def test_vgg_loads_a_local_features_state_dict(tmp_path):
    from torchvision.models import vgg19

    features = vgg19(weights=None).features
    path = tmp_path / "vgg.pth"
    torch.save(features.state_dict(), path)
    loss, message = load_vgg_loss(path)
    assert loss is not None and str(path) in message
    assert torch.equal(loss.slices[0][0].weight, features[0].weight)


# ---------------------------------------------------------------------- config round trip


def test_build_generator_round_trips_through_json_config():
    torch.manual_seed(0)
    g = tiny_generator(norm="clade", param_free_norm="instance", num_upsampling_layers="more",
                       crop_size=128, spectral_norm=False).eval()
    config = json.loads(json.dumps(g.config))
    assert config == g.config and config["norm"] == "clade"
    rebuilt = build_generator(config).eval()
    rebuilt.load_state_dict(g.state_dict())
    lab = labels(1, 128)
    assert torch.equal(rebuilt(lab), g(lab))
    with pytest.raises(GeospadeError, match="unknown generator config keys: bogus"):
        build_generator({**config, "bogus": 1})


def test_state_dict_survives_weights_only_load(tmp_path):
    g = tiny_generator()
    path = tmp_path / "g.pt"
    torch.save({"generator": g.state_dict(), "generator_config": g.config}, path)
    data = torch.load(path, weights_only=True)
    rebuilt = build_generator(data["generator_config"])
    rebuilt.load_state_dict(data["generator"])
    lab = labels(1, 32)
    assert torch.equal(rebuilt.eval()(lab), g.eval()(lab))


# ---------------------------------------------------------------- layout and precision


@pytest.mark.parametrize("parameters", [True, False])
def test_channels_last_computes_the_same_function(parameters):
    # Feature maps go channels-last either way; the parameters only when asked (training
    # keeps them contiguous for fused Adam and spectral norm).
    torch.manual_seed(0)
    g = tiny_generator().eval()
    lab = labels(2, 32)
    expected = g(lab)
    to_channels_last(g, parameters=parameters)
    out = g(lab)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(out, expected, atol=1e-5)
    weight = g.blocks[0].conv_0.parametrizations.weight.original
    assert weight.is_contiguous(memory_format=torch.channels_last) == parameters
    assert weight.is_contiguous() != parameters


@pytest.mark.parametrize("norm", ["spade", "clade"])
def test_inference_generator_computes_the_same_function(norm):
    torch.manual_seed(0)
    g = tiny_generator(norm=norm)
    lab = labels(2, 32)
    for _ in range(2):  # a few training-mode calls: power iterations and batch statistics
        g(labels(4, 32, seed=1))
    g.eval()
    with torch.no_grad():
        expected = g(lab)
        fast = inference_generator(g)
        torch.testing.assert_close(fast(lab), expected, rtol=1e-5, atol=1e-6)
    # Spectral norm folded away in the copy only; no gradients.
    assert not any("parametrizations" in key for key in fast.state_dict())
    assert any("parametrizations" in key for key in g.state_dict())
    assert not any(p.requires_grad for p in fast.parameters())


@pytest.mark.skipif(not cpu_supports_bf16(), reason="no native bf16 on this CPU")
def test_inference_generator_in_bf16_channels_last():
    torch.manual_seed(0)
    g = tiny_generator(ngf=4, hidden=8).eval()
    for conv in (m for m in g.modules() if isinstance(m, torch.nn.Conv2d)):
        if conv.bias is not None:
            conv.bias.data.normal_(0, 0.2)  # outputs that are not flat grey
    lab = labels(2, 32)
    with torch.no_grad():
        expected = g(lab)
        fast = inference_generator(g, dtype=torch.bfloat16, channels_last=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fast(lab)
    assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=torch.channels_last)
    assert (out.float() - expected).abs().max() < 0.01
    weight = fast.blocks[0].conv_0.weight
    assert weight.dtype == torch.bfloat16
    assert weight.is_contiguous(memory_format=torch.channels_last)
    assert fast.blocks[0].norm_0.norm.running_var.dtype == torch.float32


def test_inference_generator_leaves_deep_copies_working():
    """Removing a parametrization in place also edits the class a module shares with its deep
    copies; the inference copy is built fresh, so the EMA's source generator keeps working."""
    torch.manual_seed(0)
    g = tiny_generator()
    ema = copy.deepcopy(g).eval()
    inference_generator(ema)
    g.eval()
    lab = labels(1, 32)
    with torch.no_grad():
        torch.testing.assert_close(g(lab), ema(lab))
    conv = g.blocks[0].conv_0
    assert conv.weight.shape == conv.parametrizations.weight.original.shape


def trained_looking_generator(**kwargs) -> Generator:
    """A generator with non-flat output and batch-norm statistics far from (0, 1)."""
    torch.manual_seed(0)
    g = tiny_generator(ngf=4, hidden=8, **kwargs)
    for module in g.modules():
        if isinstance(module, torch.nn.Conv2d) and module.bias is not None:
            module.bias.data.normal_(0, 0.2)
        if isinstance(module, CLADE):
            module.gamma_beta.weight.data[:-1].normal_(0, 0.3)
    for seed in range(3):  # training-mode calls: running statistics and power iterations
        g(labels(4, 64, seed=seed))
    return g.eval()


needs_fused = pytest.mark.skipif(not fused_available(), reason="PyTorch lacks oneDNN fusion")


@needs_fused
@pytest.mark.parametrize("norm", ["spade", "clade"])
@pytest.mark.parametrize("param_free_norm", ["batch", "instance"])
def test_fused_generator_computes_the_same_function(norm, param_free_norm):
    g = trained_looking_generator(norm=norm, param_free_norm=param_free_norm)
    if param_free_norm == "batch":
        stats = g.blocks[2].norm_1.norm
        assert stats.running_mean.abs().max() > 0.01 and (stats.running_var - 1).abs().max() > 0.01
    fused = fused_generator(g, batch_size=2)
    # Other batch sizes and shapes than the packed layout was picked for; ignore pixels too.
    for shape in [(2, 64, 64), (1, 64, 96), (3, 96, 64)]:
        lab = labels(shape[0], max(shape[1:]), seed=5)[:, :shape[1], :shape[2]].clone()
        lab[0, :3, :7] = 255
        with torch.no_grad():
            expected = g(lab)
            out = fused(lab)
        assert out.shape == expected.shape and out.dtype == torch.float32
        assert expected.std() > 0.05
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    assert not any(p.requires_grad for p in fused.parameters())


@needs_fused
def test_fused_generator_with_a_style_code():
    g = trained_looking_generator(use_vae=True, z_dim=8, crop_size=64)
    lab = labels(2, 64)
    z = torch.randn(2, 8)
    with torch.no_grad():
        torch.testing.assert_close(fused_generator(g)(lab, z), g(lab, z), rtol=1e-4, atol=1e-5)
        with pytest.raises(GeospadeError, match="crop size"):
            fused_generator(g)(labels(1, 32), z[:1])


@needs_fused
def test_fused_generator_leaves_its_source_alone_and_checks_input():
    g = trained_looking_generator()
    before = {k: v.clone() for k, v in g.state_dict().items()}
    fused = fused_generator(g)
    assert all(torch.equal(before[k], v) for k, v in g.state_dict().items())
    assert g.training is False and any("parametrizations" in k for k in g.state_dict())
    with pytest.raises(GeospadeError, match="multiple of the generator's stride"):
        fused(labels(1, 40))
    with pytest.raises(GeospadeError, match="outside"):
        fused(torch.full((1, 32, 32), K, dtype=torch.long))


@needs_fused
@pytest.mark.skipif(not cpu_supports_bf16(), reason="no native bf16 on this CPU")
@pytest.mark.parametrize("norm", ["spade", "clade"])
def test_fused_generator_in_bf16(norm):
    g = trained_looking_generator(norm=norm)
    lab = labels(3, 32, seed=2)
    with torch.no_grad():
        expected = g(lab)
        out = fused_generator(g, torch.bfloat16)(lab)
    assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=torch.channels_last)
    assert (out.float() - expected).abs().max() < 0.01


@pytest.mark.skipif(not cpu_supports_bf16(), reason="no native bf16 on this CPU")
def test_bf16_autocast_keeps_feature_maps_bf16():
    """A spectral-normed conv that divides its output by sigma adds the fp32 bias in the output's
    dtype: an fp32 result would send every later layer of the block through fp32."""
    torch.manual_seed(0)
    g = tiny_generator(ngf=8, hidden=8).train()
    dtypes = []
    for block in g.blocks:
        block.register_forward_hook(lambda m, args, out: dtypes.append(out.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g(labels(2, 32))
    assert dtypes == [torch.bfloat16] * len(g.blocks)


@pytest.mark.skipif(not cpu_supports_bf16(), reason="no native bf16 on this CPU")
def test_short_bf16_run_learns_class_colours():
    # Per-class colours as the target; a few steps of L1 in bf16 autocast must cut the
    # per-class colour error (bf16 keeps the model learning, not diverging).
    torch.manual_seed(0)
    g = to_channels_last(tiny_generator(out_channels=3, ngf=4, hidden=8))
    colours = torch.tensor([[-0.8, 0.2, 0.9], [0.5, -0.5, 0.1], [0.9, 0.9, -0.9],
                            [-0.2, -0.9, 0.4], [0.0, 0.6, -0.3]])
    lab = labels(2, 32, seed=1)
    target = colours[lab].permute(0, 3, 1, 2)
    opt = torch.optim.Adam(g.parameters(), lr=1e-2, betas=(0.5, 0.9))

    def colour_error() -> float:
        with torch.no_grad(), autocast_context("cpu", "bf16"):
            out = g(lab).float()
        return float((out - target).abs().mean())

    before = colour_error()
    for _ in range(30):
        opt.zero_grad()
        with autocast_context("cpu", "bf16"):
            loss = F.l1_loss(g(lab).float(), target)
        assert torch.isfinite(loss)
        loss.backward()
        opt.step()
    after = colour_error()
    assert after < 0.8 * before


def test_autocast_context_rejects_fp16_on_cpu():
    with pytest.raises(GeospadeError, match="fp16 needs a CUDA device"):
        autocast_context("cpu", "fp16")
    with autocast_context("cpu", None):
        assert not torch.is_autocast_enabled("cpu")


def test_spectral_conv_divides_output_like_the_weight():
    """Dividing a small output by sigma is the same function (and gradient) as dividing W."""
    from geospade.models.generator import conv2d, spectral_conv

    torch.manual_seed(0)
    conv = conv2d(64, 64, 3, padding=1, spectral_norm=True)  # 36864 weights > 2*64*4*4 outputs
    x = torch.randn(2, 64, 4, 4, dtype=torch.float64)
    conv = conv.double()
    state = {k: v.clone() for k, v in conv.state_dict().items()}
    results = []
    for fn in (spectral_conv, lambda c, t: c(t)):
        conv.load_state_dict(state)
        conv.zero_grad()
        out = fn(conv, x)
        out.square().sum().backward()
        weight = conv.parametrizations.weight.original
        results.append((out.detach(), weight.grad.clone(), conv.bias.grad.clone(),
                        conv.parametrizations.weight[0]._u.clone()))
    for new, old in zip(*results, strict=True):
        torch.testing.assert_close(new, old, rtol=1e-10, atol=1e-12)
