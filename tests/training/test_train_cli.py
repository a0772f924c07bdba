"""`geospade train` through the CLI: a run, and each bad input as a one-line error."""

import json

import pytest
import torch
from cli_runner import run_cli as run
from test_train_chipstore import make_chip_store

from geospade.cli import main

TINY = ["--batch-size", "4", "--ngf", "8", "--ndf", "8", "--num-d", "1", "--n-layers-d", "2",
        "--spade-hidden", "16", "--no-vgg", "--device", "cpu", "--quiet"]




def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("geospade: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    return {
        "good": make_chip_store(root / "good", n_train=4, n_val=0, size=32),
        "three_bands": make_chip_store(root / "rgb", n_train=4, n_val=0, size=32, bands=3),
        "size48": make_chip_store(root / "s48", n_train=4, n_val=0, size=48),
    }


@pytest.fixture(scope="module")
def trained(stores, tmp_path_factory):
    """A 2-step run made through the CLI, with a TOML config overridden on the command line."""
    run_dir = tmp_path_factory.mktemp("cli_run") / "run"
    config = run_dir.parent / "train.toml"
    config.write_text("[train]\nsteps = 5\nngf = 16\nlog_every = 1\n")
    main(["train", str(stores["good"]), "-o", str(run_dir), "--config", str(config),
          "--steps", "2", *TINY])
    return run_dir


def test_cli_run_writes_checkpoint_with_cli_over_config(trained):
    ckpt = torch.load(trained / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 2  # --steps beat the config file's 5
    assert ckpt["config"]["ngf"] == 8 and ckpt["generator_config"]["ngf"] == 8
    assert ckpt["config"]["vgg_weights"] == "off"
    assert "steps = 2" in (trained / "config.toml").read_text()


def test_resume_extends_a_finished_run(trained, stores, capsys):
    code, _, err = run(["train", str(stores["good"]), "-o", str(trained), "--resume",
                        "--steps", "3", "--quiet"], capsys)
    assert code == 0, err
    assert torch.load(trained / "checkpoint.pt", weights_only=True)["step"] == 3


def test_missing_chip_store(tmp_path, capsys):
    code, _, err = run(["train", str(tmp_path / "nope"), "-o", str(tmp_path / "run"), *TINY],
                       capsys)
    assert code == 1 and "chip store not found" in one_line_error(err)
    assert not (tmp_path / "run").exists()


def test_incomplete_chip_store(tmp_path, capsys):
    store = make_chip_store(tmp_path / "s", n_train=2, n_val=0, size=32)
    (store / "manifest.json").unlink()
    code, _, err = run(["train", str(store), "-o", str(tmp_path / "run"), *TINY], capsys)
    assert code == 1 and "not a complete chip store" in one_line_error(err)
    assert not (tmp_path / "run").exists()


def test_chip_size_not_multiple_of_stride(stores, tmp_path, capsys):
    code, _, err = run(["train", str(stores["size48"]), "-o", str(tmp_path / "run"), *TINY],
                       capsys)
    assert code == 1
    assert "chip size 48 is not a multiple of the generator's stride 32" in one_line_error(err)
    code, _, err = run(["train", str(stores["good"]), "-o", str(tmp_path / "run"),
                        "--num-upsampling-layers", "more", *TINY], capsys)
    assert code == 1 and "stride 64" in one_line_error(err)
    assert not (tmp_path / "run").exists()


def test_existing_run_without_overwrite_or_resume(trained, stores, capsys):
    before = (trained / "checkpoint.pt").read_bytes()
    code, _, err = run(["train", str(stores["good"]), "-o", str(trained), *TINY], capsys)
    assert code == 1 and "already exists" in one_line_error(err)
    assert (trained / "checkpoint.pt").read_bytes() == before


def test_resume_with_other_band_count(trained, stores, capsys):
    before = (trained / "checkpoint.pt").read_bytes()
    code, _, err = run(["train", str(stores["three_bands"]), "-o", str(trained), "--resume"],
                       capsys)
    assert code == 1 and "trained on 4 band(s), but the chip store has 3" in one_line_error(err)
    assert (trained / "checkpoint.pt").read_bytes() == before


def test_resume_cannot_change_the_model(trained, stores, capsys):
    code, _, err = run(["train", str(stores["good"]), "-o", str(trained), "--resume",
                        "--ngf", "32"], capsys)
    assert code == 1 and "cannot change ngf" in one_line_error(err)


def test_resume_reads_the_config_file_too(trained, stores, tmp_path, capsys):
    # A --config file counts on --resume like the options: model keys must agree with the
    # checkpoint (the run's own config.toml always does), resumable ones may change.
    longer = tmp_path / "longer.toml"
    longer.write_text("\n".join(
        "steps = 4" if line.startswith("steps =") else line
        for line in (trained / "config.toml").read_text().splitlines()))
    code, _, err = run(["train", str(stores["good"]), "-o", str(trained), "--resume",
                        "--config", str(longer), "--quiet"], capsys)
    assert code == 0, err
    assert torch.load(trained / "checkpoint.pt", weights_only=True)["step"] == 4
    wider = tmp_path / "wider.toml"
    wider.write_text("[train]\nngf = 32\nsteps = 9\n")
    code, _, err = run(["train", str(stores["good"]), "-o", str(trained), "--resume",
                        "--config", str(wider)], capsys)
    assert code == 1 and "cannot change ngf" in one_line_error(err)
    assert torch.load(trained / "checkpoint.pt", weights_only=True)["step"] == 4


@pytest.mark.parametrize("content, message", [
    (b"\x00garbage, not a zip", "not a readable checkpoint"),
    (b"hello\n", "not a readable checkpoint (truncated or not a PyTorch file: KeyError)"),
    ("truncated", "not a readable checkpoint (truncated or not a PyTorch file: OSError)"),
    ("foreign", "not a geospade checkpoint"),
])
def test_corrupt_or_foreign_checkpoint(stores, tmp_path, capsys, content, message):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    if content == "foreign":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, run_dir / "checkpoint.pt")
    elif content == "truncated":
        whole = tmp_path / "whole.pt"
        torch.save({"w": torch.zeros(4096)}, whole)
        (run_dir / "checkpoint.pt").write_bytes(whole.read_bytes()[:5000])
    else:
        (run_dir / "checkpoint.pt").write_bytes(content)
    before = (run_dir / "checkpoint.pt").read_bytes()
    code, _, err = run(["train", str(stores["good"]), "-o", str(run_dir), "--resume"], capsys)
    assert code == 1 and message in one_line_error(err)
    assert (run_dir / "checkpoint.pt").read_bytes() == before
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoint.pt"]


def test_resume_without_checkpoint_and_bad_config(stores, tmp_path, capsys):
    code, _, err = run(["train", str(stores["good"]), "-o", str(tmp_path / "run"), "--resume"],
                       capsys)
    assert code == 1 and "nothing to resume" in one_line_error(err)
    bad = tmp_path / "bad.toml"
    bad.write_text("steps = 'many'\n")
    code, _, err = run(["train", str(stores["good"]), "-o", str(tmp_path / "run"),
                        "--config", str(bad)], capsys)
    assert code == 1 and "steps must be int" in one_line_error(err)
    bad.write_text(json.dumps({"x": 1}))
    code, _, err = run(["train", str(stores["good"]), "-o", str(tmp_path / "run"),
                        "--config", str(bad)], capsys)
    assert code == 1 and "not valid TOML" in one_line_error(err)
    assert not (tmp_path / "run").exists()


def test_overwrite_refuses_a_folder_that_is_not_a_run(stores, tmp_path, capsys):
    folder = tmp_path / "precious"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    code, _, err = run(["train", str(stores["good"]), "-o", str(folder), "--overwrite", *TINY],
                       capsys)
    assert code == 1 and "not a geospade run folder" in one_line_error(err)
    assert (folder / "notes.txt").read_text() == "keep me"


def test_vgg_off_is_announced(stores, tmp_path, capsys):
    args = [a for a in TINY if a != "--quiet"]
    code, out, err = run(["train", str(stores["good"]), "-o", str(tmp_path / "run"),
                          "--steps", "1", *args], capsys)
    assert code == 0, err
    assert "perceptual (VGG) loss OFF" in err
    assert "checkpoint:" in out


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def old_run(stores, tmp_path):
    """A finished 1-step run in tmp_path/run, to be overwritten."""
    run_dir = tmp_path / "run"
    main(["train", str(stores["good"]), "-o", str(run_dir), "--steps", "1", *TINY])
    return run_dir


def _siblings(run_dir):
    return sorted(p.name for p in run_dir.parent.iterdir() if p.name.startswith(".run"))


@pytest.mark.parametrize("failure", ["nan", "corrupt chip"])
def test_overwrite_keeps_the_old_run_when_the_new_one_fails(stores, old_run, tmp_path, capsys,
                                                            failure):
    before = _snapshot(old_run)
    chips, extra = stores["good"], []
    if failure == "nan":
        extra = ["--lambda-fm", "1e300"]
    else:
        chips = tmp_path / "chips"
        import shutil

        shutil.copytree(stores["good"], chips)
        for image in (chips / "images").glob("*.tif"):
            image.write_text("not a raster")
    code, _, err = run(["train", str(chips), "-o", str(old_run), "--overwrite", "--steps", "2",
                        *extra, *TINY], capsys)
    assert code == 1
    one_line_error(err)
    assert _snapshot(old_run) == before  # the old run, byte for byte
    assert _siblings(old_run) == []


def test_overwrite_replaces_the_old_run_once_the_new_one_checkpoints(stores, old_run, capsys):
    (old_run / "notes.txt").write_text("from the old run")
    code, _, err = run(["train", str(stores["good"]), "-o", str(old_run), "--overwrite",
                        "--steps", "2", *TINY], capsys)
    assert code == 0, err
    assert not (old_run / "notes.txt").exists()
    assert torch.load(old_run / "checkpoint.pt", weights_only=True)["step"] == 2
    assert _siblings(old_run) == []


def test_a_new_run_that_fails_leaves_nothing_to_block_a_retry(stores, tmp_path, capsys):
    run_dir = tmp_path / "nested" / "run"
    code, _, err = run(["train", str(stores["good"]), "-o", str(run_dir), "--steps", "2",
                        "--lambda-fm", "1e300", *TINY], capsys)
    assert code == 1 and "became inf" in one_line_error(err)
    assert not run_dir.exists()
    code, _, err = run(["train", str(stores["good"]), "-o", str(run_dir), "--steps", "1",
                        *TINY], capsys)
    assert code == 0, err
    # Written files are readable by others, as any new file (not mkstemp's 0600).
    import os

    umask = os.umask(0)
    os.umask(umask)
    for name in ("checkpoint.pt", "config.toml", "metrics.csv"):
        assert (run_dir / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_resume_to_a_step_already_reached_is_an_error(stores, old_run, capsys):
    before = _snapshot(old_run)
    code, _, err = run(["train", str(stores["good"]), "-o", str(old_run), "--resume",
                        "--steps", "1", "--quiet"], capsys)
    assert code == 1
    assert "nothing to do: the checkpoint is at step 1" in one_line_error(err)
    assert _snapshot(old_run) == before


def test_unknown_device_and_unwritable_folder(stores, tmp_path, capsys, monkeypatch):
    code, _, err = run(["train", str(stores["good"]), "-o", str(tmp_path / "r"),
                        *TINY, "--device", "foo"], capsys)
    assert code == 1 and "unknown device 'foo'" in one_line_error(err)
    assert not (tmp_path / "r").exists()
    import geospade.training.run_folder as loop

    monkeypatch.setattr(loop.os, "access", lambda path, mode: str(path) != str(tmp_path))
    code, _, err = run(["train", str(stores["good"]), "-o", str(tmp_path / "r"), *TINY], capsys)
    assert code == 1 and f"output folder {tmp_path} is not writable" in one_line_error(err)


def test_a_run_folder_that_cannot_be_made_is_one_line(stores, old_run, tmp_path, capsys,
                                                        monkeypatch):
    before = _snapshot(old_run)

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(type(old_run), "mkdir", refuse)
    code, _, err = run(["train", str(stores["good"]), "-o", str(old_run), "--overwrite",
                        "--steps", "1", *TINY], capsys)
    monkeypatch.undo()
    assert code == 1
    assert f"cannot create run folder {old_run}: Permission denied" in one_line_error(err)
    assert _snapshot(old_run) == before and _siblings(old_run) == []
