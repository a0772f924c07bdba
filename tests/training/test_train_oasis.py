"""OASIS and 3D noise wired into training and synthesis; what a run says it runs with (issue 13,
and "fast by default": channels-last with bf16, automatic threads); the training state's
round trip."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest
import rasterio
import torch
from cli_runner import run_cli
from test_train_chipstore import make_chip_store
from torch import nn

from geospade import threads
from geospade.data.chips import ChipDataset
from geospade.errors import GeospadeError
from geospade.formats.checkpoint import load_checkpoint, save_checkpoint
from geospade.landscape import make_landscape
from geospade.models import Generator, make_noise
from geospade.models.oasis import OasisDiscriminator, oasis_depth
from geospade.models.precision import Precision, cpu_supports_bf16, parse_precision
from geospade.normalization import BandStats
from geospade.schemes import CHESAPEAKE7
from geospade.synthesis import load_synthesis_model, synthesize
from geospade.synthesis.model import noise_seed, seeded_inputs
from geospade.training.config import TrainConfig, load_config_file
from geospade.training.loop import train
from geospade.training.state import TrainingData, TrainingState, build_models
from geospade.training.step import TrainStep

TINY_CLI = ["--batch-size", "2", "--ngf", "4", "--ndf", "4", "--spade-hidden", "8",
            "--norm", "clade", "--device", "cpu", "--preview-every", "0", "--val-every", "0"]
TINY = dict(batch_size=2, ngf=4, ndf=4, num_d=1, n_layers_d=1, spade_hidden=8, norm="clade",
            vgg_weights="off", device="cpu", log_every=1)
NOISE_SIZE = 64


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_chip_store(tmp_path_factory.mktemp("oasis") / "chips", n_train=4, n_val=2,
                           size=32)


@pytest.fixture(scope="module")
def landcover(tmp_path_factory):
    root = tmp_path_factory.mktemp("lc")
    return make_landscape(root / "lc.tif", root / "im.tif", 150, 100, feature_scale=0.3,
                          seed=1).landcover


@pytest.fixture
def two_free_cpus(monkeypatch):
    """A machine of 2 idle CPUs and no OMP_NUM_THREADS: the automatic choice is 2 threads."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "affinity_cpus", lambda: {0, 1})
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda: None)
    monkeypatch.setattr(threads, "busy_cpus", lambda sample_s=0.2: 0.0)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


# -- OASIS + noise through the CLI, and synthesize reading the result --------------------------


def test_cli_trains_oasis_with_noise_and_synthesize_reads_it(store, landcover, tmp_path,
                                                              capsys):
    run = tmp_path / "run"
    code, _, err = run_cli(["train", str(store), "-o", str(run), "--steps", "2",
                            "--discriminator", "oasis", "--noise-dim", "8",
                            "--lambda-labelmix", "5", *TINY_CLI], capsys)
    assert code == 0, err
    # vgg_weights "auto" with OASIS: no VGG loss (and no download attempt), said in one line.
    assert ("perceptual (VGG) loss OFF (OASIS needs no VGG loss; --vgg-weights PATH to use it "
            "anyway)") in err
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["config"]["discriminator"] == "oasis"
    assert ckpt["config"]["noise_dim"] == 8 and ckpt["config"]["lambda_labelmix"] == 5.0
    assert ckpt["generator_config"]["noise_dim"] == 8
    assert ckpt["vgg"] is False
    assert ckpt["discriminator_config"] == {"num_classes": 6, "in_channels": 4, "ndf": 4,
                                            "crop_size": 32, "depth": oasis_depth(32),
                                            "spectral_norm": True}
    discriminator = OasisDiscriminator(**ckpt["discriminator_config"])
    discriminator.load_state_dict(ckpt["discriminator"])  # the weights are an OASIS U-Net's
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert "d_labelmix" in rows[0] and "g_fm" not in rows[0]
    assert float(rows[-1]["d_labelmix"]) >= 0
    out = tmp_path / "out.tif"
    code, _, err = run_cli(["synthesize", str(run / "checkpoint.pt"), str(landcover), "-o",
                            str(out), "--seed", "3", "-q"], capsys)
    assert code == 0, err
    with rasterio.open(out) as src, rasterio.open(landcover) as lc:
        assert (src.count, src.width, src.height) == (4, lc.width, lc.height)
        assert src.read().std() > 0


def test_resume_with_oasis_and_noise_is_exact(store, tmp_path):
    # val_every 3: the 4-step run validates at step 3 and again at its end, before its
    # checkpoint; the straight run does not validate at step 4. Validation and previews draw
    # their noise from a seeded generator, so they leave training's RNG alone.
    kw = dict(TINY, discriminator="oasis", noise_dim=8, preview_every=2, val_every=3,
              lr_decay_start=6, checkpoint_every=100)
    straight = train(store, tmp_path / "a", steps=8, quiet=True, **kw)
    train(store, tmp_path / "b", steps=4, quiet=True, **kw)
    resumed = train(store, tmp_path / "b", resume=True, steps=8, quiet=True)
    assert resumed.step == 8
    a, b = load_checkpoint(straight.checkpoint), load_checkpoint(resumed.checkpoint)
    for key in ("generator", "generator_ema", "discriminator"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            torch.testing.assert_close(a[key][name], b[key][name], rtol=1e-5, atol=1e-6,
                                       msg=f"{key}.{name}")
    # The previews of one step are the same images in both runs (same noise each time).
    assert ((tmp_path / "a" / "previews" / "step_0000008.png").read_bytes()
            == (tmp_path / "b" / "previews" / "step_0000008.png").read_bytes())


def test_build_models_makes_the_discriminator_the_config_names():
    torch.manual_seed(0)
    g, d, _ = build_models(TrainConfig(**TINY, discriminator="oasis", noise_dim=3), 6, 4, 64)
    assert isinstance(d, OasisDiscriminator) and d.depth == oasis_depth(64)
    assert g.noise_dim == 3 and g.config["noise_dim"] == 3
    logits = d(torch.zeros(1, 4, 64, 64))
    assert logits.shape == (1, 7, 64, 64)  # 6 classes and "fake"
    g, d, _ = build_models(TrainConfig(**TINY), 6, 4, 64)
    assert not isinstance(d, OasisDiscriminator) and "noise_dim" not in g.config


# -- what a run says it runs with --------------------------------------------------------------


def _first_line(err: str) -> str:
    return err.splitlines()[0]


def test_the_first_line_names_precision_layout_and_threads(store, tmp_path, capsys,
                                                           two_free_cpus):
    code, _, err = run_cli(["train", str(store), "-o", str(tmp_path / "run"), "--steps", "1",
                            "--no-vgg", *TINY_CLI], capsys)
    assert code == 0, err
    assert _first_line(err) == "geospade train: fp32, contiguous, 2 threads (2 of 2 CPUs free)"
    code, _, err = run_cli(["train", str(store), "-o", str(tmp_path / "run1"), "--steps", "1",
                            "--no-vgg", "--threads", "1", *TINY_CLI], capsys)
    assert code == 0, err
    assert _first_line(err) == "geospade train: fp32, contiguous, 1 thread (--threads 1; 2 CPUs)"


def test_omp_num_threads_is_the_automatic_count_when_set(store, tmp_path, two_free_cpus,
                                                         monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    seen = []
    train(store, tmp_path / "run", steps=1, quiet=True,
          callback=lambda step, losses: seen.append(torch.get_num_threads()), **TINY)
    assert seen == [1]
    monkeypatch.delenv("OMP_NUM_THREADS")
    train(store, tmp_path / "run2", steps=1, quiet=True,
          callback=lambda step, losses: seen.append(torch.get_num_threads()), **TINY)
    assert seen == [1, 2]


@pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has no native bf16")
def test_bf16_runs_channels_last_unless_told_not_to(store, tmp_path, capsys, two_free_cpus):
    code, _, err = run_cli(["train", str(store), "-o", str(tmp_path / "run"), "--steps", "1",
                            "--no-vgg", "--amp", "bf16", *TINY_CLI], capsys)
    assert code == 0, err
    assert _first_line(err).startswith("geospade train: bf16, channels-last, 2 threads")
    code, _, err = run_cli(["train", str(store), "-o", str(tmp_path / "run2"), "--steps", "1",
                            "--no-vgg", "--amp", "bf16", "--no-channels-last", *TINY_CLI],
                           capsys)
    assert code == 0, err
    assert _first_line(err).startswith("geospade train: bf16, contiguous, ")


def test_amp_auto_trains_in_the_native_precision_and_records_it(store, tmp_path, capsys,
                                                                 two_free_cpus):
    run = tmp_path / "run"
    code, _, err = run_cli(["train", str(store), "-o", str(run), "--steps", "1", "--no-vgg",
                            "--amp", "auto", *TINY_CLI], capsys)
    assert code == 0, err
    native = "bf16" if cpu_supports_bf16() else "none"
    said = "bf16, channels-last" if native == "bf16" else "fp32, contiguous"
    assert _first_line(err).startswith(f"geospade train: {said}, ")
    assert f'amp = "{native}"' in (run / "config.toml").read_text()
    assert torch.load(run / "checkpoint.pt", weights_only=True)["config"]["amp"] == native
    # Resuming reads the resolved precision back.
    code, _, err = run_cli(["train", str(store), "-o", str(run), "--steps", "2", "--resume"],
                           capsys)
    assert code == 0, err
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 2


@pytest.mark.parametrize("channels_last, amp, expected", [
    (None, "none", False), (None, "bf16", True), (None, "fp16", True),
    (False, "bf16", False), (True, "none", True),
])
def test_channels_last_is_automatic_with_reduced_precision(channels_last, amp, expected):
    assert TrainConfig(channels_last=channels_last, amp=amp).uses_channels_last() is expected


def test_config_files_with_channels_last_still_read(tmp_path):
    old = tmp_path / "old.toml"
    old.write_text('[train]\namp = "bf16"\nchannels_last = false\nthreads = 0\n')
    cfg = TrainConfig.from_dict(load_config_file(old))
    assert cfg.channels_last is False and not cfg.uses_channels_last()
    new = tmp_path / "new.toml"
    new.write_text('discriminator = "oasis"\nnoise_dim = 16\nlambda_labelmix = 2.5\n')
    cfg = TrainConfig.from_dict(load_config_file(new))
    assert (cfg.discriminator, cfg.noise_dim, cfg.lambda_labelmix) == ("oasis", 16, 2.5)
    assert cfg.channels_last is None
    bad = tmp_path / "bad.toml"
    bad.write_text('discriminator = "stylegan"\n')
    with pytest.raises(GeospadeError, match="discriminator must be one of patchgan, oasis"):
        load_config_file(bad)


def test_parse_precision():
    assert parse_precision("bf16") is Precision.BF16
    assert parse_precision(Precision.FP16) is Precision.FP16
    assert parse_precision(None) is Precision.NONE
    assert parse_precision("off") is Precision.NONE
    assert str(parse_precision("none")) == "none"
    with pytest.raises(GeospadeError, match="unknown amp 'fp8'"):
        parse_precision("fp8")
    with pytest.raises(GeospadeError, match=r"unknown --amp 'auto' \(choose from 'none'\)"):
        parse_precision("auto", (Precision.NONE,), what="--amp")


# -- the training state ------------------------------------------------------------------------


def _state(store, seed: int, cfg: TrainConfig) -> TrainingState:
    dataset = ChipDataset(store, "train")
    torch.manual_seed(seed)
    models = build_models(cfg, dataset.scheme.num_classes, len(dataset.bands), 32)
    data = TrainingData(dataset.scheme, tuple(dataset.bands), 32, "sha")
    return TrainingState(cfg, data, *models, device=torch.device("cpu"), vgg=False)


def _assert_same(a, b, what: str) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), what
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), what
        for key in a:
            _assert_same(a[key], b[key], f"{what}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), what
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{what}[{i}]")
    else:
        assert a == b, what


def test_training_state_round_trips_through_a_checkpoint(store, tmp_path):
    cfg = TrainConfig(**TINY, discriminator="oasis", noise_dim=4)
    state = _state(store, 0, cfg)
    step = TrainStep(state.g_module, state.discriminator, state.opt_g, state.opt_d,
                     ema=state.generator_ema, vgg=None)
    dataset = ChipDataset(store, "train")
    step(torch.stack([dataset[i]["mask"] for i in range(2)]),
         torch.stack([dataset[i]["image"] for i in range(2)]))
    state.step = 1
    path = save_checkpoint(tmp_path / "state.pt", state.state_dict())
    torch.manual_seed(123)  # the RNG state moves on; loading must put it back
    other = _state(store, 1, cfg)
    before = other.generator.state_dict()["fc.weight"].clone()
    payload = load_checkpoint(path)
    other.load_state_dict(payload, path)
    assert not torch.equal(before, other.generator.state_dict()["fc.weight"])
    assert other.step == 1
    for key, module in state.models().items():
        _assert_same(module.state_dict(), other.models()[key].state_dict(), key)
    _assert_same(state.opt_g.state_dict(), other.opt_g.state_dict(), "optimizer_g")
    _assert_same(state.opt_d.state_dict(), other.opt_d.state_dict(), "optimizer_d")
    assert len(other.opt_g.state_dict()["state"]) > 0  # Adam's moments were there to compare
    _assert_same(payload["rng"]["torch"], torch.get_rng_state(), "rng")


# -- synthesis with noise ----------------------------------------------------------------------


def _noise_checkpoint(path, use_vae: bool = False):
    """A tiny random generator with 8 noise channels, re-initialised so that its output has
    structure and depends on the noise (uint16 output: no quantisation to speak of)."""
    torch.manual_seed(0)
    g = Generator(6, 3, ngf=4, crop_size=NOISE_SIZE, hidden=8, noise_dim=8, use_vae=use_vae,
                  z_dim=8)
    with torch.no_grad():
        for m in g.modules():
            if isinstance(m, nn.Conv2d):
                weight = (m.parametrizations.weight.original
                          if hasattr(m, "parametrizations") else m.weight)
                nn.init.xavier_normal_(weight, gain=1.0)
        for m in g.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = None
        g.train()
        for _ in range(2):
            g(torch.randint(0, 6, (4, NOISE_SIZE, NOISE_SIZE)))
    g.eval()
    bands = [BandStats(n, "uint16", 0, 60000).to_dict() for n in ("red", "green", "blue")]
    return save_checkpoint(path, {
        "generator_config": g.config, "scheme": CHESAPEAKE7.to_dict(), "bands": bands,
        "chip_size": NOISE_SIZE, "generator": g.state_dict(), "generator_ema": g.state_dict(),
        "config": {}, "step": 0})


@pytest.fixture(scope="module")
def noise_ckpt(tmp_path_factory):
    return _noise_checkpoint(tmp_path_factory.mktemp("noise") / "noise.pt")


def test_the_seed_picks_the_noise_reproducibly(noise_ckpt, landcover, tmp_path):
    a, b, c = tmp_path / "a.tif", tmp_path / "b.tif", tmp_path / "c.tif"
    synthesize(noise_ckpt, landcover, a, seed=3, quiet=True)
    synthesize(noise_ckpt, landcover, b, seed=3, quiet=True)
    synthesize(noise_ckpt, landcover, c, seed=4, quiet=True)
    assert a.read_bytes() == b.read_bytes()
    with rasterio.open(a) as x, rasterio.open(c) as y:
        assert np.abs(x.read().astype(float) - y.read()).mean() > 10  # another variant


class _Recorder(nn.Module):
    """The generator, recording the noise of every call."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator, self.noises = generator, []

    def forward(self, labels, z=None, *, noise=None, rng=None):
        self.noises.append(None if noise is None else noise.clone())
        return self.generator(labels, z, noise=noise, rng=rng)


def test_every_window_of_a_raster_gets_the_same_noise(noise_ckpt, landcover, tmp_path):
    # The same noise in every window is what keeps overlapping windows seamless.
    model = load_synthesis_model(noise_ckpt, device="cpu", amp="none", seed=5)
    model.generator = _Recorder(model.generator)
    synthesize(model, landcover, tmp_path / "out.tif", overlap=16, batch_size=1, quiet=True)
    expected = make_noise(1, 8, seed=noise_seed(5))
    assert len(model.generator.noises) >= 4
    for noise in model.generator.noises:
        assert noise is not None and torch.equal(noise, expected)


def test_with_seed_and_explicit_noise_give_other_variants(noise_ckpt):
    model = load_synthesis_model(noise_ckpt, device="cpu", amp="none", seed=5)
    chips = np.stack([np.full((NOISE_SIZE, NOISE_SIZE), 2, np.uint8)] * 2)
    base = model(chips)
    np.testing.assert_array_equal(base[0], base[1])  # one noise for every window
    np.testing.assert_array_equal(model(chips), base)
    np.testing.assert_array_equal(model.with_seed(5)(chips), base)
    other = model.with_seed(6)
    assert torch.equal(other.noise, make_noise(1, 8, seed=noise_seed(6))) and other.seed == 6
    assert np.abs(other(chips) - base).mean() > 1e-3
    variants = model(chips, noise=make_noise(2, 8, seed=1))  # one noise per chip
    assert np.abs(variants[0] - variants[1]).mean() > 1e-3
    with pytest.raises(GeospadeError, match="noise has 3 images"):
        model(chips, noise=make_noise(3, 8, seed=1))
    with pytest.raises(GeospadeError, match="non-negative"):
        model.with_seed(-1)


def test_z_and_noise_come_from_distinct_seeds(tmp_path):
    generator = Generator(6, 3, ngf=4, crop_size=NOISE_SIZE, hidden=8, noise_dim=8,
                          use_vae=True, z_dim=8)
    z, noise = seeded_inputs(generator, 7, torch.device("cpu"))
    assert z.shape == (1, 8) and noise.shape == (1, 8)
    assert not torch.allclose(z, noise)  # one seed for both would give the same numbers
    z2, noise2 = seeded_inputs(generator, 7, torch.device("cpu"))
    assert torch.equal(z, z2) and torch.equal(noise, noise2)
    plain = Generator(6, 3, ngf=4, crop_size=NOISE_SIZE, hidden=8)
    assert seeded_inputs(plain, 7, torch.device("cpu")) == (None, None)


def test_help_texts_name_the_new_options_and_their_defaults(capsys):
    code, out, _ = run_cli(["synthesize", "--help"], capsys)
    assert code == 0
    assert "noise of one trained with --noise-dim" in re.sub(r"\s+", " ", out)
    code, out, _ = run_cli(["train", "--help"], capsys)
    assert code == 0
    text = re.sub(r"\s+", " ", out)
    assert "--discriminator [patchgan|oasis]" in text and "[patchgan]" in text
    assert "--noise-dim" in text and "0: none, one image per class map. [0]" in text
    assert "--lambda-labelmix" in text and "0 turns it off. [10]" in text
    assert "0: automatic, from the CPUs free" in text
    assert "[auto: on with --amp bf16 or fp16]" in text


def test_clade_is_the_default_and_checkpoints_without_norm_were_spade():
    assert TrainConfig().norm == "clade"
    assert TrainConfig.from_saved({"steps": 10}).norm == "spade"
    assert TrainConfig.from_saved({"steps": 10, "norm": "clade"}).norm == "clade"
