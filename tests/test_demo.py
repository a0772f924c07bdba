"""`geospade demo` end to end at a reduced size: every output, the report, and a skipping rerun."""

import json

import pytest
import rasterio
from cli_runner import run_cli

from geospade.cli import main
from geospade.demo import DEMO_CONFIG, demo_config, describe_result, run_demo

SMALL = {
    "landscape": {"width": 256, "height": 256},
    "train": {"steps": 2, "checkpoint_every": 2, "preview_every": 0},
    "evaluate": {"segmenter_steps": 5},
}


@pytest.mark.slow
def test_demo_end_to_end_small_then_rerun_skips(tmp_path):
    out = tmp_path / "demo"
    result = run_demo(out, overrides=SMALL, quiet=True)
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
    assert manifest["chip_size"] == DEMO_CONFIG["tile"]["size"]

    # Same settings again: every stage is skipped, nothing is rewritten.
    state = (out / "pipeline-state.json").read_text()
    mtime = (out / "synthetic.tif").stat().st_mtime_ns
    messages = []
    again = run_demo(out, overrides=SMALL, say=messages.append)
    assert set(again.status.values()) == {"skipped"} and len(messages) == 5
    assert (out / "pipeline-state.json").read_text() == state
    assert (out / "synthetic.tif").stat().st_mtime_ns == mtime


def test_demo_config_overrides_do_not_touch_the_packaged_config(tmp_path):
    cfg = demo_config(tmp_path, {"train": {"steps": 3}})
    assert cfg["train"]["steps"] == 3 and cfg["out"] == str(tmp_path)
    assert DEMO_CONFIG["train"]["steps"] == 1500 and DEMO_CONFIG["out"] == "geospade-demo"
    assert cfg["train"]["ngf"] == DEMO_CONFIG["train"]["ngf"]


def test_demo_refuses_an_output_path_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(SystemExit) as exc:
        main(["demo", "-o", str(target), "--size", "256", "--steps", "1"])
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert err.startswith("geospade: error: ") and err.count("\n") == 1
    assert target.read_text() == "x"


def test_demo_help_states_the_packaged_step_count(capsys):
    # `geospade demo` trains DEMO_CONFIG's steps unless --steps is given; its help says how many.
    code, out, _ = run_cli(["demo", "--help"], capsys)
    assert code == 0
    help_text = " ".join(out.split())
    assert f"[default: {DEMO_CONFIG['train']['steps']}, as in pipelines/demo.toml]" in help_text
