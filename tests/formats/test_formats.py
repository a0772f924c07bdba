"""The file-format owners: the chip store's manifest, index and identity; the checkpoint's
metadata and the generator and style encoder it rebuilds."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from test_train_chipstore import make_chip_store
from torch.nn.utils import parametrize

from geospade.errors import GeospadeError
from geospade.formats import chip_store
from geospade.formats.checkpoint import (
    Checkpoint,
    GeneratorForm,
    load_checkpoint,
    open_checkpoint,
    save_checkpoint,
)
from geospade.formats.chip_store import (
    is_chip_store,
    manifest_sha256,
    open_chip_store,
    read_counts,
    read_index,
)
from geospade.normalization import BandStats
from geospade.schemes import CHESAPEAKE7

SIZE = 64  # chip size of the checkpoints: the smallest a "normal" generator (stride 32) takes


# -- chip store ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_chip_store(tmp_path_factory.mktemp("chips") / "store", n_train=3, n_val=2,
                           size=16, bands=3)


def edit_manifest(root: Path, **changes) -> None:
    manifest = json.loads((root / chip_store.MANIFEST).read_text())
    for key, value in changes.items():
        if value is None:
            manifest.pop(key)
        else:
            manifest[key] = value
    (root / chip_store.MANIFEST).write_text(json.dumps(manifest))


def test_chip_store_fields_are_the_manifests_values(store):
    opened = open_chip_store(store)
    assert opened.root == store
    assert opened.chip_size == 16 and opened.stride == 16
    assert opened.counts == {"train": 3, "val": 2}
    assert opened.scheme.name == "chesapeake7" and opened.num_classes == 6
    assert [b.name for b in opened.bands] == ["red", "green", "blue"]
    assert opened.bands[0] == BandStats("red", "uint8", 0.0, 255.0)
    assert opened.manifest["geospade_version"] == "test"  # keys without a field stay readable


def test_stride_and_counts_may_be_missing_but_not_wrong(tmp_path, store):
    copy = tmp_path / "chips"
    shutil.copytree(store, copy)
    edit_manifest(copy, stride=None, counts=None)
    opened = open_chip_store(copy)
    assert opened.stride is None and opened.counts == {}
    edit_manifest(copy, stride=0)
    with pytest.raises(GeospadeError, match="invalid stride 0"):
        open_chip_store(copy)


def test_manifest_sha256_is_the_hash_of_the_manifest_bytes(tmp_path, store):
    digest = manifest_sha256(store)
    assert digest == hashlib.sha256((store / "manifest.json").read_bytes()).hexdigest()
    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    assert manifest_sha256(copy) == digest  # a copy is the same store
    edit_manifest(copy, created="2024-05-01T12:00:00+00:00")
    assert manifest_sha256(copy) != digest  # tiled again: another store
    (copy / "manifest.json").unlink()
    with pytest.raises(GeospadeError, match=r"not a complete chip store \(no manifest.json\)"):
        manifest_sha256(copy)


def test_chip_store_is_recognised_by_its_manifest_format(tmp_path, store):
    assert is_chip_store(store)
    (tmp_path / "empty").mkdir()
    assert not is_chip_store(tmp_path / "empty")
    assert not is_chip_store(store / "manifest.json")  # a file, not a folder
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "manifest.json").write_text(json.dumps({"format": "geospade-evaluation"}))
    assert not is_chip_store(foreign)
    (foreign / "manifest.json").write_text("{not json")
    assert not is_chip_store(foreign)


def test_read_counts_takes_what_the_manifest_says_or_none(tmp_path, store):
    assert read_counts(store) == {"train": 3, "val": 2}
    assert read_counts(tmp_path) is None
    (tmp_path / "manifest.json").write_text(json.dumps({"counts": {"val": 0}}))
    assert read_counts(tmp_path) == {"val": 0}  # nothing else is checked


def test_read_index_lists_chips_in_file_order(store):
    rows = read_index(store)
    assert [r["id"] for r in rows] == ["r000", "r001", "r002", "r003", "r004"]
    assert [r["split"] for r in rows] == ["train"] * 3 + ["val"] * 2
    assert rows[0]["image"] == "images/r000.tif" and rows[0]["mask"] == "masks/r000.tif"


def test_read_index_of_a_store_without_one(tmp_path):
    with pytest.raises(GeospadeError, match=r"not a complete chip store \(no index.gpkg\)"):
        read_index(tmp_path)


def test_splits_have_one_definition():
    from geospade.data import chips
    from geospade.raster import windows

    assert chip_store.SPLITS == ("train", "val", "test")
    assert chips.SPLITS is chip_store.SPLITS
    # windows re-exports it for tiling's import until tiling imports it from the chip store.
    assert getattr(windows, "SPLITS", chip_store.SPLITS) is chip_store.SPLITS


# -- checkpoint ---------------------------------------------------------------------------------


def tiny_models(seed: int, use_vae: bool = False, spectral_norm: bool = True):
    """A tiny generator for chesapeake7 (6 classes), 3 bands, 64-px chips, and a style encoder."""
    from geospade.models import Generator, StyleEncoder

    torch.manual_seed(seed)
    generator = Generator(6, 3, ngf=4, crop_size=SIZE, hidden=8, use_vae=use_vae, z_dim=8)
    encoder = StyleEncoder(3, ndf=4, z_dim=8, crop_size=SIZE, spectral_norm=spectral_norm)
    return generator, encoder


def tiny_payload(use_vae: bool = False, encoder_config: bool = True,
                 spectral_norm: bool = True) -> tuple[dict, dict]:
    """A checkpoint payload whose EMA weights differ from its trained ones, and those models."""
    generator, encoder = tiny_models(0, use_vae, spectral_norm)
    ema, encoder_ema = tiny_models(1, use_vae, spectral_norm)
    payload = {
        "step": 7, "config": {"ngf": 4}, "generator_config": generator.config,
        "scheme": CHESAPEAKE7.to_dict(),
        "bands": [BandStats(n, "uint8", 0, 255).to_dict() for n in ("red", "green", "blue")],
        "chip_size": SIZE, "generator": generator.state_dict(),
        "generator_ema": ema.state_dict(), "chips_manifest_sha256": "ab" * 32,
    }
    if use_vae:
        payload["encoder"] = encoder.state_dict()
        payload["encoder_ema"] = encoder_ema.state_dict()
        if encoder_config:
            payload["encoder_config"] = {"in_channels": 3, "ndf": 4, "z_dim": 8,
                                         "crop_size": SIZE, "spectral_norm": spectral_norm}
    return payload, {"generator": generator, "generator_ema": ema,
                     "encoder": encoder, "encoder_ema": encoder_ema}


def labels() -> torch.Tensor:
    return torch.randint(0, 6, (2, SIZE, SIZE), generator=torch.Generator().manual_seed(3))


def test_checkpoint_properties_are_the_payloads_values(tmp_path):
    payload, _ = tiny_payload(use_vae=True)
    path = save_checkpoint(tmp_path / "c.pt", payload)
    ckpt = open_checkpoint(path)
    assert ckpt.path == path
    assert ckpt.step == 7 and ckpt.config == {"ngf": 4}
    assert ckpt.scheme.name == "chesapeake7" and ckpt.scheme.num_classes == 6
    assert ckpt.bands == tuple(BandStats(n, "uint8", 0, 255) for n in ("red", "green", "blue"))
    assert ckpt.chip_size == SIZE
    assert ckpt.generator_config == payload["generator_config"]
    assert ckpt.chips_manifest_sha256 == "ab" * 32
    assert ckpt.has_encoder
    assert ckpt.payload["format"] == "geospade-checkpoint"


def test_older_checkpoint_properties_default(tmp_path):
    payload, _ = tiny_payload()
    for key in ("step", "config", "chips_manifest_sha256"):
        del payload[key]
    ckpt = open_checkpoint(save_checkpoint(tmp_path / "c.pt", payload))
    assert ckpt.step is None and ckpt.config == {} and ckpt.chips_manifest_sha256 is None
    assert not ckpt.has_encoder


def test_eager_generator_has_the_ema_weights(tmp_path):
    from geospade.models import Generator

    payload, models = tiny_payload()
    ckpt = open_checkpoint(save_checkpoint(tmp_path / "c.pt", payload))
    generator = ckpt.generator()
    assert isinstance(generator, Generator) and not generator.training
    ema = models["generator_ema"].eval()
    with torch.no_grad():
        torch.testing.assert_close(generator(labels()), ema(labels()), rtol=0, atol=0)
        assert not torch.equal(generator(labels()), models["generator"].eval()(labels()))


def test_generator_without_ema_weights_uses_the_trained_ones(tmp_path):
    payload, models = tiny_payload()
    del payload["generator_ema"]
    generator = open_checkpoint(save_checkpoint(tmp_path / "c.pt", payload)).generator()
    with torch.no_grad():
        torch.testing.assert_close(generator(labels()), models["generator"].eval()(labels()),
                                   rtol=0, atol=0)


def test_inference_generator_is_the_folded_eager_one(tmp_path):
    from geospade.models import Generator

    payload, _ = tiny_payload()
    ckpt = open_checkpoint(save_checkpoint(tmp_path / "c.pt", payload))
    eager = ckpt.generator(GeneratorForm.EAGER)
    folded = ckpt.generator("inference", fused=False)
    assert isinstance(folded, Generator) and not folded.training
    assert not any(parametrize.is_parametrized(m) for m in folded.modules())
    assert any(parametrize.is_parametrized(m) for m in eager.modules())  # spectral norm
    with torch.no_grad():
        torch.testing.assert_close(folded(labels()), eager(labels()), rtol=1e-5, atol=1e-5)


def test_eager_generator_takes_no_inference_layout():
    payload, _ = tiny_payload()
    ckpt = Checkpoint.from_payload(payload)
    with pytest.raises(ValueError, match="inference form"):
        ckpt.generator(GeneratorForm.EAGER, dtype=torch.bfloat16)


def test_generator_config_that_does_not_fit_the_scheme_is_refused(tmp_path):
    payload, _ = tiny_payload()
    payload["generator_config"] = {**payload["generator_config"], "num_classes": 5}
    ckpt = open_checkpoint(save_checkpoint(tmp_path / "c.pt", payload))
    with pytest.raises(GeospadeError, match="generator has 5 classes and 3 bands, the "
                                            "checkpoint's scheme and bands 6 and 3"):
        ckpt.generator()


@pytest.mark.parametrize("encoder_config", [True, False])
@pytest.mark.parametrize("spectral_norm", [True, False])
def test_style_encoder_has_the_ema_weights(tmp_path, encoder_config, spectral_norm):
    # Without encoder_config (older checkpoints) the config is read from the weights.
    payload, models = tiny_payload(use_vae=True, encoder_config=encoder_config,
                                   spectral_norm=spectral_norm)
    ckpt = open_checkpoint(save_checkpoint(tmp_path / "c.pt", payload))
    encoder = ckpt.style_encoder()
    assert not encoder.training
    image = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.no_grad():
        mu, _ = encoder(image)
        want, _ = models["encoder_ema"].eval()(image)
        other, _ = models["encoder"].eval()(image)
    torch.testing.assert_close(mu, want, rtol=0, atol=0)
    assert not torch.equal(mu, other)


def test_style_encoder_of_a_checkpoint_without_one(tmp_path):
    payload, _ = tiny_payload()
    path = save_checkpoint(tmp_path / "c.pt", payload)
    with pytest.raises(GeospadeError, match=f"{path} has no style encoder"):
        open_checkpoint(path).style_encoder()


def test_band_descriptions_that_do_not_hold_together_name_the_file(tmp_path):
    payload, _ = tiny_payload()
    payload["bands"] = [{"name": "red"}]
    path = save_checkpoint(tmp_path / "c.pt", payload)
    with pytest.raises(GeospadeError, match=f"^{path}: invalid band description"):
        open_checkpoint(path)
    payload["bands"] = []
    with pytest.raises(GeospadeError, match="^the checkpoint: checkpoint lists no bands"):
        Checkpoint.from_payload(payload)


def test_load_checkpoint_checks_the_kind_of_every_key(tmp_path):
    payload, _ = tiny_payload()
    path = save_checkpoint(tmp_path / "c.pt", {**payload, "chips_manifest_sha256": 5})
    with pytest.raises(GeospadeError,
                       match="'chips_manifest_sha256' is a int, not a str"):
        load_checkpoint(path)
