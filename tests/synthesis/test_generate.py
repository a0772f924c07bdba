"""`geospade generate`: a synthetic chip store over a real store's masks, read like a real one."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import torch
from cli_runner import run_cli
from torch.utils.data import ConcatDataset, DataLoader

from geospade.data.chips import ChipDataset
from geospade.errors import GeospadeError
from geospade.formats.checkpoint import save_checkpoint
from geospade.formats.chip_store import (
    check_real_chips,
    manifest_sha256,
    open_chip_store,
    read_index,
)
from geospade.models import Generator
from geospade.schemes import load_scheme
from geospade.synthesis import generate as generate_module
from geospade.synthesis.generate import (
    generate,
    is_synthetic,
    rare_classes,
    rare_variant_count,
)


def write_checkpoint(path: Path, chips: Path, noise_dim: int = 4, scheme=None,
                     bands=None) -> Path:
    """A small untrained generator for the store's scheme and bands (or the ones given)."""
    store = open_chip_store(chips)
    scheme = scheme or store.scheme
    bands = list(bands or store.bands)
    torch.manual_seed(0)
    g = Generator(scheme.num_classes, len(bands), ngf=4, crop_size=store.chip_size, hidden=8,
                  noise_dim=noise_dim)
    save_checkpoint(path, {
        "step": 7, "config": {}, "generator_config": g.config, "scheme": scheme.to_dict(),
        "bands": [b.to_dict() for b in bands], "chip_size": store.chip_size,
        "generator": g.state_dict(),
    })
    return path


@pytest.fixture
def real(chip_store, tmp_path) -> Path:
    """A copy of the shared 12-train, 4-val chip store."""
    chips = tmp_path / "real"
    shutil.copytree(chip_store, chips)
    return chips


@pytest.fixture
def checkpoint(real, tmp_path) -> Path:
    return write_checkpoint(tmp_path / "noise.pt", real)


def index_table(root: Path):
    return pyogrio.read_dataframe(root / "index.gpkg", layer="chips").set_index("id")


def one_line_error(err: str) -> str:
    assert err.startswith("geospade: error: ") and err.count("\n") == 1, err
    return err


def test_cli_writes_k_variants_over_byte_identical_masks(real, checkpoint, tmp_path, capsys):
    out = tmp_path / "synthetic"
    code, stdout, err = run_cli(["generate", str(checkpoint), str(real), "-o", str(out),
                                 "--variants", "3", "--seed", "5", "--device", "cpu"], capsys)
    assert code == 0, err
    assert f"wrote 36 synthetic chips to {out}" in stdout
    source = {r["id"]: r for r in read_index(real) if r["split"] == "train"}
    rows = read_index(out)
    assert sorted(r["id"] for r in rows) == sorted(f"{i}_v{k}" for i in source for k in range(3))
    for row in rows:
        src = source[row["id"].rsplit("_v", 1)[0]]
        assert row["split"] == "train"
        assert (out / row["mask"]).read_bytes() == (real / src["mask"]).read_bytes()
        # The mask's sidecar (class names for QGIS), where tile writes one, is copied too.
        aux, copied = real / f"{src['mask']}.aux.xml", out / f"{row['mask']}.aux.xml"
        assert copied.is_file() == aux.is_file()
        assert not aux.is_file() or copied.read_bytes() == aux.read_bytes()
        with rasterio.open(out / row["image"]) as syn, rasterio.open(real / src["image"]) as im:
            assert (syn.crs, syn.transform, syn.shape, syn.count) == (
                im.crs, im.transform, im.shape, im.count)
            assert syn.dtypes == im.dtypes and syn.descriptions == im.descriptions
            assert syn.nodata == im.nodata and syn.colorinterp == im.colorinterp
            tags = syn.tags()
            assert tags["GEOSPADE_SYNTHETIC"] == "YES" and tags["GEOSPADE_SEED"] == "5"
            assert tags["GEOSPADE_CHECKPOINT_SHA256"] == hashlib.sha256(
                checkpoint.read_bytes()).hexdigest()
    # The variants of one mask are different images.
    first = sorted(source)[0]
    images = [rasterio.open(out / "images" / f"{first}_v{k}.tif").read() for k in range(3)]
    assert not np.array_equal(images[0], images[1]) and not np.array_equal(images[1], images[2])

    # index.gpkg: each variant has its source chip's footprint, offsets and class fractions.
    real_index, syn_index = index_table(real), index_table(out)
    for cid, row in syn_index.iterrows():
        src = real_index.loc[cid.rsplit("_v", 1)[0]]
        assert row.geometry.equals_exact(src.geometry, 1e-6)
        for column in ("row_off", "col_off", "width", "height"):
            assert row[column] == src[column], column
        assert row["nodata_fraction"] == pytest.approx(src["nodata_fraction"])
        fracs = open_chip_store(real).fraction_columns
        assert np.allclose(row[fracs].to_numpy(float), src[fracs].to_numpy(float))
    assert list(syn_index.columns) == list(real_index.columns)


def test_manifest_marks_the_store_synthetic_and_names_its_sources(real, checkpoint, tmp_path):
    out = tmp_path / "synthetic"
    summary = generate(checkpoint, real, out, variants=2, seed=3, device="cpu", quiet=True)
    manifest = json.loads((out / "manifest.json").read_text())
    real_manifest = json.loads((real / "manifest.json").read_text())
    synthetic = manifest["synthetic"]
    assert synthetic["checkpoint_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert synthetic["checkpoint_step"] == 7
    assert synthetic["source_chips"] == manifest_sha256(real)
    assert (synthetic["variants"], synthetic["seed"], synthetic["split"]) == (2, 3, "train")
    assert manifest["counts"] == {"train": 24, "val": 0, "test": 0} == summary.counts
    # Pixels per class: twice the real train split's.
    assert manifest["class_pixels"]["train"] == [2 * n for n in
                                                 real_manifest["class_pixels"]["train"]]
    for key in ("format", "format_version", "scheme", "bands", "chip_size", "stride"):
        assert manifest[key] == real_manifest[key], key
    assert is_synthetic(out) and not is_synthetic(real)
    with pytest.raises(GeospadeError, match="is a synthetic chip store"):
        check_real_chips(open_chip_store(out), "evaluate")
    check_real_chips(open_chip_store(real), "evaluate")


def test_same_seed_same_bytes_another_seed_other_images(real, checkpoint, tmp_path):
    paths = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        generate(checkpoint, real, tmp_path / name, seed=seed, device="cpu", quiet=True)
        paths[name] = tmp_path / name / "images" / f"{read_index(real)[0]['id']}_v0.tif"
    a, b, c = (rasterio.open(p).read() for p in paths.values())
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_chip_dataset_reads_the_synthetic_store_and_mixes_with_the_real(real, checkpoint,
                                                                         tmp_path):
    out = tmp_path / "synthetic"
    generate(checkpoint, real, out, variants=2, device="cpu", quiet=True)
    synthetic, real_ds = ChipDataset(out, "train"), ChipDataset(real, "train")
    assert len(synthetic) == 2 * len(real_ds) == 24
    real_masks = {real_ds[i]["id"]: real_ds[i]["mask"] for i in range(len(real_ds))}
    for i in range(len(synthetic)):
        item = synthetic[i]
        assert torch.equal(item["mask"], real_masks[item["id"].rsplit("_v", 1)[0]])
        assert item["image"].shape == (4, 64, 64) and item["image"].abs().max() <= 1
    mixed = ConcatDataset([real_ds, synthetic])
    batch = next(iter(DataLoader(mixed, batch_size=36, shuffle=False)))
    assert batch["image"].shape == (36, 4, 64, 64) and batch["mask"].shape == (36, 64, 64)
    assert sum(i.endswith("_v1") for i in batch["id"]) == 12


def test_rare_classes_are_those_below_the_median_frequency_of_present_classes():
    # Present: 10, 100, 1000, 5 -> median 55; class 0 is absent, so rare too.
    assert rare_classes([0, 10, 100, 1000, 5]) == [0, 1, 4]
    assert rare_classes([7, 7, 7]) == []
    assert rare_classes([0, 0]) == []
    assert (rare_variant_count(2, 1.5), rare_variant_count(3, 1.1),
            rare_variant_count(10, 1.1), rare_variant_count(4, 1.0)) == (3, 4, 11, 4)


def test_oversample_rare_gives_chips_with_a_rare_class_more_variants(real, checkpoint, tmp_path,
                                                                      capsys):
    out = tmp_path / "synthetic"
    code, stdout, err = run_cli(["generate", str(checkpoint), str(real), "-o", str(out),
                                 "--variants", "2", "--oversample-rare", "1.5", "-q"], capsys)
    assert code == 0 and stdout == "", err
    manifest = json.loads((real / "manifest.json").read_text())
    train_pixels = np.array(manifest["class_pixels"]["train"])
    rare = [i for i in range(len(train_pixels))
            if train_pixels[i] < np.median(train_pixels[train_pixels > 0])]
    assert rare  # the landscape has rare classes (water, roads …)
    written: dict[str, int] = {}
    for row in read_index(out):
        source = row["id"].rsplit("_v", 1)[0]
        written[source] = written.get(source, 0) + 1
    expected = {}
    for row in read_index(real):
        if row["split"] == "train":
            with rasterio.open(real / row["mask"]) as src:
                holds_rare = np.isin(src.read(1), rare).any()
            expected[row["id"]] = math.ceil(1.5 * 2) if holds_rare else 2
    assert written == expected and set(expected.values()) == {2, 3}
    synthetic = json.loads((out / "manifest.json").read_text())["synthetic"]
    assert synthetic["rare_classes"] == rare and synthetic["rare_variants"] == 3


def test_split_all_keeps_each_chip_in_its_split(real, checkpoint, tmp_path):
    summary = generate(checkpoint, real, tmp_path / "s", split="all", device="cpu", quiet=True)
    assert summary.counts == {"train": 12, "val": 4, "test": 0}
    splits = {r["id"]: r["split"] for r in read_index(real)}
    assert all(splits[r["id"][:-3]] == r["split"] for r in read_index(tmp_path / "s"))


def test_a_failure_leaves_no_store_and_no_temporary(real, checkpoint, tmp_path, monkeypatch):
    calls = []

    def fail_on_second(self, masks, ids, variant):
        calls.append(variant)
        if len(calls) == 2:
            raise RuntimeError("painter broke")
        return original(self, masks, ids, variant)

    original = generate_module._Painter.paint
    monkeypatch.setattr(generate_module._Painter, "paint", fail_on_second)
    # A folder of the user's stays (empty); a folder made for the output goes.
    (tmp_path / "mine").mkdir()
    for out in (tmp_path / "mine" / "syn", tmp_path / "new" / "syn"):
        calls.clear()
        with pytest.raises(RuntimeError, match="painter broke"):
            generate(checkpoint, real, out, batch_size=4, device="cpu", quiet=True)
    assert list((tmp_path / "mine").iterdir()) == [] and not (tmp_path / "new").exists()


# -- refusals -----------------------------------------------------------------------------------


def test_a_synthetic_store_is_refused_where_real_chips_are_needed(real, checkpoint, tmp_path,
                                                                  capsys):
    generate(checkpoint, real, tmp_path / "syn", device="cpu", quiet=True)
    code, _, err = run_cli(["generate", str(checkpoint), str(tmp_path / "syn"), "-o",
                            str(tmp_path / "again")], capsys)
    assert code == 1 and ("is a synthetic chip store (from geospade generate); geospade "
                          "generate needs the real chips it was made from") in one_line_error(err)
    assert str(real.resolve()) in err and not (tmp_path / "again").exists()


def test_a_checkpoint_of_another_scheme_or_bands_is_refused(real, tmp_path, capsys):
    store = open_chip_store(real)
    other_scheme = write_checkpoint(tmp_path / "s.pt", real, scheme=load_scheme("nlcd"))
    other_bands = write_checkpoint(tmp_path / "b.pt", real, bands=store.bands[:3])
    for ckpt, message in ((other_scheme, "was trained on scheme 'nlcd'"),
                          (other_bands, "makes bands ['red', 'green', 'blue']")):
        code, _, err = run_cli(["generate", str(ckpt), str(real), "-o", str(tmp_path / "o")],
                               capsys)
        assert code == 1 and message in one_line_error(err)
        assert not (tmp_path / "o").exists()


def test_variants_of_a_generator_without_noise_are_refused(real, tmp_path, capsys):
    plain = write_checkpoint(tmp_path / "plain.pt", real, noise_dim=0)
    code, _, err = run_cli(["generate", str(plain), str(real), "-o", str(tmp_path / "o"),
                            "--variants", "2"], capsys)
    assert code == 1 and "would be the same image" in one_line_error(err)
    assert not (tmp_path / "o").exists()
    # One variant is fine: every seed gives the same image.
    code, _, err = run_cli(["generate", str(plain), str(real), "-o", str(tmp_path / "o"),
                            "-q"], capsys)
    assert code == 0, err


def test_outputs_that_are_inputs_or_not_a_chip_store_are_refused(real, checkpoint, tmp_path,
                                                                 capsys):
    before = sorted(p.name for p in real.rglob("*"))
    cases = [
        (real / "synthetic", ["--overwrite"], "lies inside the real chip store"),
        (real, ["--overwrite"], "is the real chip store"),
        (real.parent, ["--overwrite"], "holds the checkpoint"),
    ]
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    cases.append((notes, ["--overwrite"], "is not a geospade chip store; refusing to replace"))
    cases.append((notes, [], "already exists (use --overwrite"))
    for out, flags, message in cases:
        code, _, err = run_cli(["generate", str(checkpoint), str(real), "-o", str(out),
                                *flags], capsys)
        assert code == 1 and message in one_line_error(err), (out, err)
    assert sorted(p.name for p in real.rglob("*")) == before
    assert (notes / "todo.txt").read_text() == "keep me"


def test_overwrite_replaces_an_earlier_synthetic_store(real, checkpoint, tmp_path):
    out = tmp_path / "syn"
    generate(checkpoint, real, out, variants=2, device="cpu", quiet=True)
    with pytest.raises(GeospadeError, match="already exists"):
        generate(checkpoint, real, out, device="cpu", quiet=True)
    generate(checkpoint, real, out, device="cpu", quiet=True, overwrite=True)
    assert open_chip_store(out).counts["train"] == 12 and len(read_index(out)) == 12
    assert not [p.name for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_an_empty_split_and_bad_options_are_one_line_errors(real, checkpoint, tmp_path, capsys):
    for args, message in ((["--split", "test"], "has no 'test' chips"),
                          (["--variants", "0"], "0 is not in the range x>=1"),
                          (["--oversample-rare", "0.5"], "0.5 is not in the range x>=1")):
        code, _, err = run_cli(["generate", str(checkpoint), str(real), "-o",
                                str(tmp_path / "o"), *args], capsys)
        assert code != 0 and message in one_line_error(err), err
        assert not (tmp_path / "o").exists()
    with pytest.raises(GeospadeError, match="oversample_rare"):
        generate(checkpoint, real, tmp_path / "o", oversample_rare=float("nan"))


def test_a_store_of_pairs_without_crs_gets_its_synthetic_store(tmp_path, capsys):
    """Chips of a folder of PNG pairs (no CRS, one grid per pair) are generated like georeferenced
    ones: same masks, same ids and offsets in the index."""
    from raster.test_tile_nocrs import write_png_pair

    masks, images = tmp_path / "masks", tmp_path / "images"
    masks.mkdir()
    images.mkdir()
    for seed, stem in enumerate(["a", "b"]):
        write_png_pair(masks / f"{stem}.png", images / f"{stem}.png", seed)
    chips, out = tmp_path / "chips", tmp_path / "synthetic"
    code, _, err = run_cli(["tile", str(masks), str(images), "-o", str(chips), "--size", "32",
                            "--scheme", "chesapeake7", "-q"], capsys)
    assert code == 0, err
    ckpt = write_checkpoint(tmp_path / "noise.pt", chips)
    code, _, err = run_cli(["generate", str(ckpt), str(chips), "-o", str(out), "--variants",
                            "2", "-q"], capsys)
    assert code == 0, err
    real, synthetic = index_table(chips), index_table(out)
    assert len(synthetic) == 2 * len(real[real.split == "train"])
    first = real[real.split == "train"].iloc[0]
    same = synthetic.loc[[f"{first.name}_v0", f"{first.name}_v1"]]
    assert (same[["col_off", "row_off"]].to_numpy() == [first.col_off, first.row_off]).all()
    for variant in same.itertuples():
        assert (out / variant.mask).read_bytes() == (chips / first["mask"]).read_bytes()
    with rasterio.open(out / same.iloc[0]["image"]) as src:
        assert src.crs is None and src.count == len(open_chip_store(chips).bands)
