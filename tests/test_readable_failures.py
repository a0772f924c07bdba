"""Failures a person can read (issue 16): a full disk, a damaged file, a checkpoint or manifest
that does not hold together, a path that is no file. Each ends in one `geospade: error:` line,
no traceback, no libtiff/GDAL lines, no Python warnings, and nothing partial on disk."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import run_cli
from test_synthesize import make_checkpoint, write_landcover
from test_train_chipstore import make_chip_store

from geospade.cli import main

TINY = ["--batch-size", "4", "--ngf", "8", "--ndf", "8", "--num-d", "1", "--n-layers-d", "2",
        "--spade-hidden", "16", "--no-vgg", "--device", "cpu", "--quiet"]

# Writes past the limit fail with EFBIG ("File too large"), as a full disk fails with ENOSPC.
LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from geospade.cli import main
main(sys.argv[2:])
"""


def run_limited(limit: int, args: list[str]) -> tuple[int, str, str]:
    """Run ``geospade ARGS`` in a process that may write no file larger than ``limit`` bytes."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("GEOSPADE_DEBUG", None)
    proc = subprocess.run([sys.executable, "-c", LIMITED, str(limit), *map(str, args)],
                          capture_output=True, text=True, timeout=300, env=env)
    return proc.returncode, proc.stdout, proc.stderr


def assert_one_line(code: int, err: str, *needles: str) -> str:
    assert code != 0, err
    assert err.startswith("geospade: error: ") and err.count("\n") == 1, err
    assert "GEOSPADE_DEBUG" not in err and "Traceback" not in err, err
    assert len(err) < 400, err
    for needle in needles:
        assert needle in err, err
    return err


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture()
def landcover(tmp_path) -> Path:
    """A 48 x 40 px chesapeake7 land cover (classes 1..6)."""
    (tmp_path / "inputs").mkdir()
    labels = np.tile(np.arange(1, 7, dtype=np.uint8), (40, 8))
    return write_landcover(tmp_path / "inputs" / "lc.tif", labels)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_chip_store(tmp_path_factory.mktemp("store") / "chips", n_train=4, n_val=2,
                           size=32)


@pytest.fixture(scope="module")
def trained(store, tmp_path_factory) -> Path:
    """The run folder of a 2-step training run through the CLI."""
    run = tmp_path_factory.mktemp("trained") / "run"
    main(["train", str(store), "-o", str(run), "--steps", "2", *TINY])
    return run


def truncate(path: Path, fraction: float = 0.6) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


# -- 7: a full disk -----------------------------------------------------------------------------


@pytest.mark.parametrize("cog,limit", [(False, 1000), (True, 20000)])
def test_synthesize_on_a_full_disk(tmp_path, ckpt, landcover, cog, limit):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "x.tif"
    code, _, err = run_limited(limit, ["synthesize", ckpt, landcover, "-o", out, "-q",
                                       *(["--cog"] if cog else [])])
    assert_one_line(code, err, "file too large while writing", str(out))
    assert leftovers(out_dir) == []


def test_train_checkpoint_on_a_full_disk(tmp_path, store):
    run = tmp_path / "run"
    code, _, err = run_limited(200_000, ["train", store, "-o", run, "--steps", "2", *TINY])
    assert_one_line(code, err, "file too large while writing", "checkpoint.pt")
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("compress,limit,what", [
    ("none", 2000, "images"),      # chips written by geospade itself
    ("deflate", 2000, "images"),   # chips written by GDAL
    ("none", 40_000, "index.gpkg"),  # the chips fit, the index does not
])
def test_tile_on_a_full_disk(tmp_path, landscape_pair, compress, limit, what):
    landcover, imagery = landscape_pair
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, _, err = run_limited(limit, ["tile", landcover, imagery, "-o", out_dir / "chips",
                                       "--size", "64", "-q", "--compress", compress])
    assert_one_line(code, err, "file too large while writing", str(out_dir / "chips"), what)
    assert leftovers(out_dir) == []


# -- 8: a damaged (truncated) raster ------------------------------------------------------------


def test_tile_with_a_truncated_land_cover_or_imagery(tmp_path, landscape_pair, capfd):
    for i, role in enumerate(("land cover", "imagery")):
        pair = [tmp_path / f"lc{i}.tif", tmp_path / f"im{i}.tif"]
        for src, dst in zip(landscape_pair, pair, strict=True):
            shutil.copy(src, dst)
        damaged = truncate(pair[i])
        code, _, err = run_cli(["tile", *map(str, pair), "-o", str(tmp_path / "chips"),
                                "--size", "64", "-q"], capfd)
        assert_one_line(code, err, role, str(damaged), "damaged (truncated or corrupt)")
        assert not (tmp_path / "chips").exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_synthesize_with_a_truncated_land_cover(tmp_path, ckpt, capfd):
    labels = np.tile(np.arange(1, 7, dtype=np.uint8), (200, 40))
    damaged = truncate(write_landcover(tmp_path / "lc.tif", labels))
    out = tmp_path / "out.tif"
    code, _, err = run_cli(["synthesize", str(ckpt), str(damaged), "-o", str(out), "-q"], capfd)
    assert_one_line(code, err, str(damaged), "damaged (truncated or corrupt)")
    assert leftovers(tmp_path) == ["lc.tif"]


def test_stitch_with_a_truncated_tile(tmp_path, ckpt, capfd):
    labels = np.tile(np.arange(1, 7, dtype=np.uint8), (300, 16))
    tiles = tmp_path / "tiles"
    code, _, err = run_cli(["synthesize", str(ckpt), str(write_landcover(
        tmp_path / "lc.tif", labels)), "--tiles-only", str(tiles), "-q"], capfd)
    assert code == 0, err
    paths = sorted(tiles.glob("*.tif"))
    damaged = truncate(paths[1], 0.5)
    out = tmp_path / "out" / "joined.tif"
    code, _, err = run_cli(["stitch", *map(str, paths), "-o", str(out)], capfd)
    assert_one_line(code, err, f"tile {damaged}", "damaged (truncated or corrupt)")
    assert not out.parent.exists()


@pytest.mark.parametrize("kind", ["images", "masks"])
def test_train_and_evaluate_with_a_truncated_chip(tmp_path, store, trained, capfd, kind):
    copy = tmp_path / "chips"
    shutil.copytree(store, copy)
    for split_chip in ("r000", "r005"):  # one train chip, one val chip
        truncate(copy / kind / f"{split_chip}.tif")
    code, _, err = run_cli(["train", str(copy), "-o", str(tmp_path / "run"), "--steps", "1",
                            *TINY], capfd)
    assert_one_line(code, err, f"{kind}/r00", "damaged (truncated or corrupt)")
    assert not (tmp_path / "run").exists()
    code, _, err = run_cli(["evaluate", str(trained / "checkpoint.pt"), str(copy), "-o",
                            str(tmp_path / "r.json"), "--no-segmenter", "--no-utility",
                            "--no-figure", "-q",
                            "--device", "cpu"], capfd)
    assert_one_line(code, err, f"{kind}/r00", "damaged (truncated or corrupt)")
    assert not (tmp_path / "r.json").exists()


# -- 9: a checkpoint or manifest that does not hold together ------------------------------------


def reshaped_checkpoint(src: Path, dst: Path) -> Path:
    """A copy of checkpoint ``src`` with one generator tensor of another shape."""
    data = torch.load(src, weights_only=True)
    for key in ("generator", "generator_ema"):
        state = data[key]
        name = next(k for k, v in state.items() if v.ndim == 4)
        state[name] = torch.zeros(state[name].shape[0] + 1, *state[name].shape[1:])
    torch.save(data, dst)
    return dst


def test_checkpoint_with_wrong_shape_weights(tmp_path, store, trained, capfd):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    ckpt = reshaped_checkpoint(trained / "checkpoint.pt", run / "checkpoint.pt")
    commands = {
        "evaluate": ["evaluate", str(ckpt), str(store), "-o", str(tmp_path / "r.json"),
                     "--no-segmenter", "--no-utility", "--no-figure", "-q", "--device", "cpu"],
        "resume": ["train", str(store), "-o", str(run), "--resume", "--steps", "3", "--quiet"],
        "synthesize": ["synthesize", str(ckpt), str(write_landcover(
            tmp_path / "lc.tif", np.tile(np.arange(1, 7, dtype=np.uint8), (40, 8)))),
            "-o", str(tmp_path / "out.tif"), "-q"],
    }
    for args in commands.values():
        code, _, err = run_cli(args, capfd)
        assert_one_line(code, err, f"checkpoint {ckpt} does not match its own generator config")
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "out.tif").exists()
    assert torch.load(ckpt, weights_only=True)["step"] == 2  # the run is left as it was
    assert (run / "config.toml").read_bytes() == (trained / "config.toml").read_bytes()


@pytest.mark.parametrize("key,value", [
    ("scheme", "chesapeake7"), ("bands", "red"), ("chip_size", "32"), ("step", "two"),
    ("config", "x"), ("generator_config", ["ngf", 8]),
])
def test_checkpoint_with_hand_edited_metadata(tmp_path, store, trained, capfd, key, value):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    data = torch.load(run / "checkpoint.pt", weights_only=True)
    data[key] = value
    torch.save(data, run / "checkpoint.pt")
    ckpt = run / "checkpoint.pt"
    for args in (["info", str(ckpt)],
                 ["evaluate", str(ckpt), str(store), "-o", str(tmp_path / "r.json"),
                  "--no-segmenter", "--no-utility", "--no-figure", "-q", "--device", "cpu"],
                 ["train", str(store), "-o", str(run), "--resume", "--steps", "3", "-q"]):
        code, _, err = run_cli(args, capfd)
        assert_one_line(code, err, str(ckpt), repr(key))


@pytest.mark.parametrize("edit,needle", [
    (lambda m: m.__setitem__("bands", "red"), "bands"),
    (lambda m: m.__setitem__("bands", ["red"]), "bands"),
    (lambda m: m.__setitem__("counts", "12"), "counts"),
    (lambda m: m.__setitem__("counts", {"train": "many"}), "counts"),
    (lambda m: m["scheme"].pop("classes"), "classes"),
    (lambda m: m["scheme"]["classes"][0].pop("name"), "name"),
    (lambda m: m.__setitem__("scheme", "chesapeake7"), "scheme"),
])
def test_info_on_a_hand_edited_manifest(tmp_path, store, capfd, edit, needle):
    copy = tmp_path / "chips"
    shutil.copytree(store, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    edit(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = run_cli(["info", str(copy)], capfd)
    assert_one_line(code, err, "manifest.json", needle)


# -- small: info on what is no file -------------------------------------------------------------


def test_info_refuses_a_fifo_or_a_device(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        proc = subprocess.run([sys.executable, "-c", LIMITED, str(1 << 40), "info", str(path)],
                              capture_output=True, text=True, timeout=120)
        assert_one_line(proc.returncode, proc.stderr, str(path),
                        "not a regular file or folder")


def test_tile_refuses_a_fifo_as_land_cover(tmp_path, store):
    """A named pipe blocked `tile` for good; it is refused at once."""
    fifo = tmp_path / "lc.fifo"
    os.mkfifo(fifo)
    proc = subprocess.run([sys.executable, "-m", "geospade", "tile", str(fifo), str(fifo),
                           "-o", str(tmp_path / "chips")], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.startswith("geospade: error: ") and proc.stderr.count("\n") == 1
    assert "not a regular file" in proc.stderr
