"""`synthesize --tiles-only` (one GeoTIFF per strip, rank-sharded) + `stitch` = one synthesize."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from test_synthesize import make_checkpoint, run_cli

from geospade.landscape import make_landscape
from geospade.raster.stitch import stitch
from geospade.synthesis import synthesize


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiles")
    ckpt = make_checkpoint(root / "ck.pt", gain=1.0)
    lc = make_landscape(root / "lc.tif", root / "im.tif", 100, 150, feature_scale=0.3,
                        nodata_fraction=0.2, seed=2).landcover
    direct = root / "direct.tif"
    synthesize(ckpt, lc, direct, quiet=True)
    return root, ckpt, lc, direct


def test_tiles_from_two_ranks_stitch_into_the_direct_result(setup, capsys):
    root, ckpt, lc, direct = setup
    tiles = root / "shards"
    for rank in (0, 1):
        code, out, _ = run_cli(["synthesize", str(ckpt), str(lc), "--tiles-only", str(tiles),
                                "--rank", str(rank), "--world-size", "2"], capsys)
        assert code == 0 and "tile(s)" in out
    names = sorted(p.name for p in tiles.iterdir())
    # Both ranks' tiles, and the marker naming the run they belong to (no lock left behind).
    assert names == [".geospade-tiles.json", "lc_r0000000.tif", "lc_r0000048.tif",
                     "lc_r0000086.tif"]
    with rasterio.open(tiles / "lc_r0000048.tif") as src:
        assert (src.width, src.height) == (100, 64)
    summary = stitch(sorted(tiles.glob("*.tif")), root / "stitched.tif", quiet=True)
    assert summary["tiles"] == 3
    with rasterio.open(direct) as a, rasterio.open(root / "stitched.tif") as b:
        assert (a.crs, a.transform, a.shape) == (b.crs, b.transform, b.shape)
        x, y = a.read().astype(int), b.read().astype(int)
        assert a.nodata == b.nodata == 0
    assert ((x == 0) == (y == 0)).all()
    # Same weights; only the strips' rounding to uint8 before the vertical blend differs.
    assert np.abs(x - y).max() <= 1


def test_rank_env_variables_select_the_share(setup, monkeypatch):
    root, ckpt, lc, _ = setup
    summary = synthesize(ckpt, lc, None, tiles_only=root / "r1", rank=1, world_size=3,
                         quiet=True)
    assert [p.rsplit("/", 1)[-1] for p in summary["tiles"]] == ["lc_r0000048.tif"]


def test_checkpoint_from_geospade_train(tmp_path, chip_store, landscape_pair):
    """The real thing end to end: a 1-step (VAE) training run's checkpoint synthesizes the
    land cover it was tiled from, on its grid, with its bands; --style uses its encoder."""
    from geospade.training.loop import train

    landcover, imagery = landscape_pair
    result = train(chip_store, tmp_path / "run", steps=1, quiet=True, batch_size=2, ngf=4,
                   ndf=4, num_d=1, n_layers_d=2, spade_hidden=8, use_vae=True, z_dim=8,
                   vgg_weights="off", preview_every=0, val_every=0, device="cpu")
    summary = synthesize(result.checkpoint, landcover, tmp_path / "out.tif", style=imagery,
                         window="0,0,100,90", quiet=True)
    assert summary["windows"] == 4
    with rasterio.open(tmp_path / "out.tif") as out, rasterio.open(imagery) as im:
        assert out.descriptions == im.descriptions and out.dtypes == im.dtypes
        assert out.crs == im.crs and out.transform == im.transform
        assert (out.width, out.height) == (100, 90)


def test_existing_tiles_need_overwrite(setup, capsys):
    root, ckpt, lc, _ = setup
    tiles = root / "again"
    args = ["synthesize", str(ckpt), str(lc), "--tiles-only", str(tiles), "-q"]
    assert run_cli(args, capsys)[0] == 0
    before = {p.name: p.stat().st_mtime_ns for p in tiles.iterdir()}
    code, _, err = run_cli(args, capsys)
    assert code == 1 and "already exist" in err and err.count("\n") == 1
    assert {p.name: p.stat().st_mtime_ns for p in tiles.iterdir()} == before
    assert run_cli(args + ["--overwrite"], capsys)[0] == 0
