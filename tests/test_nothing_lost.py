"""Nothing a user has is lost: every writing command, pointed with -o at each of its inputs (and
the folders holding them), with and without --overwrite, fails with one line and leaves every
input byte for byte as it was; one run at a time per output; killed runs leave nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from cli_runner import run_cli
from shapely.geometry import box
from test_evaluate import write_checkpoint as write_eval_checkpoint
from test_stitch import write_tile
from test_synthesize import make_checkpoint, write_landcover

from geospade.outputs import OutputLock, lock_path
from geospade.schemes import load_scheme


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (hidden ones too) and the hash of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def one_line_error(code: int, err: str) -> str:
    assert code != 0, err
    assert err.startswith("geospade: error: ") and err.count("\n") == 1, err
    return err


@pytest.fixture()
def inputs(tmp_path, landscape_pair, chip_store) -> dict[str, Path]:
    """A folder ``t`` holding one of every input kind, fresh per test."""
    t = tmp_path / "t"
    t.mkdir()
    lc, img = (Path(shutil.copy(p, t)) for p in landscape_pair)
    with rasterio.open(lc) as src:
        bounds = src.bounds
        crs = src.crs
    aoi = t / "aoi.geojson"
    gpd.GeoDataFrame({"class": [5]}, geometry=[box(*bounds)], crs=crs).to_file(aoi)
    scheme = t / "scheme.json"
    scheme.write_text(json.dumps(load_scheme("chesapeake7").to_dict()))
    chips = t / "chips"
    shutil.copytree(chip_store, chips)
    config = t / "train.toml"
    config.write_text("steps = 1\n")
    small = write_landcover(t / "small_lc.tif", np.tile(np.arange(1, 7, dtype=np.uint8), (40, 8)))
    ckpt = make_checkpoint(t / "synth.pt")
    eval_ckpt = write_eval_checkpoint(t / "eval.pt", chips)
    tile_a = write_tile(t / "a.tif", np.full((1, 8, 8), 10, np.uint8), 0, 0)
    tile_b = write_tile(t / "b.tif", np.full((1, 8, 8), 20, np.uint8), 4, 0)
    return {"t": t, "lc": lc, "img": img, "aoi": aoi, "scheme": scheme, "chips": chips,
            "config": config, "small": small, "ckpt": ckpt, "eval_ckpt": eval_ckpt,
            "tile_a": tile_a, "tile_b": tile_b}


def _commands(i: dict[str, Path]) -> dict[str, tuple[list[str], list[str]]]:
    """Each writing command: (its arguments before -o, the inputs -o is pointed at)."""
    return {
        "tile": (["tile", str(i["lc"]), str(i["img"]), "--aoi", str(i["aoi"]), "--scheme",
                  str(i["scheme"]), "--size", "64"], ["lc", "img", "aoi", "scheme", "t"]),
        "train": (["train", str(i["chips"]), "--config", str(i["config"])],
                  ["chips", "chips/manifest.json", "chips/images", "config", "t"]),
        "synthesize": (["synthesize", str(i["ckpt"]), str(i["small"]), "--edits", str(i["aoi"]),
                        "--edit-field", "class"], ["ckpt", "small", "aoi", "t"]),
        "stitch": (["stitch", str(i["tile_a"]), str(i["tile_b"])], ["tile_a", "tile_b", "t"]),
        "evaluate": (["evaluate", str(i["eval_ckpt"]), str(i["chips"]), "--no-segmenter",
                      "--no-utility"],
                     ["eval_ckpt", "chips/manifest.json", "chips/index.gpkg"]),
    }


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
@pytest.mark.parametrize("command", ["tile", "train", "synthesize", "stitch", "evaluate"])
def test_no_command_writes_over_its_inputs(inputs, command, overwrite, capsys):
    args, targets = _commands(inputs)[command]
    before = snapshot(inputs["t"])
    for target in targets:
        path = inputs[target] if target in inputs else inputs["t"] / target
        extra = ["--overwrite"] if overwrite else []
        code, _, err = run_cli([*args, "-o", str(path), *extra], capsys)
        assert code != 0, f"{command} -o {target}: {err}"
        assert err.count("\n") == 1 and err.startswith("geospade: error: "), err
        assert snapshot(inputs["t"]) == before, f"{command} -o {target} changed an input"


@pytest.mark.parametrize("option", ["--save-landcover", "--tiles-only"])
def test_synthesize_side_outputs_never_replace_inputs(inputs, option, capsys):
    i = inputs
    before = snapshot(i["t"])
    for target in ("ckpt", "small", "aoi", "t"):
        for extra in ([], ["--overwrite"]):
            code, _, err = run_cli(["synthesize", str(i["ckpt"]), str(i["small"]), "-o",
                                    str(i["t"].parent / "out.tif"), option, str(i[target]),
                                    *extra], capsys)
            one_line_error(code, err)
            assert snapshot(i["t"]) == before, f"{option} {target} changed an input"


def test_tile_overwrite_on_the_inputs_folder_keeps_both_inputs(inputs, capsys):
    """The reported case: `tile t/lc.tif t/img.tif -o t --overwrite` deleted both inputs."""
    i = inputs
    code, _, err = run_cli(["tile", str(i["lc"]), str(i["img"]), "-o", str(i["t"]),
                            "--overwrite", "--size", "64"], capsys)
    assert "holds the land cover" in one_line_error(code, err)
    code, _, err = run_cli(["tile", str(i["lc"]), str(i["img"]), "-o", str(i["img"]),
                            "--overwrite", "--size", "64"], capsys)
    assert "is the imagery" in one_line_error(code, err)
    assert i["lc"].is_file() and i["img"].is_file()


def test_tile_overwrite_replaces_a_chip_store_only(inputs, tmp_path, capsys):
    i = inputs
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    args = ["tile", str(i["lc"]), str(i["img"]), "--size", "64", "--overwrite"]
    code, _, err = run_cli([*args, "-o", str(notes)], capsys)
    assert "is not a geospade chip store" in one_line_error(code, err)
    assert (notes / "todo.txt").read_text() == "mine"
    store = tmp_path / "store"
    assert run_cli([*args, "-o", str(store)], capsys)[0] == 0
    assert run_cli([*args, "-o", str(store), "--size", "128"], capsys)[0] == 0
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["chip_size"] == 128
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_evaluate_never_writes_over_its_inputs_or_its_own_report(inputs, tmp_path, capsys):
    i = inputs
    base = ["evaluate", str(i["eval_ckpt"]), str(i["chips"]), "--no-segmenter", "--no-utility"]
    before = snapshot(i["t"])
    code, _, err = run_cli([*base, "-o", str(i["eval_ckpt"]), "--overwrite"], capsys)
    assert "is the checkpoint" in one_line_error(code, err)
    code, _, err = run_cli([*base, "-o", str(i["chips"] / "manifest.json"), "--overwrite"],
                           capsys)
    assert "inside the chip store" in one_line_error(code, err)
    # -o r.png: the figure (r.png too) would replace the report.
    code, _, err = run_cli([*base, "-o", str(tmp_path / "r.png")], capsys)
    assert "report and the figure" in one_line_error(code, err)
    # A JSON that is not a geospade report is not replaced, even with --overwrite.
    other = tmp_path / "settings.json"
    other.write_text('{"mine": true}')
    code, _, err = run_cli([*base, "-o", str(other), "--no-figure", "--overwrite"], capsys)
    assert "is not a geospade evaluation report" in one_line_error(code, err)
    assert other.read_text() == '{"mine": true}'
    assert snapshot(i["t"]) == before
    report = tmp_path / "report.json"
    assert run_cli([*base, "-o", str(report), "-q"], capsys)[0] == 0
    assert run_cli([*base, "-o", str(report), "-q", "--overwrite"], capsys)[0] == 0
    assert json.loads(report.read_text())["format"] == "geospade-evaluation"


# -- one run per output -------------------------------------------------------------------------


HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from geospade.outputs import OutputLock
    OutputLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(120)
""")


@pytest.fixture()
def hold_lock():
    """Start a process that holds the output lock of a path, as a live geospade run does."""
    procs = []

    def start(path: Path) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path)],
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_a_second_run_on_a_locked_output_is_refused(inputs, tmp_path, hold_lock, capsys):
    i = inputs
    out_tif, store, run = tmp_path / "out.tif", tmp_path / "store", tmp_path / "run"
    for path in (out_tif, store, run):
        hold_lock(path)
    code, _, err = run_cli(["synthesize", str(i["ckpt"]), str(i["small"]), "-o", str(out_tif)],
                           capsys)
    assert "being written by another geospade run (process" in one_line_error(code, err)
    code, _, err = run_cli(["tile", str(i["lc"]), str(i["img"]), "-o", str(store), "--size",
                            "64"], capsys)
    assert "being written by another geospade run" in one_line_error(code, err)
    code, _, err = run_cli(["train", str(i["chips"]), "-o", str(run), "--steps", "1"], capsys)
    assert "being written by another geospade run" in one_line_error(code, err)
    assert not out_tif.exists() and not store.exists() and not run.exists()


def test_a_crashed_run_leaves_no_lock_and_its_temporaries_are_removed(inputs, tmp_path,
                                                                      hold_lock, capsys):
    i = inputs
    out = tmp_path / "out.tif"
    holder = hold_lock(out)
    # What a `kill -9` during writing leaves beside the output.
    stale = [tmp_path / ".out.tif.1a2b3c4d.raw.tif", tmp_path / ".out.tif.x9.tmp.tif"]
    for path in stale:
        path.write_bytes(b"half")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert lock_path(out).exists()  # the file stays; the kernel dropped the lock
    code, _, err = run_cli(["synthesize", str(i["ckpt"]), str(i["small"]), "-o", str(out),
                            "-q"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif", "t"]


def test_stale_temporaries_of_a_live_run_are_kept(tmp_path):
    out = tmp_path / "store"
    live = tmp_path / ".store.partial-0123abcd"
    with OutputLock(out):
        live.mkdir()  # the live run's own temporary
        with pytest.raises(Exception, match="being written by another geospade run"):
            OutputLock(out).acquire()
        assert live.exists()  # only the holder of the lock may call them stale


def test_killed_tile_and_train_temporaries_go_at_the_next_run(inputs, tmp_path, capsys):
    i = inputs
    partial = tmp_path / ".store.partial-0123abcd"
    (partial / "images").mkdir(parents=True)
    (partial / "images" / "c.tif").write_bytes(b"x" * 100)
    code, _, err = run_cli(["tile", str(i["lc"]), str(i["img"]), "-o", str(tmp_path / "store"),
                            "--size", "64", "-q"], capsys)
    assert code == 0, err
    assert not partial.exists()
    run = tmp_path / "run"
    train = ["train", str(i["chips"]), "-o", str(run), "--ngf", "4", "--ndf", "4",
             "--batch-size", "2", "--vgg-weights", "off", "-q"]
    assert run_cli([*train, "--steps", "1"], capsys)[0] == 0
    # A run killed while writing its next checkpoint leaves the temporary in the run folder.
    ckpt_tmp = run / ".checkpoint.pt.k3j2.tmp.pt"
    ckpt_tmp.write_bytes(b"y" * 100)
    code, _, err = run_cli([*train, "--steps", "2", "--resume"], capsys)
    assert code == 0, err
    assert not ckpt_tmp.exists() and (run / "checkpoint.pt").is_file()


def test_two_tile_runs_at_once_give_one_store(inputs, tmp_path):
    """Two real processes on one output: one writes the store, the other stops with one line."""
    i = inputs
    out = tmp_path / "store"
    args = [sys.executable, "-m", "geospade", "tile", str(i["lc"]), str(i["img"]), "-o",
            str(out), "--size", "32", "-q"]
    procs = [subprocess.Popen(args, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    err = next(e for c, e in results if c == 1)
    assert "being written by another geospade run" in err or "already exists" in err
    assert err.count("\n") == 1
    assert json.loads((out / "manifest.json").read_text())["chip_size"] == 32
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# -- tiles folders ------------------------------------------------------------------------------


def test_tiles_of_an_earlier_run_are_never_stitched_in(inputs, tmp_path, capsys):
    i = inputs
    tiles = tmp_path / "tiles"
    base = ["synthesize", str(i["ckpt"]), str(i["small"]), "--tiles-only", str(tiles), "-q"]
    assert run_cli([*base, "--overlap", "16"], capsys)[0] == 0
    first = sorted(p.name for p in tiles.glob("*.tif"))
    # Another run (other windows: other tile names) over the same folder.
    code, _, err = run_cli([*base, "--window", "0,8,48,32"], capsys)
    assert "tiles of another synthesize run" in one_line_error(code, err)
    assert run_cli([*base, "--window", "0,8,48,32", "--overwrite"], capsys)[0] == 0
    second = sorted(p.name for p in tiles.glob("*.tif"))
    marker = json.loads((tiles / ".geospade-tiles.json").read_text())
    assert second == sorted(marker["tiles"])  # only the tiles of the last run are left
    assert set(first) - set(second)  # the first run's own tiles were removed
    assert run_cli(["stitch", *map(str, sorted(tiles.glob("*.tif"))), "-o",
                    str(tmp_path / "s.tif")], capsys)[0] == 0


def test_stitch_refuses_a_leftover_tile(inputs, tmp_path, capsys):
    i = inputs
    tiles = tmp_path / "tiles"
    assert run_cli(["synthesize", str(i["ckpt"]), str(i["small"]), "--tiles-only", str(tiles),
                    "-q"], capsys)[0] == 0
    leftover = tiles / "small_lc_r0009999.tif"
    shutil.copy(next(tiles.glob("*.tif")), leftover)
    code, _, err = run_cli(["stitch", *map(str, sorted(tiles.glob("*.tif"))), "-o",
                            str(tmp_path / "s.tif")], capsys)
    assert "not one of the tiles of the last synthesize run" in one_line_error(code, err)
    assert not (tmp_path / "s.tif").exists()


def test_tiles_only_refuses_a_folder_of_other_files(inputs, tmp_path, capsys):
    i = inputs
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep")
    for extra in ([], ["--overwrite"]):
        code, _, err = run_cli(["synthesize", str(i["ckpt"]), str(i["small"]), "--tiles-only",
                                str(folder), *extra], capsys)
        assert "not geospade tiles" in one_line_error(code, err)
    assert sorted(os.listdir(folder)) == ["notes.txt"]


def test_an_output_path_ending_in_a_slash_names_a_folder_not_a_file(inputs, tmp_path, capsys):
    i = inputs
    code, _, err = run_cli(["synthesize", str(i["ckpt"]), str(i["small"]), "-o",
                            str(tmp_path / "newdir") + "/"], capsys)
    assert "is a folder; give a file name" in one_line_error(code, err)
    assert not (tmp_path / "newdir").exists()
