"""The split block size: chosen automatically unless --block fixes it, reported, and an error only
when no block size can give val/test plus train."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
from cli_runner import run_cli

from geospade.errors import GeospadeError
from geospade.raster.windows import assign_block_grids, assign_blocks, largest_block


@pytest.fixture(scope="module")
def small_pair(tmp_path_factory):
    """A 443 x 489 land cover (height x width) and its imagery: too small for 8-step blocks."""
    from geospade.landscape import make_landscape

    root = tmp_path_factory.mktemp("small")
    paths = make_landscape(root / "lc.tif", root / "img.tif", width=489, height=443,
                           scheme="chesapeake7", bands=3, dtype="uint8", seed=4,
                           feature_scale=0.3)
    return paths.landcover, paths.imagery


def test_small_raster_gets_the_largest_block_that_gives_the_fractions(tmp_path, small_pair,
                                                                       capsys):
    out = tmp_path / "chips"
    code, stdout, err = run_cli(["tile", *map(str, small_pair), "-o", str(out), "--size", "64",
                                 "--val-fraction", "0.2"], capsys)
    assert code == 0, err
    # 7 x 8 chips: blocks of 4 steps give 2 x 2 blocks (0.2 x 4 < 1 block), 3 steps 3 x 3.
    assert "split blocks: 3 x 3 chip steps (chosen automatically; --block fixes it)" in stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["options"]["block"] == 3 and manifest["options"]["block_auto"] is True
    # Blocks of 3 x 64 = 192 px: 3 x 3 of them, round(0.2 x 9) = 2 val; each chip takes the
    # split of the block it starts in (a chip touching two splits is dropped).
    grid = assign_blocks(3, 3, 0.2, 0.0, seed=0)
    assert (grid == 1).sum() == 2
    index = gpd.read_file(out / "index.gpkg", layer="chips")
    splits = ["train", "val", "test"]
    starts = zip(index.row_off, index.col_off, strict=True)
    assert [splits[grid[r // 192, c // 192]] for r, c in starts] == list(index.split)
    assert manifest["counts"]["val"] > 0 and manifest["counts"]["train"] > 0


def test_an_explicit_block_is_kept_and_still_refused_when_too_large(tmp_path, small_pair,
                                                                    capsys):
    out = tmp_path / "chips"
    code, _, err = run_cli(["tile", *map(str, small_pair), "-o", str(out), "--size", "64",
                            "--val-fraction", "0.2", "--block", "8"], capsys)
    assert code == 1 and err.count("\n") == 1
    assert "only 1 split block(s) of chips" in err and "--block" in err
    code, stdout, _ = run_cli(["tile", *map(str, small_pair), "-o", str(out), "--size", "64",
                               "--val-fraction", "0.2", "--block", "2"], capsys)
    assert code == 0 and "split blocks: 2 x 2 chip steps (--block)" in stdout
    assert json.loads((out / "manifest.json").read_text())["options"]["block_auto"] is False


def test_an_explicit_block_splits_by_its_blocks(chip_store):
    """The conftest store (--block 2, 64-px chips: 128-px blocks) splits as before."""
    index = gpd.read_file(chip_store / "index.gpkg", layer="chips").sort_values("id")
    blocks = assign_blocks(2, 2, 0.25, 0.0, seed=0)
    expected = ["train", "val", "test"]
    for row in index.itertuples():
        assert row.split == expected[blocks[row.row_off // 128, row.col_off // 128]]


def test_without_val_or_test_the_summary_names_no_block(tmp_path, small_pair, capsys):
    code, stdout, _ = run_cli(["tile", *map(str, small_pair), "-o", str(tmp_path / "c"),
                               "--size", "64"], capsys)
    assert code == 0 and "split blocks" not in stdout


def test_error_only_when_no_block_size_can(tmp_path, small_pair, capsys):
    # 443 x 489 px in 256-px chips: 2 x 2 chips, so 4 blocks at most; 0.2 and 0.7 take 1 + 3.
    code, _, err = run_cli(["tile", *map(str, small_pair), "-o", str(tmp_path / "c"), "--size",
                            "256", "--val-fraction", "0.2", "--test-fraction", "0.7"], capsys)
    assert code == 1 and err.count("\n") == 1
    assert "only 4 split block(s) of chips even with --block 1" in err


@pytest.mark.parametrize("areas, stride, val, test, expected", [
    ([(443, 489)], 64, 0.2, 0.0, 3),
    ([(443, 489)], 64, 0.0, 0.0, 8),  # no val/test: one block holds the whole area
    ([(256, 256)], 64, 0.25, 0.0, 3),  # 192-px blocks: 2 x 2 of them, one val
    ([(256, 256)], 64, 0.1, 0.1, 1),  # 16 one-chip blocks: 0.1 x 16 >= 1
    ([(256, 256)], 64, 0.05, 0.0, 1),  # 0.05 x 16 < 1 even at block 1, which still works
    ([(128, 128)] * 5, 64, 0.2, 0.0, 2),  # a folder of 5 areas: one block each, one val
])
def test_largest_block(areas, stride, val, test, expected):
    assert largest_block(areas, stride, val, test) == expected


def test_largest_block_refuses_when_even_one_step_is_too_few():
    with pytest.raises(GeospadeError, match="only 2 split block"):
        largest_block([(64, 128)], 64, 0.5, 0.4)


def test_block_grids_share_one_assignment_and_match_one_grid():
    one = assign_blocks(3, 4, 0.25, 0.1, seed=7)
    np.testing.assert_array_equal(assign_block_grids([(3, 4)], 0.25, 0.1, seed=7)[0], one)
    grids = assign_block_grids([(2, 2), (1, 3), (2, 1)], 0.3, 0.0, seed=1)
    assert [g.shape for g in grids] == [(2, 2), (1, 3), (2, 1)]
    # round(0.3 x 9) = 3 val blocks over all grids together, not one per grid.
    assert sum(int((g == 1).sum()) for g in grids) == 3
