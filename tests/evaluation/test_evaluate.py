"""`geospade evaluate`: report values against constructed painters, schema, CLI and bad inputs."""

import json
import shutil

import numpy as np
import pytest
import torch

from geospade.cli import main
from geospade.data.chips import ChipDataset, open_chip_store
from geospade.errors import GeospadeError
from geospade.evaluation.report import (
    REPORT_VERSION,
    derangement,
    evaluate,
    evaluate_painter,
    format_summary,
)
from geospade.evaluation.segmenter import SegmenterSettings, cache_path
from geospade.formats.checkpoint import save_checkpoint
from geospade.models import Generator
from geospade.normalization import denormalize, normalize
from geospade.schemes import load_scheme
from geospade.synthesis import model as synthesis_model

SEG = SegmenterSettings(steps=40, batch_size=4, base_channels=8)


@pytest.fixture(scope="module")
def chips(chip_store, tmp_path_factory):
    """A private copy of the shared store (the segmenter cache is written into it)."""
    out = tmp_path_factory.mktemp("eval") / "chips"
    shutil.copytree(chip_store, out)
    return out


def write_checkpoint(path, chips, scheme=None, bands=None, seed=0, noise_dim=0):
    store = open_chip_store(chips)
    scheme = scheme or store.scheme
    bands = bands or [b.to_dict() for b in store.bands]
    torch.manual_seed(seed)
    g = Generator(scheme.num_classes, len(bands), ngf=4, crop_size=store.chip_size, hidden=8,
                  noise_dim=noise_dim)
    save_checkpoint(path, {
        "step": 3, "config": {}, "generator_config": g.config, "scheme": scheme.to_dict(),
        "bands": bands, "chip_size": store.chip_size, "generator": g.state_dict(),
    })
    return path


@pytest.fixture(scope="module")
def checkpoint(chips, tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "checkpoint.pt", chips)


@pytest.fixture(scope="module")
def identity_report(chips):
    val = ChipDataset(chips, "val")

    def real(masks, indices):
        return np.stack([val[i]["image"].numpy() for i in indices])

    return evaluate_painter(real, chips, "val", segmenter=SEG, device="cpu", quiet=True)


def test_real_images_as_output_score_perfectly(identity_report):
    model = identity_report["methods"]["model"]
    assert model["wasserstein"]["mean"] == 0.0
    assert model["wasserstein"]["mean_source"] == 0.0
    assert model["texture"]["mean_ratio"] == pytest.approx(1.0)
    assert model["segmentation"]["ratio"] == pytest.approx(1.0)


def test_class_mean_painting_has_near_zero_texture(identity_report):
    base = identity_report["methods"]["class_mean"]
    assert base["texture"]["mean_ratio"] < 0.02
    present = [t for t in base["texture"]["per_class_ratio"] if t is not None]
    assert present and max(present) < 0.05
    assert base["wasserstein"]["mean"] > 0.0


def test_shuffled_real_chips_score_worse_than_identical(identity_report):
    model = identity_report["methods"]["model"]
    shuffled = identity_report["methods"]["shuffled_real"]
    assert shuffled["wasserstein"]["mean"] > model["wasserstein"]["mean"] + 0.01
    assert shuffled["segmentation"]["ratio"] < model["segmentation"]["ratio"]


def test_derangement_moves_every_chip_and_is_fixed_by_the_seed():
    perm = derangement(7, seed=3)
    assert sorted(perm.tolist()) == list(range(7))
    assert all(perm[i] != i for i in range(7))
    assert perm.tolist() == derangement(7, seed=3).tolist()
    assert derangement(1) is None


def test_report_schema_files_and_segmenter_cache(chips, checkpoint, tmp_path):
    out = tmp_path / "report.json"
    # TSTR (utility) has its own tests (test_evaluate_utility.py); these measure the rest.
    report = evaluate(checkpoint, chips, "val", out, segmenter=SEG, utility=None, device="cpu",
                      quiet=True)
    data = json.loads(out.read_text())
    assert data["format"] == "geospade-evaluation"
    assert data["format_version"] == REPORT_VERSION
    assert data["split"] == "val" and data["num_chips"] == 4 and data["step"] == 3
    k, c = len(data["classes"]), len(data["bands"])
    assert data["bands"] == ["red", "green", "blue", "nir"]
    assert set(data["methods"]) == {"model", "class_mean", "shuffled_real"}
    for m in data["methods"].values():
        assert np.array(m["wasserstein"]["per_class"], dtype=float).shape == (k, c)
        assert len(m["texture"]["per_class_ratio"]) == k
        assert 0.0 <= m["segmentation"]["miou"] <= 1.0
    assert data["fid"]["available"] is False and "FID skipped" in data["fid"]["note"]
    val_masks = np.stack([item["mask"].numpy() for item in ChipDataset(chips, "val")])
    assert data["class_pixels"] == [int((val_masks == i).sum()) for i in range(k)]
    png = out.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cache_path(chips, SEG).is_file()
    assert "_samples" not in data and report["figure"] == str(png)
    text = format_summary(report)
    assert "texture ratio" in text and "class-mean" in text
    # Output exists: refused without overwrite, before any work.
    with pytest.raises(GeospadeError, match="exists"):
        evaluate(checkpoint, chips, "val", out, segmenter=None, device="cpu", quiet=True)


def test_evaluate_paints_with_the_model_synthesize_loads(chips, checkpoint, monkeypatch):
    # evaluate must measure the generator synthesize writes with: loaded by
    # load_synthesis_model, in the same precision and layout (amp "auto": bf16 where the device
    # has it), not an fp32 copy of its own.
    loaded = []
    real_loader = synthesis_model.load_synthesis_model

    def spy(*args, **kwargs):
        model = real_loader(*args, **kwargs)
        loaded.append((args, kwargs, model))
        return model

    monkeypatch.setattr(synthesis_model, "load_synthesis_model", spy)
    report = evaluate(checkpoint, chips, "val", segmenter=None, utility=None, device="cpu",
                      quiet=True)
    assert len(loaded) == 1
    args, kwargs, model = loaded[0]
    assert str(args[0]) == str(checkpoint) and kwargs.get("amp", "auto") == "auto"
    assert model.amp == synthesis_model.resolve_amp("auto", torch.device("cpu"))
    samples = report["_samples"]
    masks = np.stack(samples["mask"])
    store_bands = open_chip_store(chips).bands
    expected = [normalize(denormalize(out, model.bands), store_bands) for out in model(masks)]
    np.testing.assert_array_equal(np.stack(samples["model"]), np.stack(expected))


def test_cli_writes_report_and_prints_summary(chips, checkpoint, tmp_path, capsys):
    out = tmp_path / "r.json"
    main(["evaluate", str(checkpoint), str(chips), "-o", str(out), "--no-segmenter", "--quiet",
          "--no-utility", "--device", "cpu", "--no-figure"])
    printed = capsys.readouterr().out
    assert f"report: {out}" in printed
    data = json.loads(out.read_text())
    assert data["segmenter"] is None
    assert "segmentation" not in data["methods"]["model"]
    assert not out.with_suffix(".png").exists()


def _cli_error(args, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(args)
    err = capsys.readouterr().err
    assert exc.value.code != 0
    assert err.startswith("geospade: error: ") and err.count("\n") == 1, err
    return err


def test_cli_rejects_scheme_mismatch(chips, tmp_path, capsys):
    ckpt = write_checkpoint(tmp_path / "nlcd.pt", chips, scheme=load_scheme("nlcd"))
    out = tmp_path / "r.json"
    err = _cli_error(["evaluate", str(ckpt), str(chips), "-o", str(out)], capsys)
    assert "scheme" in err and "nlcd" in err
    assert not out.exists() and not list(tmp_path.glob("*.png"))


def test_cli_rejects_band_mismatch(chips, tmp_path, capsys):
    bands = [b.to_dict() for b in open_chip_store(chips).bands][:3]
    ckpt = write_checkpoint(tmp_path / "rgb.pt", chips, bands=bands)
    out = tmp_path / "r.json"
    err = _cli_error(["evaluate", str(ckpt), str(chips), "-o", str(out)], capsys)
    assert "bands" in err and "nir" in err
    assert not out.exists()


def test_cli_rejects_empty_split(chips, checkpoint, tmp_path, capsys):
    out = tmp_path / "r.json"
    err = _cli_error(["evaluate", str(checkpoint), str(chips), "--split", "test", "-o", str(out),
                      "--no-segmenter"], capsys)
    assert "no 'test' chips" in err
    assert not out.exists()


def test_cli_rejects_missing_files(chips, checkpoint, tmp_path, capsys):
    err = _cli_error(["evaluate", str(tmp_path / "none.pt"), str(chips)], capsys)
    assert "none.pt" in err
    incomplete = tmp_path / "incomplete"
    shutil.copytree(chips, incomplete)
    (incomplete / "manifest.json").unlink()
    err = _cli_error(["evaluate", str(checkpoint), str(incomplete), "-o",
                      str(tmp_path / "r.json")], capsys)
    assert "manifest.json" in err
    not_ckpt = tmp_path / "bad.pt"
    not_ckpt.write_bytes(b"not a checkpoint")
    err = _cli_error(["evaluate", str(not_ckpt), str(chips), "-o", str(tmp_path / "r.json")],
                     capsys)
    assert "not a readable checkpoint" in err
    assert not (tmp_path / "r.json").exists()


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory):
    """Random Inception v3 weights in torchvision's layout (no ImageNet weights here).

    Batch-norm statistics are taken from one batch of random images, so features stay finite
    and of unit scale in eval mode instead of vanishing with the default (0, 1) statistics.
    """
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    net = inception_v3(weights=None, aux_logits=True, init_weights=False)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 1.0
    with torch.no_grad():
        net.train()(torch.rand(4, 3, 299, 299) * 2 - 1)
    path = tmp_path_factory.mktemp("inception") / "inception_random.pth"
    torch.save(net.state_dict(), path)
    return path


def test_fid_with_local_inception_weights(chips, checkpoint, inception_weights, tmp_path):
    out = tmp_path / "report.json"
    report = evaluate(checkpoint, chips, "val", out, segmenter=None, utility=None,
                      inception_weights=inception_weights, device="cpu", quiet=True)
    data = json.loads(out.read_text())
    assert data["fid"]["available"] is True
    assert str(inception_weights) in data["fid"]["note"]
    assert data["fid"]["note"].startswith("FID on bands ['red', 'green', 'blue']")
    fid = {name: m["fid"] for name, m in data["methods"].items()}
    # The shuffled-real baseline is the same images in another order: the same feature set.
    assert fid["shuffled_real"] == pytest.approx(0.0, abs=1e-6 * fid["model"])
    # An untrained generator and flat class means are far from real imagery.
    assert fid["model"] > 1.0 and fid["class_mean"] > 1.0
    assert np.isfinite([fid["model"], fid["class_mean"]]).all()
    assert "FID" in format_summary(report)
