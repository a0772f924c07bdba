"""Training: the model learns class colours (fp32 and bf16), checkpoints, exact resume, outputs."""

import csv

import numpy as np
import pytest
import torch
from test_train_chipstore import make_chip_store

from geospade.data.chips import ChipDataset
from geospade.errors import GeospadeError
from geospade.formats.checkpoint import load_checkpoint
from geospade.models.encoder import StyleEncoder
from geospade.models.generator import build_generator
from geospade.models.precision import cpu_supports_bf16
from geospade.training.config import TrainConfig, load_config_file
from geospade.training.loop import train
from geospade.training.state import build_models
from geospade.training.step import update_ema
from geospade.training.validation import mean_colour_error, spectral_distance

# Tiny models: 32-px chips fit the "normal" stride of 32; every test trains in seconds.
TINY = dict(batch_size=4, ngf=8, ndf=8, num_d=1, n_layers_d=2, spade_hidden=16,
            vgg_weights="off", preview_every=0, val_every=0, log_every=1, device="cpu", threads=1)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_chip_store(tmp_path_factory.mktemp("train") / "chips", n_train=8, n_val=4, size=32)


def _colour_error(generator, store) -> float:
    val = ChipDataset(store, "val")
    masks = torch.stack([val[i]["mask"] for i in range(len(val))])
    real = torch.stack([val[i]["image"] for i in range(len(val))])
    with torch.no_grad():
        fake = generator.eval()(masks)
    return float(np.nanmean(mean_colour_error(real, fake, masks, val.scheme.num_classes)))


def _untrained_error(store, **kw) -> float:
    torch.manual_seed(0)
    generator, _, _ = build_models(TrainConfig(**{**TINY, **kw}), 6, 4, 32)
    return _colour_error(generator, store)


@pytest.mark.parametrize("norm, amp, steps", [
    ("spade", "none", 50), ("spade", "bf16", 60), ("clade", "none", 100), ("clade", "bf16", 100),
])
def test_short_run_learns_class_colours(store, tmp_path, norm, amp, steps):
    if amp == "bf16" and not cpu_supports_bf16():
        pytest.skip("this CPU has no native bf16")
    torch.set_num_threads(1)
    kw = dict(TINY, lr_g=4e-3, lr_d=4e-3, ema_decay=0.9, amp=amp, channels_last=amp == "bf16",
              norm=norm)
    before = _untrained_error(store, norm=norm)
    result = train(store, tmp_path / "run", steps=steps, quiet=True, **kw)
    assert all(np.isfinite(v) for v in result.losses.values())
    after = _colour_error(result.models["generator_ema"], store)
    # The model learns class -> spectrum: the per-class mean-colour error at least halves.
    assert after < 0.5 * before, (before, after)
    # Validation ran at the end: spectral distance per class, finite where the class occurs.
    assert result.validation["step"] == steps
    assert np.isfinite(result.validation["mean_spectral_distance"])


def test_run_folder_has_checkpoint_config_metrics_previews(store, tmp_path):
    run = tmp_path / "run"
    result = train(store, run, steps=4, quiet=True, **{**TINY, "preview_every": 2,
                                                      "val_every": 2, "log_every": 2})
    assert sorted(p.name for p in (run / "previews").iterdir()) == [
        "step_0000002.png", "step_0000004.png"]
    assert (run / "validation" / "step_0000004.png").is_file()
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert {"g_gan", "g_fm", "d", "lr_g", "it_per_s"} <= set(rows[0])
    # The saved config is a --config file that gives back the resolved config.
    saved = TrainConfig.from_dict(load_config_file(run / "config.toml"))
    assert saved.steps == 4 and saved.ngf == 8 and saved.vgg_weights == "off"
    # The checkpoint loads safely and rebuilds the EMA generator without the training code.
    raw = torch.load(result.checkpoint, weights_only=True)
    assert raw["format"] == "geospade-checkpoint" and raw["step"] == 4
    ckpt = load_checkpoint(result.checkpoint)
    assert ckpt["config"] == saved.to_dict()
    assert ckpt["chip_size"] == 32 and [b["name"] for b in ckpt["bands"]][:3] == [
        "red", "green", "blue"]
    generator = build_generator(ckpt["generator_config"])
    generator.load_state_dict(ckpt["generator_ema"])
    labels = ChipDataset(store, "val")[0]["mask"][None]
    with torch.no_grad():
        torch.testing.assert_close(generator.eval()(labels),
                                   result.models["generator_ema"].eval()(labels))


def _interrupt_at(k):
    def callback(step, losses):
        if step == k:
            raise KeyboardInterrupt
    return callback


def test_resume_continues_exactly(store, tmp_path):
    # Mid-epoch stop (4 steps per epoch), augmentation, VAE noise and lr decay all exercised.
    kw = dict(TINY, batch_size=2, use_vae=True, z_dim=8, augment=True, checkpoint_every=100,
              lr_decay_start=2)
    straight = train(store, tmp_path / "a", steps=6, quiet=True, **kw)
    with pytest.raises(KeyboardInterrupt):
        train(store, tmp_path / "b", steps=6, quiet=True, callback=_interrupt_at(3), **kw)
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["step"] == 3
    resumed = train(store, tmp_path / "b", resume=True, quiet=True)
    assert resumed.step == 6
    a = load_checkpoint(straight.checkpoint)
    b = load_checkpoint(resumed.checkpoint)
    for key in ("generator", "generator_ema", "discriminator", "encoder", "encoder_ema"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            torch.testing.assert_close(a[key][name], b[key][name], rtol=1e-5, atol=1e-6,
                                       msg=f"{key}.{name}")
    # metrics.csv holds each step once.
    rows = list(csv.DictReader((tmp_path / "b" / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]


def test_style_encoder_is_averaged_with_the_generator(store, tmp_path):
    # The EMA encoder starts as the encoder and then trails it by the EMA rule, step by step.
    kw = dict(TINY, batch_size=2, use_vae=True, z_dim=8, ema_decay=0.5)
    one = load_checkpoint(train(store, tmp_path / "one", steps=1, quiet=True, **kw).checkpoint)
    two = load_checkpoint(train(store, tmp_path / "two", steps=2, quiet=True, **kw).checkpoint)
    assert one["encoder_ema"].keys() == one["encoder"].keys()
    expected = StyleEncoder(**two["encoder_config"])
    expected.load_state_dict(one["encoder_ema"])
    live = StyleEncoder(**two["encoder_config"])
    live.load_state_dict(two["encoder"])
    update_ema(expected, live, 0.5)
    moved = False
    for name, value in expected.state_dict().items():
        torch.testing.assert_close(two["encoder_ema"][name], value, msg=name)
        moved |= not torch.equal(two["encoder_ema"][name], two["encoder"][name])
    assert moved  # the average is not the live encoder


def test_nan_loss_stops_and_keeps_last_good_checkpoint(store, tmp_path):
    from geospade.errors import GeospadeError

    run = tmp_path / "run"
    with pytest.raises(GeospadeError, match="became (nan|inf|NaN).*last good checkpoint"):
        train(store, run, steps=20, quiet=True, checkpoint_every=1,
              **{**TINY, "lr_d": 1e30, "lr_g": 1e30})
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["step"] >= 1
    assert all(torch.isfinite(v).all() for v in ckpt["generator"].values()
               if v.is_floating_point())


def test_spectral_distance_values():
    real = np.array([[[0.0, 1.0], [2.0, 3.0]]])  # (C=1, 2, 2)
    fake = real + 0.5
    mask = np.array([[0, 0], [1, 255]])
    d = spectral_distance(real, fake, mask, 3)
    np.testing.assert_allclose(d[:2, 0], [0.5, 0.5])
    assert np.isnan(d[2, 0])
    # Same values in another order: distance 0 (a distribution distance, not per pixel).
    np.testing.assert_allclose(spectral_distance(real, real[:, ::-1, ::-1], np.zeros((2, 2),
                               dtype=int), 1)[0, 0], 0.0)


def test_threads_option_applies_while_training_and_is_restored(store, tmp_path):
    torch.set_num_threads(2)
    seen = []
    train(store, tmp_path / "run", steps=2, quiet=True,
          callback=lambda step, losses: seen.append(torch.get_num_threads()),
          **{**TINY, "threads": 1})
    assert seen == [1, 1]
    assert torch.get_num_threads() == 2
    with pytest.raises(Exception, match="threads"):
        TrainConfig(threads=-1)


def test_negative_seed_is_refused_by_name(store, tmp_path):
    # A TOML config reaches TrainConfig without the CLI's range check.
    with pytest.raises(GeospadeError, match="seed must be 0 or more, not -1"):
        TrainConfig(seed=-1)
    config = tmp_path / "train.toml"
    config.write_text("seed = -1\n")
    with pytest.raises(GeospadeError, match="seed must be 0 or more"):
        train(store, tmp_path / "run", config=config, quiet=True, **TINY)
    assert not (tmp_path / "run").exists()
