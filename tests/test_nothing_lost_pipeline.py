"""`geospade run` loses nothing a user has: its work folder, the inputs a config names, and one
run per folder; every path in a config is relative to the config file; and settings that would
fail a later stage are refused before the first one (issue 16)."""

import functools
import json
import os
from pathlib import Path

import pytest
from cli_runner import run_cli

from geospade import pipeline
from geospade.errors import GeospadeError
from geospade.models import Generator
from geospade.pipeline import STATE_FILE, run_pipeline, stage_functions


def one_line_error(err: str) -> str:
    assert err.startswith("geospade: error: ") and err.count("\n") == 1, err
    return err


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


class Stages:
    """Stand-ins with the real stage functions' signatures (so the pipeline checks options and
    types as for the real ones); they write small outputs and record each call."""

    def __init__(self):
        self.calls: list[str] = []
        self.kwargs: dict[str, dict] = {}
        self.during_train = None  # called inside the train stage (the run is under way)
        real = stage_functions()
        self.functions = {name: self._stand_in(name, real[name]) for name in real}

    def _stand_in(self, name, real):
        body = getattr(self, f"_{name}")

        @functools.wraps(real)
        def stage(*args, **kwargs):
            self.calls.append(name)
            self.kwargs[name] = kwargs
            return body(*args, **kwargs)

        return stage

    def _landscape(self, landcover_path, imagery_path, **options):
        Path(landcover_path).write_bytes(b"lc")
        Path(imagery_path).write_bytes(b"im")

    def _tile(self, landcover, imagery, out, **options):
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "manifest.json").write_text(
            json.dumps({"counts": {"train": 8, "val": 2, "test": 0}}))

    def _train(self, chips, run_dir, config, **options):
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        (Path(run_dir) / "checkpoint.pt").write_bytes(b"ckpt")
        if self.during_train is not None:
            self.during_train()

    def _synthesize(self, checkpoint, landcover, out, **options):
        if options.get("tiles_only"):
            Path(options["tiles_only"]).mkdir(parents=True, exist_ok=True)
            (Path(options["tiles_only"]) / "t_r0.tif").write_bytes(b"tile")
        else:
            Path(out).write_bytes(b"tif")
        if options.get("save_landcover"):
            Path(options["save_landcover"]).write_bytes(b"classes")

    def _evaluate(self, checkpoint, chips, split="val", out=None, **options):
        Path(out).write_text(json.dumps({"split": split}))
        if options.get("figure", True):
            Path(out).with_suffix(".png").write_bytes(b"png")


@pytest.fixture
def stages(monkeypatch):
    fake = Stages()
    monkeypatch.setattr(pipeline, "stage_functions", lambda: fake.functions)
    return fake


def write_config(folder: Path, out: str = "w", tile: str = "", train: str = "",
                 synthesize: str = "", evaluate: str = "", inputs: bool = True) -> Path:
    """A pipeline config in ``folder`` reading ``folder/lc.tif`` and ``folder/im.tif``."""
    folder.mkdir(parents=True, exist_ok=True)
    files = ""
    if inputs:
        (folder / "lc.tif").write_bytes(b"lc")
        (folder / "im.tif").write_bytes(b"im")
        files = 'landcover = "lc.tif"\nimagery = "im.tif"\n'
    toml = folder / "p.toml"
    toml.write_text(
        f'out = "{out}"\n[tile]\n{files}size = 64\nval_fraction = 0.2\n{tile}'
        f'[train]\nsteps = 2\nvgg_weights = "off"\n{train}[synthesize]\n{synthesize}'
        f"[evaluate]\nsegmenter_steps = 2\n{evaluate}")
    return toml


# -- A: the work folder and what a config reads -------------------------------------------------


def test_run_refuses_an_existing_folder_that_is_not_a_pipeline_work_folder(stages, tmp_path,
                                                                            capsys):
    mine = tmp_path / "mine"
    (mine / "chips").mkdir(parents=True)
    (mine / "chips" / "field-notes.txt").write_text("years of work")
    (mine / "synthetic.tif").write_bytes(b"my own mosaic")
    before = snapshot(mine)
    toml = write_config(tmp_path)
    code, _, err = run_cli(["run", str(toml), "-o", str(mine), "-q"], capsys)
    assert code == 1
    assert (f"work folder {mine} exists and is not a geospade pipeline work folder"
            in one_line_error(err))
    assert stages.calls == [] and snapshot(mine) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["im.tif", "lc.tif", "mine", "p.toml"]


def test_run_refuses_a_file_as_work_folder(stages, tmp_path, capsys):
    toml = write_config(tmp_path)
    (tmp_path / "file").write_text("keep")
    code, _, err = run_cli(["run", str(toml), "-o", str(tmp_path / "file"), "-q"], capsys)
    assert code == 1 and "exists and is not a folder" in one_line_error(err)
    assert (tmp_path / "file").read_text() == "keep" and stages.calls == []


def test_run_takes_a_new_or_empty_folder_and_continues_its_own(stages, tmp_path, capsys):
    toml = write_config(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    for out in (tmp_path / "new" / "nested", empty):
        code, _, err = run_cli(["run", str(toml), "-o", str(out), "-q"], capsys)
        assert code == 0, err
        assert (out / STATE_FILE).is_file() and (out / "synthetic.tif").is_file()
    # A pipeline work folder is continued (nothing to do), without --overwrite.
    stages.calls.clear()
    code, _, err = run_cli(["run", str(toml), "-o", str(empty), "-q"], capsys)
    assert code == 0, err
    assert stages.calls == []
    # No lock file is left behind.
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".geospade-lock")]


@pytest.mark.parametrize(
    ("where", "setting", "what"),
    [
        ("chips/lc.tif", ("tile", "landcover"), "[tile] landcover"),
        ("chips/im.tif", ("tile", "imagery"), "[tile] imagery"),
        ("chips/aoi.geojson", ("tile", "aoi"), "[tile] aoi"),
        ("run/scheme.json", ("tile", "scheme"), "[tile] scheme"),
        ("chips/edits.gpkg", ("synthesize", "edits"), "[synthesize] edits"),
        ("synthetic.tif", ("synthesize", "landcover"), "[synthesize] landcover"),
        ("run/vgg19.pth", ("train", "vgg_weights"), "[train] vgg_weights"),
        ("report.json", ("evaluate", "inception_weights"), "[evaluate] inception_weights"),
    ],
)
def test_run_refuses_a_config_whose_inputs_lie_where_a_stage_writes(stages, tmp_path, capsys,
                                                                    where, setting, what):
    out = tmp_path / "w"
    out.mkdir()
    (out / STATE_FILE).write_text(json.dumps({"version": 1, "stages": {}}))
    source = out / where
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(b"the user's only copy")
    table, key = setting
    extra = {"tile": "", "train": "", "synthesize": "", "evaluate": ""}
    if key in ("landcover", "imagery") and table == "tile":
        toml = write_config(tmp_path)
        name = {"landcover": "lc.tif", "imagery": "im.tif"}[key]
        toml.write_text(toml.read_text().replace(f'{key} = "{name}"', f'{key} = "w/{where}"'))
    else:
        if key == "edits":
            extra[table] = f'edits = "w/{where}"\nedit_field = "class"\n'
        else:
            extra[table] = f'{key} = "w/{where}"\n'
        if key == "vgg_weights":
            toml = write_config(tmp_path, **extra)
            toml.write_text(toml.read_text().replace('vgg_weights = "off"\n', ""))
        else:
            toml = write_config(tmp_path, **extra)
    before = snapshot(out)
    code, _, err = run_cli(["run", str(toml), "-q"], capsys)
    assert code == 1
    message = one_line_error(err)
    assert what in message and str(source) in message, message
    assert stages.calls == [] and snapshot(out) == before


def test_a_second_run_on_the_same_work_folder_is_refused(stages, tmp_path):
    toml = write_config(tmp_path)
    refused = []

    def second_run():
        stages.during_train = None
        with pytest.raises(GeospadeError) as exc:
            run_pipeline(toml, quiet=True)
        refused.append(str(exc.value))

    stages.during_train = second_run
    result = run_pipeline(toml, quiet=True)
    assert result.status["evaluate"] == "ran"
    assert len(refused) == 1
    assert f"{tmp_path / 'w'} is being written by another geospade run" in refused[0]
    assert stages.calls == ["tile", "train", "synthesize", "evaluate"]
    # The lock went with the run: the next one may start.
    run_pipeline(toml, quiet=True, force="synthesize")


# -- B: paths relative to the config file, and checks before any stage ---------------------------


def run_from_another_folder(toml, tmp_path, monkeypatch, capsys):
    """Run the pipeline ``toml`` successfully from an empty folder beside it; return that folder."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, _, err = run_cli(["run", str(toml), "-q"], capsys)
    assert code == 0, err
    return elsewhere


def test_output_and_weight_paths_are_relative_to_the_config_file(stages, tmp_path, monkeypatch,
                                                                 capsys):
    (tmp_path / "vgg19.pth").write_bytes(b"weights")
    toml = write_config(tmp_path, synthesize='save_landcover = "classes.tif"\n')
    toml.write_text(toml.read_text().replace('vgg_weights = "off"', 'vgg_weights = "vgg19.pth"'))
    elsewhere = run_from_another_folder(toml, tmp_path, monkeypatch, capsys)
    assert stages.kwargs["synthesize"]["save_landcover"] == tmp_path / "classes.tif"
    assert (tmp_path / "classes.tif").read_bytes() == b"classes"
    assert not list(elsewhere.iterdir())


def test_tiles_only_is_relative_to_the_config_file(stages, tmp_path, monkeypatch, capsys):
    toml = write_config(tmp_path, synthesize='tiles_only = "tiles"\n')
    elsewhere = run_from_another_folder(toml, tmp_path, monkeypatch, capsys)
    assert stages.kwargs["synthesize"]["tiles_only"] == tmp_path / "tiles"
    assert (tmp_path / "tiles" / "t_r0.tif").is_file()
    assert not list(elsewhere.iterdir())
    # The tiles are the stage's output: a second run skips it.
    stages.calls.clear()
    code, _, err = run_cli(["run", str(toml), "-q"], capsys)
    assert code == 0, err
    assert stages.calls == []


def test_vgg_weights_reach_train_resolved_against_the_config_file(stages, tmp_path, monkeypatch):
    seen = {}
    train = stages.functions["train"]

    @functools.wraps(train)
    def recording(chips, run_dir, config, **options):
        seen.update(config)
        return train(chips, run_dir, config, **options)

    stages.functions["train"] = recording
    (tmp_path / "vgg19.pth").write_bytes(b"weights")
    toml = write_config(tmp_path)
    toml.write_text(toml.read_text().replace('vgg_weights = "off"', 'vgg_weights = "vgg19.pth"'))
    monkeypatch.chdir(tmp_path.parent)
    run_pipeline(toml, quiet=True)
    assert seen["vgg_weights"] == str(tmp_path / "vgg19.pth")


@pytest.fixture
def real_inputs(landscape_pair, tmp_path):
    """A config folder whose land cover and imagery are real 256 x 256 GeoTIFFs."""
    landcover, imagery = landscape_pair
    folder = tmp_path / "cfg"
    folder.mkdir()
    os.symlink(landcover, folder / "lc.tif")
    os.symlink(imagery, folder / "im.tif")
    return folder


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ({"synthesize": 'window = "0,0,300,10"\n'},
         "[synthesize]: --window 0,0,300,10 reaches outside the land cover (256x256 px)"),
        ({"synthesize": 'window = "a,b"\n'}, "[synthesize]: --window must be COL_OFF,ROW_OFF"),
        ({"synthesize": 'bbox = "0,0,10,10"\n'},
         "[synthesize]: --bbox 0,0,10,10 does not overlap the land cover"),
        ({"synthesize": 'bbox = "5,5,1,1"\n'}, "[synthesize]: --bbox must be MINX,MINY,MAXX,MAXY"),
        ({"synthesize": 'window = "0,0,8,8"\nbbox = "0,0,1,1"\n'},
         "[synthesize]: give --bbox or --window, not both"),
        ({"synthesize": "overlap = 40\n"},
         "[synthesize]: --overlap must be between 0 and 32 (half the 64-pixel window), not 40"),
        ({"synthesize": 'edit_field = "class"\n'}, "[synthesize]: --edit-field needs --edits"),
        ({"synthesize": 'style = "lc.tif"\n'},
         "[synthesize] style needs a generator with a style encoder: set [train] use_vae = true"),
        ({"train": 'vgg_weights = "missing.pth"\n'}, "[train] input not found: "),
    ],
)
def test_settings_that_would_fail_a_later_stage_are_refused_before_any(
        stages, real_inputs, capsys, tables, message):
    toml = write_config(real_inputs, inputs=False, **tables)
    text = toml.read_text().replace(
        "[tile]\n", '[tile]\nlandcover = "lc.tif"\nimagery = "im.tif"\n')
    if "vgg_weights" in tables.get("train", ""):
        text = text.replace('vgg_weights = "off"\n', "")
    toml.write_text(text)
    code, _, err = run_cli(["run", str(toml), "-q"], capsys)
    assert code == 1 and message in one_line_error(err), err
    assert stages.calls == [] and not (real_inputs / "w").exists()


def test_a_window_is_checked_against_the_landscape_it_will_synthesize(stages, tmp_path, capsys):
    toml = write_config(tmp_path, inputs=False, synthesize='window = "0,0,64,200"\n')
    toml.write_text(toml.read_text() + "[landscape]\nwidth = 128\nheight = 128\n")
    code, _, err = run_cli(["run", str(toml), "-q"], capsys)
    assert code == 1
    assert "--window 0,0,64,200 reaches outside the land cover (128x128 px)" in one_line_error(err)
    assert stages.calls == [] and not (tmp_path / "w").exists()


def test_style_with_a_vae_generator_passes_the_early_check(stages, tmp_path, capsys):
    (tmp_path / "style.tif").write_bytes(b"st")
    toml = write_config(tmp_path, train="use_vae = true\n", synthesize='style = "style.tif"\n')
    code, _, err = run_cli(["run", str(toml), "-q"], capsys)
    assert code == 0, err
    assert stages.kwargs["synthesize"]["style"] == tmp_path / "style.tif"


# -- E: a chip size of 0 or less --------------------------------------------------------------


@pytest.mark.parametrize("size", [0, -32])
def test_a_chip_size_of_zero_or_less_says_it_must_be_positive(stages, tmp_path, capsys, size):
    toml = write_config(tmp_path, tile="")
    toml.write_text(toml.read_text().replace("size = 64", f"size = {size}"))
    code, _, err = run_cli(["run", str(toml), "-q"], capsys)
    assert code == 1
    assert (f"[tile] size {size} must be a positive multiple of the generator's stride 32"
            in one_line_error(err))
    with pytest.raises(GeospadeError, match=rf"crop size {size} must be a positive multiple "
                                            "of the generator's stride 32"):
        Generator(6, 4, ngf=4, crop_size=size)
