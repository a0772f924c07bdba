"""Bad input caught early, in one line: scheme files, pipeline configs, demo sizes, devices,
read-only chip stores and output folders; and the README agreeing with the code."""

import errno
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from cli_runner import run_cli

import geospade
from geospade import pipeline
from geospade.cli import COMMANDS
from geospade.data.chips import open_chip_store
from geospade.demo import run_demo
from geospade.errors import GeospadeError
from geospade.evaluation import report as report_module
from geospade.evaluation.report import evaluate
from geospade.evaluation.segmenter import SegmenterSettings, user_cache_path
from geospade.formats.checkpoint import save_checkpoint
from geospade.models import Generator
from geospade.pipeline import run_pipeline
from geospade.schemes import load_scheme

ROOT = Path(__file__).resolve().parents[1]
TINY_SEGMENTER = SegmenterSettings(steps=2, batch_size=2, base_channels=4, depth=1)


def one_line_error(err: str) -> str:
    assert err.startswith("geospade: error: ") and err.count("\n") == 1, err
    return err


def read_only(monkeypatch, folder: Path) -> None:
    """Make ``folder`` read-only, also for root (whom chmod does not stop): its mode, what
    ``os.access`` says about it and anything under it, and ``os.mkdir`` under it."""
    folder = folder.resolve()
    folder.chmod(0o555)
    real_access, real_mkdir = os.access, os.mkdir

    def inside(path) -> bool:
        return isinstance(path, (str, os.PathLike)) and Path(path).resolve().is_relative_to(folder)

    def access(path, mode, *args, **kwargs):
        if mode & os.W_OK and inside(path):
            return False
        return real_access(path, mode, *args, **kwargs)

    def mkdir(path, *args, **kwargs):
        if inside(path):
            raise PermissionError(errno.EPERM, "Operation not permitted", str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(os, "mkdir", mkdir)


@pytest.fixture
def restore_modes(tmp_path):
    yield
    for path in [tmp_path, *tmp_path.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)


# -- class scheme files ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"name": "x"}, "missing key 'classes'"),
        ([1, 2], "expected a JSON object with a 'classes' list, not a list"),
        ({"classes": 5}, "'classes' must be a list of class objects, not 5"),
        ({"classes": [{"name": "water"}]}, "classes[0] has no 'value' key"),
        ({"classes": [{"value": 1}]}, "classes[0] has no 'name' key"),
        ({"classes": [{"value": "one", "name": "water"}]},
         "classes[0] 'value' must be an integer, not 'one'"),
        ({"classes": [{"value": 1, "name": 7}]}, "classes[0] 'name' must be a string, not 7"),
        ({"classes": [{"value": 1, "name": "water", "colour": "#0000ff"}]},
         "classes[0] unknown key(s) 'colour' (allowed: value, name, color)"),
        ({"classes": [{"value": 1, "name": "water", "color": "blue"}]},
         "classes[0] 'color' must be \"#rrggbb\" or [r, g, b] (0-255), not 'blue'"),
        ({"nodata": "none", "classes": [{"value": 1, "name": "water"}]},
         "'nodata' must be a number or a list of numbers, not 'none'"),
        ({"classes": [{"value": 1, "name": "water"}], "clases": []}, "unknown key(s) 'clases'"),
    ],
)
def test_scheme_file_key_errors_name_the_key_and_the_file(tmp_path, capsys, content, message):
    path = tmp_path / "my-scheme.json"
    path.write_text(json.dumps(content))
    with pytest.raises(GeospadeError) as exc:
        load_scheme(path)
    assert str(exc.value).startswith(f"invalid class scheme {path}: {message}")
    # The CLI says it in one line, before any work.
    code, _, err = run_cli(["tile", "lc.tif", "im.tif", "-o", str(tmp_path / "c"), "--scheme",
                            str(path)], capsys)
    assert code == 1 and message in one_line_error(err)
    assert not (tmp_path / "c").exists()


def test_scheme_file_rejects_duplicate_names_ignoring_case_and_duplicate_values(tmp_path):
    path = tmp_path / "dup.json"
    path.write_text(json.dumps({"classes": [{"value": 1, "name": "Water"},
                                            {"value": 2, "name": "water "}]}))
    with pytest.raises(GeospadeError, match=r"two classes named 'Water' and 'water '") as exc:
        load_scheme(path)
    assert str(path) in str(exc.value)
    path.write_text(json.dumps({"classes": [{"value": 3, "name": "water"},
                                            {"value": 3, "name": "forest"}]}))
    with pytest.raises(GeospadeError,
                       match=r"gives raw value 3 to two classes \('water' and 'forest'\)"):
        load_scheme(path)
    # Names that differ are still fine, and are found ignoring case.
    path.write_text(json.dumps({"classes": [{"value": 1, "name": "Water"},
                                            {"value": 2, "name": "Forest", "color": [1, 2, 3]}]}))
    scheme = load_scheme(path)
    assert scheme.index_of("forest") == 1 and scheme.classes[1].color == (1, 2, 3)


# -- pipeline configs ---------------------------------------------------------------------------


class TypedStages:
    """Stand-ins for the stage functions with the real ones' typed options; they record calls."""

    def __init__(self, counts=None):
        self.calls: list[str] = []
        self.counts = counts or {"train": 12, "val": 4, "test": 0}

    def landscape(self, landcover_path: str | Path, imagery_path: str | Path, width: int = 8,
                  height: int = 8) -> None:
        self.calls.append("landscape")
        Path(landcover_path).write_bytes(b"lc")
        Path(imagery_path).write_bytes(b"im")

    def tile(self, landcover: str | Path, imagery: str | Path, out: str | Path, *,
             size: int = 256, val_fraction: float = 0.0, test_fraction: float = 0.0,
             overwrite: bool = False, quiet: bool = False) -> None:
        self.calls.append("tile")
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "manifest.json").write_text(json.dumps({"counts": self.counts}))

    def train(self, chips, run_dir, config, resume=False, overwrite=False, quiet=False):
        self.calls.append("train")
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        (Path(run_dir) / "checkpoint.pt").write_bytes(b"ckpt")

    def synthesize(self, checkpoint: str | Path, landcover: str | Path, out: str | Path, *,
                   cog: bool = False, device: str | None = None, overwrite: bool = False,
                   quiet: bool = False) -> None:
        self.calls.append("synthesize")
        Path(out).write_bytes(b"tif")

    def evaluate(self, checkpoint, chips, *, out, split="val", segmenter=None, seed=0,
                 inception_weights=None, overwrite=False, quiet=False):
        self.calls.append("evaluate")
        Path(out).write_text(json.dumps({"split": split}))
        Path(out).with_suffix(".png").write_bytes(b"png")

    def functions(self):
        return {"landscape": self.landscape, "tile": self.tile, "train": self.train,
                "synthesize": self.synthesize, "evaluate": self.evaluate}


@pytest.fixture
def stages(monkeypatch):
    fake = TypedStages()
    monkeypatch.setattr(pipeline, "stage_functions", fake.functions)
    return fake


def write_config(tmp_path, tile="size = 64\nval_fraction = 0.2\n", train="steps = 2\n",
                 synthesize="", evaluate="segmenter_steps = 4\n", landscape=None) -> Path:
    (tmp_path / "lc.tif").write_bytes(b"lc")
    (tmp_path / "im.tif").write_bytes(b"im")
    inputs = "" if landscape is not None else 'landcover = "lc.tif"\nimagery = "im.tif"\n'
    text = (f'out = "w"\n[tile]\n{inputs}{tile}[train]\n{train}[synthesize]\n{synthesize}'
            f"[evaluate]\n{evaluate}")
    if landscape is not None:
        text += f"[landscape]\n{landscape}"
    toml = tmp_path / "p.toml"
    toml.write_text(text)
    return toml


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ({"tile": 'size = "big"\n'}, "[tile]: size must be int, not 'big'"),
        ({"tile": "size = 64\nval_fraction = true\n"},
         "[tile]: val_fraction must be float, not True"),
        ({"tile": 'landcover = 5\nimagery = "im.tif"\n'}, "[tile]: landcover must be str, not 5"),
        ({"synthesize": 'cog = "yes"\n'}, "[synthesize]: cog must be bool, not 'yes'"),
        ({"synthesize": "landcover = 1\n"}, "[synthesize]: landcover must be str, not 1"),
        ({"evaluate": 'segmenter_steps = "10"\n'},
         "[evaluate]: segmenter_steps must be int, not '10'"),
        ({"evaluate": "figure = 1\n"}, "[evaluate]: figure must be bool, not 1"),
        ({"evaluate": "colour = 1\n"}, "unknown option(s) in [evaluate]: colour"),
        ({"evaluate": 'split = "validation"\n'},
         "[evaluate]: split must be one of val, test, train, not 'validation'"),
        ({"landscape": 'width = "wide"\n', "tile": "size = 64\nval_fraction = 0.2\n"},
         "[landscape]: width must be int, not 'wide'"),
    ],
)
def test_pipeline_option_types_are_one_line_errors_before_any_work(stages, tmp_path, capsys,
                                                                   tables, message):
    if "landcover" in tables.get("tile", ""):
        toml = write_config(tmp_path)
        toml.write_text(toml.read_text().replace('landcover = "lc.tif"\nimagery = "im.tif"\n',
                                                 tables["tile"]))
    else:
        toml = write_config(tmp_path, **tables)
    code, _, err = run_cli(["run", str(toml)], capsys)
    assert code == 1 and message in one_line_error(err)
    assert stages.calls == [] and not (tmp_path / "w").exists()


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        # val_fraction is tile's default of 0 while evaluate reads the val split
        ({"tile": "size = 64\n"},
         '[evaluate] split = "val" needs val chips, but [tile] val_fraction is 0.0'),
        ({"tile": "size = 64\nval_fraction = 0.2\n", "evaluate": 'split = "test"\n'},
         '[evaluate] split = "test" needs test chips, but [tile] test_fraction is 0.0'),
        ({"tile": "size = 50\nval_fraction = 0.2\n"},
         "[tile] size 50 is not a multiple of the generator's stride 32"),
        ({"tile": "size = 96\nval_fraction = 0.2\n", "train": 'num_upsampling_layers = "more"\n'},
         "[tile] size 96 is not a multiple of the generator's stride 64"),
        ({"train": 'device = "foo"\n'}, "[train]: unknown device 'foo'"),
        ({"synthesize": 'device = "foo"\n'}, "[synthesize]: unknown device 'foo'"),
        ({"evaluate": 'device = "foo"\n'}, "[evaluate]: unknown device 'foo'"),
    ],
)
def test_pipeline_fails_up_front_on_what_would_fail_a_later_stage(stages, tmp_path, capsys,
                                                                  tables, message):
    toml = write_config(tmp_path, **tables)
    code, _, err = run_cli(["run", str(toml)], capsys)
    assert code == 1 and message in one_line_error(err)
    assert stages.calls == [] and not (tmp_path / "w").exists()


def test_pipeline_stops_before_training_when_tiling_gave_the_split_no_chips(stages, tmp_path,
                                                                            capsys):
    stages.counts = {"train": 16, "val": 0, "test": 0}
    code, _, err = run_cli(["run", str(write_config(tmp_path)), "-q"], capsys)
    assert code == 1 and "has no 'val' chips for [evaluate]" in one_line_error(err)
    assert stages.calls == ["tile"]


def test_first_run_that_fails_leaves_no_half_made_work_folder(monkeypatch, tmp_path):
    class Failing(TypedStages):
        def landscape(self, landcover_path, imagery_path, **options):
            Path(landcover_path).write_bytes(b"half")
            raise MemoryError("Unable to allocate 3.08 PiB")

        def tile(self, landcover, imagery, out, **options):
            raise AssertionError("tile ran after a failed landscape")

    fake = Failing()
    monkeypatch.setattr(pipeline, "stage_functions", fake.functions)
    out = tmp_path / "d2"
    with pytest.raises(MemoryError):
        run_demo(out, data="landscape", quiet=True)
    assert not out.exists()
    # An existing work folder stays, without the failed stage's temporary files or folder.
    out.mkdir()
    with pytest.raises(MemoryError):
        run_demo(out, data="landscape", quiet=True)
    assert sorted(p.name for p in out.iterdir()) == [pipeline.STATE_FILE]


def test_touching_an_input_reruns_its_stage_as_the_readme_says(stages, tmp_path):
    toml = write_config(tmp_path)
    run_pipeline(toml, quiet=True)
    stages.calls.clear()
    lc = tmp_path / "lc.tif"
    stat = lc.stat()
    os.utime(lc, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # same bytes, newer mtime
    run_pipeline(toml, quiet=True)
    assert stages.calls == ["tile", "train", "synthesize", "evaluate"]
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "size and modification time of each input file, not of its content" in readme


def test_run_quiet_prints_only_the_output_paths_as_its_help_says(stages, tmp_path, capsys):
    code, out, err = run_cli(["run", str(write_config(tmp_path)), "-q"], capsys)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == [
        "landcover", "imagery", "chips", "checkpoint", "synthetic", "report", "figure"]
    assert lines[4].split()[1] == str(tmp_path / "w" / "synthetic.tif")
    _, help_text, _ = run_cli(["run", "--help"], capsys)
    help_text = " ".join(help_text.split())
    assert "only the paths of the outputs are printed" in help_text


# -- demo ---------------------------------------------------------------------------------------


def test_demo_size_is_bounded_and_the_bound_is_in_the_help(tmp_path, capsys):
    out = tmp_path / "d2"
    code, _, err = run_cli(["demo", "-o", str(out), "--size", "1000000000"], capsys)
    assert code != 0 and "256<=x<=4096" in one_line_error(err)
    assert not out.exists()
    _, help_text, _ = run_cli(["demo", "--help"], capsys)
    assert "at most 4096" in " ".join(help_text.split())


def test_demo_run_time_agrees_in_help_config_and_readme(capsys):
    _, help_text, _ = run_cli(["demo", "--help"], capsys)
    assert "about 5 minutes on two CPU cores" in " ".join(help_text.split())
    assert "about 5 minutes on two CPU cores" in (ROOT / "pipelines" / "demo.toml").read_text()
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "about five minutes on a 2-core CPU" in readme
    assert not re.search(r"\b(3|three) minutes", help_text + readme)


# -- README's Python API ------------------------------------------------------------------------


def test_readme_api_names_every_command_and_only_names_that_exist():
    readme = (ROOT / "README.md").read_text()
    api = readme.split("## Python API", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    used = set(re.findall(r"geospade\.(\w+)\(", api))
    for name in used:
        assert callable(getattr(geospade, name)), name
    function_of = {"tile": "tile", "train": "train", "synthesize": "synthesize",
                   "stitch": "stitch", "evaluate": "evaluate", "run": "run_pipeline",
                   "demo": "run_demo", "generate": "generate"}
    assert set(COMMANDS) == {*function_of, "info"}
    assert {function_of[c] for c in function_of} <= used
    assert "from geospade.info import describe" in api


# -- devices, read-only chip stores and output folders ------------------------------------------


def write_checkpoint(path: Path, chips: Path) -> Path:
    store = open_chip_store(chips)
    torch.manual_seed(0)
    g = Generator(store.scheme.num_classes, len(store.bands), ngf=4, crop_size=store.chip_size,
                  hidden=8)
    save_checkpoint(path, {
        "step": 1, "config": {}, "generator_config": g.config, "scheme": store.scheme.to_dict(),
        "bands": [b.to_dict() for b in store.bands], "chip_size": store.chip_size,
        "generator": g.state_dict(),
    })
    return path


@pytest.fixture
def store_and_checkpoint(chip_store, tmp_path):
    chips = tmp_path / "store" / "chips"
    shutil.copytree(chip_store, chips)
    return chips, write_checkpoint(tmp_path / "checkpoint.pt", chips)


def test_evaluate_unknown_device_is_the_same_one_line_error_as_synthesize(
        store_and_checkpoint, tmp_path, capsys):
    chips, checkpoint = store_and_checkpoint
    code, _, err = run_cli(["evaluate", str(checkpoint), str(chips), "-o",
                            str(tmp_path / "r.json"), "--device", "foo"], capsys)
    assert code == 1 and one_line_error(err) == "geospade: error: unknown device 'foo'\n"
    assert not hasattr(report_module, "resolve_device") or (
        report_module.resolve_device.__module__ == "geospade.models.precision")


def test_evaluate_caches_the_segmenter_in_the_user_cache_when_the_store_is_read_only(
        store_and_checkpoint, tmp_path, monkeypatch, restore_modes):
    chips, checkpoint = store_and_checkpoint
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    read_only(monkeypatch, chips)
    first = evaluate(checkpoint, chips, "val", segmenter=TINY_SEGMENTER, utility=None,
                     device="cpu", quiet=True)
    expected = user_cache_path(chips, TINY_SEGMENTER)
    assert expected.parent == tmp_path / "xdg" / "geospade" / "segmenters"
    assert expected.is_file() and first["segmenter"]["cache"] == str(expected)
    assert not first["segmenter"]["cached"]
    assert any(f"segmenter cached in {expected}" in note and "cannot be written" in note
               for note in first["notes"])
    assert not (chips / ".geospade-cache").exists()
    # The next evaluation of the same store reads it from there.
    second = evaluate(checkpoint, chips, "val", segmenter=TINY_SEGMENTER, utility=None,
                     device="cpu", quiet=True)
    assert second["segmenter"]["cached"] and second["segmenter"]["cache"] == str(expected)
    # A copy of the store (same manifest) elsewhere gets its own file.
    other = tmp_path / "other" / "chips"
    shutil.copytree(chips, other)
    assert user_cache_path(other, TINY_SEGMENTER) != expected


def test_evaluate_trains_uncached_when_nothing_can_be_written(
        store_and_checkpoint, tmp_path, monkeypatch, restore_modes):
    chips, checkpoint = store_and_checkpoint
    xdg = tmp_path / "xdg"
    xdg.mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    read_only(monkeypatch, tmp_path)
    report = evaluate(checkpoint, chips, "val", segmenter=TINY_SEGMENTER, utility=None,
                     device="cpu", quiet=True)
    assert report["segmenter"]["cache"] is None
    assert report["methods"]["model"]["segmentation"]["miou"] is not None
    assert any(note.startswith("segmenter not cached") for note in report["notes"])
    assert not list(xdg.iterdir())


def test_evaluate_refuses_an_unwritable_output_folder_before_any_work(
        store_and_checkpoint, tmp_path, monkeypatch, capsys, restore_modes):
    chips, checkpoint = store_and_checkpoint
    folder = tmp_path / "readonly"
    folder.mkdir()
    read_only(monkeypatch, folder)

    def no_work(*args, **kwargs):
        raise AssertionError("evaluate did the work before checking its output folder")

    monkeypatch.setattr(report_module, "evaluate_painter", no_work)
    code, _, err = run_cli(["evaluate", str(checkpoint), str(chips), "-o",
                            str(folder / "r.json")], capsys)
    assert code == 1
    assert one_line_error(err) == f"geospade: error: output folder {folder} is not writable\n"


def test_tile_refuses_an_unwritable_output_folder_without_naming_a_temporary(
        landscape_pair, tmp_path, monkeypatch, capsys, restore_modes):
    landcover, imagery = landscape_pair
    folder = tmp_path / "readonly"
    folder.mkdir()
    read_only(monkeypatch, folder)
    code, _, err = run_cli(["tile", str(landcover), str(imagery), "-o", str(folder / "c"),
                            "--size", "64", "-q"], capsys)
    assert code == 1
    assert one_line_error(err) == f"geospade: error: output folder {folder} is not writable\n"
    assert list(folder.iterdir()) == []


# -- training previews --------------------------------------------------------------------------


@pytest.mark.parametrize(("preview_every", "previews"), [(5, []), (2, ["step_0000002.png"])])
def test_previews_folder_appears_only_when_training_reaches_preview_every(
        chip_store, tmp_path, preview_every, previews):
    geospade.train(chip_store, tmp_path / "run", steps=2, batch_size=2, ngf=4, ndf=4, num_d=1,
                   n_layers_d=1, norm="clade", vgg_weights="off", val_every=0,
                   preview_every=preview_every, device="cpu", quiet=True)
    found = sorted(p.name for p in (tmp_path / "run" / "previews").glob("*.png"))
    assert found == previews
    assert (tmp_path / "run" / "previews").exists() == bool(previews)
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "so the folder only appears once training reaches that step" in readme
