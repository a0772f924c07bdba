"""Argument errors: a library call names the keyword argument, the CLI names its flag."""

import pickle

import numpy as np
import pytest
from cli_runner import run_cli

from geospade.errors import ArgumentError, GeospadeError, cli_wording
from geospade.schemes import CHESAPEAKE7, UnknownClassValuesError


@pytest.fixture
def empty_rasters(tmp_path):
    """Two empty files: enough for the checks that run before any raster is opened."""
    landcover, imagery = tmp_path / "lc.tif", tmp_path / "im.tif"
    landcover.write_bytes(b"")
    imagery.write_bytes(b"")
    return landcover, imagery


def test_a_library_call_names_the_keyword_argument(tmp_path, empty_rasters):
    from geospade import synthesize

    landcover, _ = empty_rasters
    with pytest.raises(ArgumentError) as info:
        synthesize(tmp_path / "none.pt", landcover, tmp_path / "out.tif", batch_size=0,
                   quiet=True)
    err = info.value
    assert str(err) == "batch_size must be at least 1, not 0"
    assert (err.argument, err.problem) == ("batch_size", "must be at least 1, not 0")
    assert cli_wording(err) == "--batch-size must be at least 1, not 0"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["im.tif", "lc.tif"]


def test_the_cli_prints_the_flag_of_the_argument(tmp_path, monkeypatch, capsys):
    # --batch-size is range-checked by click, so the library's own check is reached only
    # through a call that raises it.
    import geospade.synthesis.sliding

    def refuse(*args, **kwargs):
        raise ArgumentError("batch_size", "must be at least 1, not 0")

    monkeypatch.setattr(geospade.synthesis.sliding, "synthesize", refuse)
    (tmp_path / "ckpt.pt").write_bytes(b"")
    (tmp_path / "lc.tif").write_bytes(b"")
    code, _, err = run_cli(["synthesize", str(tmp_path / "ckpt.pt"), str(tmp_path / "lc.tif"),
                            "-o", str(tmp_path / "out.tif")], capsys)
    assert (code, err) == (1, "geospade: error: --batch-size must be at least 1, not 0\n")


def test_one_check_reads_as_the_argument_in_python_and_as_the_flag_in_the_cli(
        tmp_path, empty_rasters, capsys):
    from geospade import tile

    landcover, imagery = empty_rasters
    with pytest.raises(GeospadeError, match="^workers must be at least 1, not 0$"):
        tile(landcover, imagery, tmp_path / "chips", workers=0, quiet=True)
    code, _, err = run_cli(["tile", str(landcover), str(imagery), "-o", str(tmp_path / "chips"),
                            "--workers", "0"], capsys)
    assert (code, err) == (1, "geospade: error: --workers must be at least 1, not 0\n")


def test_others_names_both_arguments_and_both_flags(tmp_path, empty_rasters, capsys):
    from geospade import tile

    landcover, imagery = empty_rasters
    with pytest.raises(ArgumentError) as info:
        tile(landcover, imagery, tmp_path / "chips", val_fraction=0.6, test_fraction=0.5,
             quiet=True)
    assert str(info.value) == "val_fraction and test_fraction must be in [0, 1) and sum below 1"
    code, _, err = run_cli(["tile", str(landcover), str(imagery), "-o", str(tmp_path / "chips"),
                            "--val-fraction", "0.6", "--test-fraction", "0.5"], capsys)
    assert code == 1
    assert err == ("geospade: error: --val-fraction and --test-fraction must be in [0, 1) and "
                   "sum below 1\n")


def test_resume_and_overwrite_exclude_each_other(tmp_path):
    from geospade.training.run_folder import check_run_folder

    with pytest.raises(ArgumentError) as info:
        check_run_folder(tmp_path / "run", resume=True, overwrite=True)
    assert str(info.value) == "resume and overwrite exclude each other"
    assert cli_wording(info.value) == "--resume and --overwrite exclude each other"


def test_a_flag_that_is_not_the_argument_name():
    err = ArgumentError("block_size", "24 is not a multiple of 16", flag="--blocksize")
    assert (str(err), cli_wording(err)) == ("block_size 24 is not a multiple of 16",
                                            "--blocksize 24 is not a multiple of 16")
    err = ArgumentError("out", "and save_landcover name the same file (out/a.tif)", flag="-o",
                        others=("save_landcover",))
    # The path that starts with the argument's name is left alone.
    assert cli_wording(err) == "-o and --save-landcover name the same file (out/a.tif)"


def test_advice_with_values_becomes_the_flag_with_its_value():
    err = ArgumentError("amp", "bf16: cpu has no bf16 support; use amp='none'")
    assert cli_wording(err) == "--amp bf16: cpu has no bf16 support; use --amp none"
    err = ArgumentError("overwrite", "a.tif already exists (use overwrite=True to replace it)",
                        leading=False)
    assert str(err) == "a.tif already exists (use overwrite=True to replace it)"
    assert cli_wording(err) == "a.tif already exists (use --overwrite to replace it)"
    err = ArgumentError("variants", "its 4 variants of a mask are alike; use variants=1 without "
                        "oversample_rare", others=("oversample_rare",), leading=False)
    # "variants" as a plain word is English; only variants=1 is the argument.
    assert cli_wording(err) == ("its 4 variants of a mask are alike; use --variants 1 without "
                                "--oversample-rare")


def test_other_errors_are_worded_as_they_are():
    assert cli_wording(GeospadeError("seed is odd")) == "seed is odd"


def test_argument_errors_survive_pickling_as_worker_errors_do():
    err = pickle.loads(pickle.dumps(
        ArgumentError("rank", "must be in 0..1 (world_size=2), not 3", others=("world_size",))))
    assert cli_wording(err) == "--rank must be in 0..1 (--world-size 2), not 3"
    with pytest.raises(UnknownClassValuesError) as info:
        CHESAPEAKE7.encode(np.array([[1, 9]], dtype=np.uint16))
    err = pickle.loads(pickle.dumps(info.value))
    assert isinstance(err, UnknownClassValuesError) and err.counts == {9: 1}
    assert str(err).endswith("use another scheme, or unknown='ignore' to treat them as no data")
    assert cli_wording(err).endswith("use another --scheme, or --unknown ignore to treat them as "
                                     "no data")
