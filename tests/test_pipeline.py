"""`geospade run`: stage skipping and rerun logic, resume, config files and bad configs."""

import json
import os
from pathlib import Path

import pytest

from geospade import pipeline
from geospade.cli import main
from geospade.errors import GeospadeError
from geospade.pipeline import (
    STATE_FILE,
    build_stages,
    find_config,
    load_config,
    packaged_path,
    pipeline_files,
    run_pipeline,
)

ROOT = Path(__file__).resolve().parents[1]


class FakeStages:
    """Stand-ins for the stage functions: they write their outputs and record each call."""

    def __init__(self):
        self.calls: list[str] = []
        self.train_calls: list[dict] = []
        self.fail_train = False

    def landscape(self, landcover_path, imagery_path, width=8, height=8, seed=0):
        self.calls.append("landscape")
        Path(landcover_path).write_bytes(b"lc%d" % seed)
        Path(imagery_path).write_bytes(b"im%d" % seed)

    def tile(self, landcover, imagery, out, *, size=64, overwrite=False, quiet=False):
        self.calls.append("tile")
        assert Path(landcover).is_file() and Path(imagery).is_file()
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "manifest.json").write_text(json.dumps({"size": size}))

    def train(self, chips, run_dir, config, resume=False, overwrite=False, quiet=False):
        self.calls.append("train")
        self.train_calls.append({"resume": resume, "overwrite": overwrite})
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        (Path(run_dir) / "checkpoint.pt").write_bytes(b"ckpt%d" % config["steps"])
        if self.fail_train:
            raise KeyboardInterrupt

    def synthesize(self, checkpoint, landcover, out, *, cog=False, overwrite=False, quiet=False):
        self.calls.append("synthesize")
        Path(out).write_bytes(b"tif")

    def evaluate(self, checkpoint, chips, *, out, split="val", segmenter=None, seed=0,
                 inception_weights=None, overwrite=False, quiet=False):
        self.calls.append("evaluate")
        Path(out).write_text(json.dumps({"split": split, "steps": segmenter.steps}))
        Path(out).with_suffix(".png").write_bytes(b"png")

    def functions(self):
        return {"landscape": self.landscape, "tile": self.tile, "train": self.train,
                "synthesize": self.synthesize, "evaluate": self.evaluate}


@pytest.fixture
def fake(monkeypatch):
    stages = FakeStages()
    monkeypatch.setattr(pipeline, "stage_functions", stages.functions)
    return stages


def config(tmp_path, **changes):
    cfg = {
        "out": "work", "_base": str(tmp_path),
        "landscape": {"width": 8, "height": 8, "seed": 0},
        "tile": {"size": 64},
        "train": {"steps": 5, "ngf": 8},
        "synthesize": {"cog": True},
        "evaluate": {"split": "val", "segmenter_steps": 10},
    }
    for stage, options in changes.items():
        cfg[stage] = {**cfg[stage], **options}
    return cfg


ALL = ["landscape", "tile", "train", "synthesize", "evaluate"]


def test_second_run_skips_every_stage(fake, tmp_path):
    first = run_pipeline(config(tmp_path), quiet=True)
    assert fake.calls == ALL
    assert set(first.status.values()) == {"ran"}
    assert first.report == {"split": "val", "steps": 10}
    assert first.paths["synthetic"] == tmp_path / "work" / "synthetic.tif"
    fake.calls.clear()
    second = run_pipeline(config(tmp_path), quiet=True)
    assert fake.calls == []
    assert set(second.status.values()) == {"skipped"}
    assert second.report == first.report


def test_changed_setting_reruns_that_stage_and_the_later_ones(fake, tmp_path):
    run_pipeline(config(tmp_path), quiet=True)
    fake.calls.clear()
    result = run_pipeline(config(tmp_path, train={"steps": 7}), quiet=True)
    assert fake.calls == ["train", "synthesize", "evaluate"]
    assert result.status["tile"] == "skipped" and result.status["train"] == "ran"
    assert (tmp_path / "work" / "run" / "checkpoint.pt").read_bytes() == b"ckpt7"
    fake.calls.clear()
    run_pipeline(config(tmp_path, train={"steps": 7}, evaluate={"segmenter_steps": 3}),
                 quiet=True)
    assert fake.calls == ["evaluate"]


def test_missing_output_or_changed_input_file_reruns(fake, tmp_path):
    run_pipeline(config(tmp_path), quiet=True)
    fake.calls.clear()
    (tmp_path / "work" / "synthetic.tif").unlink()
    run_pipeline(config(tmp_path), quiet=True)
    assert fake.calls == ["synthesize", "evaluate"]
    fake.calls.clear()
    imagery = tmp_path / "work" / "landscape" / "imagery.tif"
    imagery.write_bytes(b"edited by hand")
    run_pipeline(config(tmp_path), quiet=True)
    assert fake.calls == ["tile", "train", "synthesize", "evaluate"]


def test_force_reruns_from_the_named_stage(fake, tmp_path):
    run_pipeline(config(tmp_path), quiet=True)
    fake.calls.clear()
    run_pipeline(config(tmp_path), force="synthesize", quiet=True)
    assert fake.calls == ["synthesize", "evaluate"]
    fake.calls.clear()
    run_pipeline(config(tmp_path), force="all", quiet=True)
    assert fake.calls == ALL


def test_interrupted_training_is_resumed(fake, tmp_path):
    fake.fail_train = True
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(config(tmp_path), quiet=True)
    state = json.loads((tmp_path / "work" / STATE_FILE).read_text())
    assert state["stages"]["train"]["status"] == "running"
    assert "synthesize" not in state["stages"]
    fake.fail_train = False
    fake.calls.clear()
    result = run_pipeline(config(tmp_path), quiet=True)
    assert fake.calls == ["train", "synthesize", "evaluate"]
    assert result.status["train"] == "resumed"
    assert fake.train_calls[-1] == {"resume": True, "overwrite": False}


def test_cli_runs_a_toml_with_paths_relative_to_it(fake, tmp_path, capsys):
    (tmp_path / "lc.tif").write_bytes(b"lc")
    (tmp_path / "im.tif").write_bytes(b"im")
    toml = tmp_path / "p.toml"
    toml.write_text(
        'out = "w"\n[tile]\nlandcover = "lc.tif"\nimagery = "im.tif"\n'
        '[train]\nsteps = 2\n[synthesize]\n[evaluate]\nsegmenter_steps = 4\n'
    )
    main(["run", str(toml), "--quiet"])
    assert fake.calls == ["tile", "train", "synthesize", "evaluate"]
    out = capsys.readouterr().out
    assert f"synthetic   {tmp_path / 'w' / 'synthetic.tif'}" in out
    fake.calls.clear()
    main(["run", str(toml), "--quiet", "--force", "train"])
    assert fake.calls == ["train", "synthesize", "evaluate"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('out = "w"\n[tile]\n[train]\n[synthesize]\n[evaluate]\n[extra]\n',
         "unknown section(s) in pipeline config: extra"),
        ('out = "w"\n[tile]\nlandcover = "lc.tif"\nimagery = "im.tif"\n[train]\n[synthesize]\n',
         "lacks a [evaluate] table"),
        ('out = "w"\n[tile]\nlandcover = "lc.tif"\nimagery = "im.tif"\n[train]\nsteps = 0\n'
         '[synthesize]\n[evaluate]\n', "steps must be positive"),
        ('out = "w"\n[tile]\nlandcover = "lc.tif"\nimagery = "im.tif"\nsize = 64\ncolour = 1\n'
         '[train]\n[synthesize]\n[evaluate]\n', "unknown option(s) in [tile]: colour"),
        ('out = "w"\n[tile]\nlandcover = "missing.tif"\nimagery = "im.tif"\n[train]\n'
         '[synthesize]\n[evaluate]\n', "[tile] input not found"),
        ('out = "w"\n[tile\n', "is not valid TOML"),
    ],
)
def test_bad_configs_are_one_line_errors_before_any_work(fake, tmp_path, capsys, text, message):
    (tmp_path / "lc.tif").write_bytes(b"lc")
    (tmp_path / "im.tif").write_bytes(b"im")
    toml = tmp_path / "p.toml"
    toml.write_text(text)
    with pytest.raises(SystemExit) as exc:
        main(["run", str(toml)])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("geospade: error: ") and err.count("\n") == 1
    assert message in err
    assert fake.calls == []
    assert not (tmp_path / "w").exists()


class AnyOptionStages(FakeStages):
    """Stand-ins that take any option (the shipped configs set many) and record them."""

    def __init__(self):
        super().__init__()
        self.options: dict[str, dict] = {}

    def functions(self):
        def stage(name, write):
            def run(*args, **options):
                self.calls.append(name)
                self.options[name] = {"args": args, **options}
                write(*args, **options)
            return run

        def tile(lc, im, out, **_):
            Path(out).mkdir(parents=True, exist_ok=True)
            (Path(out) / "manifest.json").write_text("{}")

        def train(chips, run_dir, config, **_):
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            (Path(run_dir) / "checkpoint.pt").write_bytes(b"ckpt")

        def evaluate(checkpoint, chips, *, out, **_):
            Path(out).write_text(json.dumps({"split": "val"}))
            Path(out).with_suffix(".png").write_bytes(b"png")

        return {
            "landscape": stage("landscape", lambda lc, im, **_: (Path(lc).write_bytes(b"lc"),
                                                                 Path(im).write_bytes(b"im"))),
            "tile": stage("tile", tile), "train": stage("train", train),
            "synthesize": stage("synthesize", lambda c, lc, out, **_: Path(out).write_bytes(b"t")),
            "evaluate": stage("evaluate", evaluate),
        }


@pytest.fixture
def any_options(monkeypatch):
    stages = AnyOptionStages()
    monkeypatch.setattr(pipeline, "stage_functions", stages.functions)
    return stages


def test_run_takes_an_installed_pipeline_by_name_and_works_in_the_current_folder(
        any_options, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    installed = ROOT / "geospade" / "pipelines"
    assert pipeline_files() == {p.stem: p for p in installed.glob("*.toml")}
    assert set(pipeline_files()) == {"demo", "demo-landscape", "chesapeake"}
    main(["run", "demo", "-q"])
    assert any_options.calls == ALL[1:]
    # The real demo data, installed with geospade, named by package: paths.
    lc, im = any_options.options["tile"]["args"][:2]
    assert (lc, im) == (installed.parent / "demo_data" / "zion_nlcd8.tif",
                        installed.parent / "demo_data" / "zion_landsat8_b2345.tif")
    assert any_options.options["tile"]["scheme"] == str(
        installed.parent / "demo_data" / "scheme-nlcd8.json")
    # The work folder is in the current folder, never beside the installed config.
    assert (tmp_path / "geospade-demo" / "synthetic.tif").is_file()
    assert not (installed / "geospade-demo").exists()
    assert f"synthetic   {tmp_path / 'geospade-demo' / 'synthetic.tif'}" in capsys.readouterr().out


def test_an_unknown_config_names_the_installed_pipelines(fake, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["run", "nope"])
    err = capsys.readouterr().err
    assert exc.value.code == 1 and err.count("\n") == 1
    assert ("pipeline config not found: nope (give a TOML file or an installed pipeline: "
            "chesapeake, demo, demo-landscape)") in err
    assert find_config("demo.toml") == pipeline_files()["demo"]
    (tmp_path / "demo").write_text('out = "w"')  # a file of that name comes first
    assert find_config("demo") == Path("demo")


def test_package_paths_name_installed_files_and_are_never_outputs(any_options, tmp_path):
    data = ROOT / "geospade" / "demo_data"
    assert packaged_path("package:demo_data/zion_nlcd8.tif") == data / "zion_nlcd8.tif"
    for bad in ("package:", "package:../pyproject.toml", "package:/etc/passwd"):
        with pytest.raises(GeospadeError, match="does not name a file installed with geospade"):
            packaged_path(bad)
    cfg = {"out": "package:demo_data/work", "_base": str(tmp_path),
           "tile": {"landcover": "package:demo_data/zion_nlcd8.tif",
                    "imagery": "package:demo_data/zion_landsat8_b2345.tif"},
           "train": {"steps": 1}, "synthesize": {}, "evaluate": {"split": "train"}}
    with pytest.raises(GeospadeError, match="cannot be a package: path"):
        run_pipeline(cfg, quiet=True)
    cfg["out"] = "w"
    cfg["synthesize"] = {"save_landcover": "package:demo_data/lc.tif"}
    with pytest.raises(GeospadeError, match=r"\[synthesize\] save_landcover cannot be"):
        run_pipeline(cfg, quiet=True)
    assert any_options.calls == [] and sorted(p.name for p in data.iterdir()) == [
        "README.md", "scheme-nlcd8.json", "zion_landsat8_b2345.tif", "zion_nlcd8.tif"]


def test_shipped_configs_are_valid_for_the_real_stage_functions(tmp_path):
    for name in ("demo", "demo-landscape", "chesapeake"):
        stages = build_stages(load_config(ROOT / "pipelines" / f"{name}.toml"), tmp_path)
        names = [s.name for s in stages]
        assert names[-4:] == ["tile", "train", "synthesize", "evaluate"]
        assert ("landscape" in names) == (name == "demo-landscape")
    assert not os.listdir(tmp_path)


def test_synthesize_table_takes_the_codecs_synthesize_takes(tmp_path):
    """jpeg/webp (synthesize --compress) pass the pre-stage check; an unknown codec does not."""
    from geospade.errors import GeospadeError
    from geospade.pipeline import check_synthesis_options

    for codec in ("jpeg", "webp", "zstd"):
        check_synthesis_options({"compress": codec}, None, 64, False, tmp_path / "s.tif")
    with pytest.raises(GeospadeError, match="unknown compression 'gif'"):
        check_synthesis_options({"compress": "gif"}, None, 64, False, tmp_path / "s.tif")
