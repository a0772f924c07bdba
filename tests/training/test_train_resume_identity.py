"""`geospade train --resume` continues on the chip store it started on (or says so), and a run
is as long as --steps or --epochs says, never both (issue 16)."""

import hashlib
import json
import shutil

import pytest
import torch
from cli_runner import run_cli
from test_train_chipstore import make_chip_store

from geospade.errors import GeospadeError
from geospade.formats.checkpoint import load_checkpoint, save_checkpoint
from geospade.training.config import TrainConfig
from geospade.training.loop import train

TINY = ["--batch-size", "2", "--ngf", "4", "--ndf", "4", "--num-d", "1", "--n-layers-d", "1",
        "--spade-hidden", "8", "--norm", "clade", "--no-vgg", "--device", "cpu",
        "--preview-every", "0", "--val-every", "0", "--quiet"]


def one_line_error(err: str) -> str:
    assert err.startswith("geospade: error: ") and err.count("\n") == 1, err
    return err


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Two chip stores of 32-px chips, 4 bands, 8 train chips each (4 steps per epoch), made
    from different seeds: same chip size, bands and classes, other chips."""
    root = tmp_path_factory.mktemp("identity")
    stores = {"a": make_chip_store(root / "a", n_train=8, n_val=0, seed=0),
              "b": make_chip_store(root / "b", n_train=8, n_val=0, seed=1)}
    for name, store in stores.items():  # as `geospade tile` writes: when and from what
        manifest = json.loads((store / "manifest.json").read_text())
        manifest["created"] = f"2024-05-0{len(name)}T12:00:00+00:00"
        manifest["sources"] = {"landcover": {"path": f"/data/{name}/landcover.tif"}}
        (store / "manifest.json").write_text(json.dumps(manifest))
    return stores


@pytest.fixture
def run_on_a(stores, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, _, err = run_cli(["train", str(stores["a"]), "-o", str(run_dir), "--steps", "1",
                            *TINY], capsys)
    assert code == 0, err
    return run_dir


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- C: the chip store a run resumes on ---------------------------------------------------------


def test_the_checkpoint_names_the_chip_store_it_was_trained_on(stores, run_on_a):
    ckpt = load_checkpoint(run_on_a / "checkpoint.pt")
    assert ckpt["chips_manifest_sha256"] == sha256(stores["a"] / "manifest.json")


def test_resume_on_another_chip_store_is_refused(stores, run_on_a, capsys):
    before = (run_on_a / "checkpoint.pt").read_bytes()
    code, _, err = run_cli(["train", str(stores["b"]), "-o", str(run_on_a), "--resume",
                            "--steps", "2", "--quiet"], capsys)
    assert code == 1
    message = one_line_error(err)
    assert f"{run_on_a / 'checkpoint.pt'} was trained on another chip store" in message
    assert "--allow-other-chips" in message
    assert (run_on_a / "checkpoint.pt").read_bytes() == before


def test_allow_other_chips_warns_and_continues_on_them(stores, run_on_a, capsys):
    code, _, err = run_cli(["train", str(stores["b"]), "-o", str(run_on_a), "--resume",
                            "--steps", "2", "--allow-other-chips", "--quiet"], capsys)
    assert code == 0, err
    assert err.count("geospade: warning: ") == 1
    assert "was trained on another chip store" in err and str(stores["b"]) in err
    ckpt = load_checkpoint(run_on_a / "checkpoint.pt")
    assert ckpt["step"] == 2
    # The checkpoint now names the store it continued on: resuming there again is silent.
    assert ckpt["chips_manifest_sha256"] == sha256(stores["b"] / "manifest.json")
    code, _, err = run_cli(["train", str(stores["b"]), "-o", str(run_on_a), "--resume",
                            "--steps", "3", "--quiet"], capsys)
    assert code == 0 and err == ""


def test_a_copy_of_the_same_store_resumes_silently(stores, run_on_a, tmp_path, capsys):
    copy = tmp_path / "moved" / "chips"
    shutil.copytree(stores["a"], copy)
    code, _, err = run_cli(["train", str(copy), "-o", str(run_on_a), "--resume", "--steps", "2",
                            "--quiet"], capsys)
    assert code == 0 and err == ""
    assert load_checkpoint(run_on_a / "checkpoint.pt")["step"] == 2


def test_an_older_checkpoint_without_the_identity_warns_once(stores, run_on_a, capsys):
    path = run_on_a / "checkpoint.pt"
    old = torch.load(path, weights_only=True)
    del old["chips_manifest_sha256"]
    save_checkpoint(path, old)
    code, _, err = run_cli(["train", str(stores["b"]), "-o", str(run_on_a), "--resume",
                            "--steps", "3", "--checkpoint-every", "1", "--quiet"], capsys)
    assert code == 0, err
    assert err.count("\n") == 1 and err.startswith("geospade: warning: ")
    assert "does not record which chip store" in err
    assert load_checkpoint(path)["chips_manifest_sha256"] == sha256(stores["b"] / "manifest.json")


def test_allow_other_chips_is_in_the_python_api(stores, tmp_path):
    train(stores["a"], tmp_path / "r", steps=1, batch_size=2, ngf=4, ndf=4, num_d=1,
          n_layers_d=1, spade_hidden=8, norm="clade", vgg_weights="off", preview_every=0,
          val_every=0, device="cpu", quiet=True)
    with pytest.raises(GeospadeError, match="was trained on another chip store"):
        train(stores["b"], tmp_path / "r", resume=True, steps=2, quiet=True)
    result = train(stores["b"], tmp_path / "r", resume=True, steps=2, quiet=True,
                   allow_other_chips=True)
    assert result.step == 2


# -- D: --steps or --epochs -----------------------------------------------------------------------


def test_steps_and_epochs_together_are_an_error_everywhere(stores, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, _, err = run_cli(["train", str(stores["a"]), "-o", str(run_dir), "--steps", "1",
                            "--epochs", "1", *TINY], capsys)
    assert code == 1 and "give steps or epochs, not both" in one_line_error(err)
    assert not run_dir.exists()
    with pytest.raises(GeospadeError, match="give steps or epochs, not both"):
        TrainConfig(steps=1, epochs=1)
    with pytest.raises(GeospadeError, match="give steps or epochs, not both"):
        train(stores["a"], run_dir, steps=1, epochs=1, quiet=True)
    both = tmp_path / "both.toml"
    both.write_text("[train]\nsteps = 1\nepochs = 1\n")
    code, _, err = run_cli(["train", str(stores["a"]), "-o", str(run_dir), "--config",
                            str(both), *TINY], capsys)
    assert code == 1
    assert f"{both}: give steps or epochs, not both" in one_line_error(err)
    assert not run_dir.exists()


def test_one_of_steps_or_epochs_sets_the_length(stores, tmp_path, capsys):
    assert TrainConfig().steps == 2000 and TrainConfig().epochs is None
    assert TrainConfig(epochs=2).steps is None
    # A config file's epochs give way to --steps on the command line (and the other way).
    config = tmp_path / "long.toml"
    config.write_text("[train]\nepochs = 2\n")
    code, _, err = run_cli(["train", str(stores["a"]), "-o", str(tmp_path / "r"), "--config",
                            str(config), "--steps", "1", *TINY], capsys)
    assert code == 0, err
    ckpt = load_checkpoint(tmp_path / "r" / "checkpoint.pt")
    assert ckpt["step"] == 1 and ckpt["config"]["epochs"] is None
    assert "epochs" not in (tmp_path / "r" / "config.toml").read_text()
    # Resuming with --epochs trains to the end of that epoch (4 steps each).
    code, _, err = run_cli(["train", str(stores["a"]), "-o", str(tmp_path / "r"), "--resume",
                            "--epochs", "1", "--quiet"], capsys)
    assert code == 0, err
    ckpt = load_checkpoint(tmp_path / "r" / "checkpoint.pt")
    assert ckpt["step"] == 4 and ckpt["config"]["steps"] is None


def test_an_older_checkpoint_with_steps_beside_epochs_resumes_by_epochs(stores, tmp_path,
                                                                       capsys):
    run_dir = tmp_path / "r"
    code, _, err = run_cli(["train", str(stores["a"]), "-o", str(run_dir), "--epochs", "1",
                            *TINY], capsys)
    assert code == 0, err
    path = run_dir / "checkpoint.pt"
    old = torch.load(path, weights_only=True)
    old["config"]["steps"] = 2000  # what runs stored before steps and epochs excluded each other
    save_checkpoint(path, old)
    code, _, err = run_cli(["train", str(stores["a"]), "-o", str(run_dir), "--resume",
                            "--epochs", "2", "--quiet"], capsys)
    assert code == 0, err
    assert load_checkpoint(path)["step"] == 8
