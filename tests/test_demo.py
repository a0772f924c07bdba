"""`geospade demo`: end to end on the generated landscape at a reduced size (every output, the
report, a skipping rerun), and the real demo data installed with geospade resolves and tiles."""

import json
from pathlib import Path

import pytest
import rasterio
from cli_runner import run_cli

from geospade.cli import main
from geospade.demo import DEMO_DATA, demo_config, describe_result, run_demo
from geospade.errors import GeospadeError
from geospade.pipeline import build_stages, pipeline_files
from geospade.raster.tiling import tile
from geospade.toml_files import read_toml

ROOT = Path(__file__).resolve().parents[1]

SMALL = {
    "landscape": {"width": 256, "height": 256},
    "train": {"steps": 2, "checkpoint_every": 2, "preview_every": 0},
    "evaluate": {"segmenter_steps": 5},
}


@pytest.mark.slow
def test_demo_end_to_end_small_then_rerun_skips(tmp_path):
    out = tmp_path / "demo"
    result = run_demo(out, data="landscape", overrides=SMALL, quiet=True)
    assert set(result.status.values()) == {"ran"}
    for name in ("landscape/landcover.tif", "chips/manifest.json", "run/checkpoint.pt",
                 "synthetic.tif", "report.json", "report.png"):
        assert (out / name).is_file(), name
    text = describe_result(result)
    for key in ("synthetic", "checkpoint", "report", "figure", "chips"):
        assert str(result.paths[key]) in text
    assert "class-mean" in text and "shuffled real" in text and "texture" in text

    # The synthetic COG is on the land cover's grid, with one band per imagery band.
    with rasterio.open(out / "landscape" / "landcover.tif") as lc, \
            rasterio.open(out / "synthetic.tif") as syn:
        assert (syn.width, syn.height, syn.crs, syn.transform) == (
            lc.width, lc.height, lc.crs, lc.transform)
        assert syn.count == 4 and syn.dtypes[0] == "uint8"
        assert syn.read(1).std() > 0

    report = json.loads((out / "report.json").read_text())
    assert report == result.report
    assert report["split"] == "val" and report["num_chips"] > 0
    assert report["methods"]["class_mean"]["texture"]["mean_ratio"] < 0.05
    assert report["methods"]["model"]["texture"]["mean_ratio"] > 0.0
    manifest = json.loads((out / "chips" / "manifest.json").read_text())
    assert manifest["chip_size"] == demo_config(data="landscape")["tile"]["size"]

    # Same settings again: every stage is skipped, nothing is rewritten.
    state = (out / "pipeline-state.json").read_text()
    mtime = (out / "synthetic.tif").stat().st_mtime_ns
    messages = []
    again = run_demo(out, data="landscape", overrides=SMALL, say=messages.append)
    assert set(again.status.values()) == {"skipped"} and len(messages) == 5
    assert (out / "pipeline-state.json").read_text() == state
    assert (out / "synthetic.tif").stat().st_mtime_ns == mtime


def test_demo_config_is_the_installed_pipeline_with_overrides(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for data, name in DEMO_DATA.items():
        packaged = read_toml(pipeline_files()[name], "demo config")
        cfg = demo_config(None, {"train": {"steps": 3}}, data=data)
        # Relative paths resolve against the current folder, never the installed package.
        assert cfg.pop("_base") == str(tmp_path)
        assert cfg["train"].pop("steps") == 3 and packaged["train"].pop("steps") == 1500
        assert cfg == packaged
    assert demo_config(tmp_path / "w")["out"] == str(tmp_path / "w")
    with pytest.raises(GeospadeError, match=r"no \[landscape\] table .*data='landscape'"):
        demo_config(overrides={"landscape": {"width": 256}})


def test_the_installed_real_demo_data_resolves_and_tiles(tmp_path):
    """pipelines/demo.toml names the Zion data with package: paths; they resolve to the files
    installed with geospade and tile with the demo's settings into train and val chips."""
    config = demo_config(tmp_path / "work")
    tile_stage = next(s for s in build_stages(config, tmp_path / "work") if s.name == "tile")
    landcover, imagery, scheme = tile_stage.inputs
    data = ROOT / "geospade" / "demo_data"
    assert (landcover, imagery, scheme) == (data / "zion_nlcd8.tif",
                                            data / "zion_landsat8_b2345.tif",
                                            data / "scheme-nlcd8.json")
    options = {k: v for k, v in config["tile"].items() if k not in ("landcover", "imagery")}
    options["scheme"] = str(scheme)
    summary = tile(landcover, imagery, tmp_path / "chips", quiet=True, **options)
    assert summary.warped  # Landsat in EPSG:32612 onto the NLCD grid in EPSG:26912
    assert summary.counts["train"] > 150 and summary.counts["val"] > 20
    assert summary.class_names[0] == "water" and len(summary.class_names) == 8
    assert [b.dtype for b in summary.bands] == ["uint16"] * 4
    assert [b.name for b in summary.bands] == ["B2_blue", "B3_green", "B4_red", "B5_nir"]


def test_demo_refuses_size_without_the_landscape(tmp_path, capsys):
    code, _, err = run_cli(["demo", "-o", str(tmp_path / "d"), "--size", "256"], capsys)
    assert code == 2 and "--size sets the generated landscape's size" in err
    assert not (tmp_path / "d").exists()


def test_demo_refuses_an_output_path_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(SystemExit) as exc:
        main(["demo", "-o", str(target), "--data", "landscape", "--size", "256",
              "--steps", "1"])
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert err.startswith("geospade: error: ") and err.count("\n") == 1
    assert target.read_text() == "x"


def test_demo_help_states_the_packaged_step_count(capsys):
    # `geospade demo` trains the pipeline's steps unless --steps is given; its help says how many.
    code, out, _ = run_cli(["demo", "--help"], capsys)
    assert code == 0
    help_text = " ".join(out.split())
    steps = {demo_config(data=d)["train"]["steps"] for d in DEMO_DATA}
    assert len(steps) == 1
    assert f"[default: {steps.pop()}, as in pipelines/demo.toml]" in help_text
