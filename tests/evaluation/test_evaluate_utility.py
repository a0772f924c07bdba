"""`geospade evaluate` with TSTR: the report's `utility` and headline, the summary's order, the
chip-store cache of the real-trained and class-mean U-Nets, options and one-line errors."""

import json
import shutil
from pathlib import Path

import numpy as np
import pyogrio
import pytest
from cli_runner import run_cli
from test_evaluate import write_checkpoint

from geospade import pipeline
from geospade.data.chips import ChipDataset
from geospade.errors import GeospadeError
from geospade.evaluation import report as report_module
from geospade.evaluation import utility as utility_module
from geospade.evaluation.report import evaluate, evaluate_painter
from geospade.evaluation.segmenter import CACHE_DIR
from geospade.evaluation.summary import format_summary, headline
from geospade.evaluation.utility import CONDITIONS, DEFAULT_UTILITY, UtilitySettings
from geospade.synthesis.generate import generate

TINY = UtilitySettings(steps=6, batch_size=4, base_channels=4, depth=1, seeds=(0, 1))


@pytest.fixture
def chips(chip_store, tmp_path):
    """A private copy of the shared store (12 train, 4 val chips; caches are written into it)."""
    out = tmp_path / "chips"
    shutil.copytree(chip_store, out)
    return out


@pytest.fixture
def trainings(monkeypatch):
    """Every U-Net TSTR trains, as ``(chips drawn from, steps)``."""
    calls = []
    real = utility_module.train_segmenter

    def spy(load_chip, num_chips, *args, **kwargs):
        calls.append(num_chips)
        return real(load_chip, num_chips, *args, **kwargs)

    monkeypatch.setattr(utility_module, "train_segmenter", spy)
    return calls


def _evaluate(checkpoint, chips, out=None, **kwargs):
    options = dict(segmenter=None, utility=TINY, figure=False, device="cpu", quiet=True)
    return evaluate(checkpoint, chips, "val", out, **{**options, **kwargs})


def test_report_leads_with_tstr_in_json_headline_and_summary(chips, tmp_path, trainings):
    ckpt = write_checkpoint(tmp_path / "a.pt", chips)
    out = tmp_path / "report.json"
    report = _evaluate(ckpt, chips, out)
    data = json.loads(out.read_text())
    tstr = data["utility"]
    assert list(tstr["conditions"]) == list(CONDITIONS)
    assert tstr["train_chips"] == 12 and tstr["test_chips"] == 4
    assert tstr["settings"]["seeds"] == [0, 1] and tstr["settings"]["steps"] == 6
    for name in CONDITIONS:
        per_seed = tstr["conditions"][name]["miou"]["per_seed"]
        assert len(per_seed) == 2 and all(0.0 <= v <= 1.0 for v in per_seed)
    real = tstr["conditions"]["real"]["miou"]["per_seed"]
    synthetic = tstr["conditions"]["synthetic"]["miou"]["per_seed"]
    assert tstr["utility_ratio"]["per_seed"] == pytest.approx(
        [s / r for s, r in zip(synthetic, real, strict=True)])
    assert tstr["cached"] == {}  # a new store: nothing was cached yet
    assert len(trainings) == 4 * 2
    # 12 chips per source; the mixed condition draws from real and synthetic ones.
    assert sorted(set(trainings)) == [12, 24]
    head = data["headline"]
    assert list(head)[:2] == ["utility_ratio", "utility_ratio_sd"]
    assert head["utility_ratio"] == tstr["utility_ratio"]["mean"]
    assert head["augmentation_gain"] == tstr["augmentation_gain"]["mean"]
    assert head["real_trained_miou"] == tstr["conditions"]["real"]["miou"]["mean"]
    assert head["class_mean_ratio_sd"] == tstr["class_mean_ratio"]["sd"]
    assert head["texture_ratio"] == data["methods"]["model"]["texture"]["mean_ratio"]
    assert list(data).index("headline") < list(data).index("methods")
    lines = format_summary(report).splitlines()
    assert lines[2].startswith("usefulness as training data (train on synthetic, test on real")
    assert "utility ratio" in lines[3] and "4 real val chips" in lines[6]
    realism = lines.index(next(line for line in lines if line.startswith("realism of")))
    assert realism > 10
    assert any(line.startswith("realism: spectral W1 (normalised)") for line in lines)


def test_second_checkpoint_reuses_the_real_and_class_mean_trainings(chips, tmp_path,
                                                                      trainings):
    first = _evaluate(write_checkpoint(tmp_path / "a.pt", chips, seed=0), chips)
    cached = sorted(p.name.split("-")[1] for p in (chips / CACHE_DIR).glob("tstr-*.json"))
    assert cached == ["class_mean", "class_mean", "real", "real"]  # one file per seed
    trainings.clear()
    second = _evaluate(write_checkpoint(tmp_path / "b.pt", chips, seed=1), chips)
    # Only the conditions that use the model's images are trained: synthetic, real+synthetic.
    assert sorted(trainings) == [12, 12, 24, 24]
    assert second["utility"]["cached"] == {"real": [0, 1], "class_mean": [0, 1]}
    for name in ("real", "class_mean"):
        assert (second["utility"]["conditions"][name]["iou"]["per_seed"]
                == first["utility"]["conditions"][name]["iou"]["per_seed"])
    # Other training settings are another cache entry: everything is trained again.
    trainings.clear()
    _evaluate(tmp_path / "b.pt", chips, utility=UtilitySettings(
        steps=7, batch_size=4, base_channels=4, depth=1, seeds=(0,)))
    assert len(trainings) == 4


def test_cli_options_and_no_utility(chips, tmp_path, capsys):
    ckpt = write_checkpoint(tmp_path / "a.pt", chips)
    out = tmp_path / "r.json"
    code, printed, err = run_cli(
        ["evaluate", str(ckpt), str(chips), "-o", str(out), "--no-segmenter", "--no-figure",
         "--device", "cpu", "--utility-steps", "3", "--utility-seeds", "1",
         "--augmentation-ratio", "0.5"], capsys)
    assert code == 0, err
    settings = json.loads(out.read_text())["utility"]["settings"]
    assert settings["steps"] == 3 and settings["seeds"] == [0]
    assert settings["augmentation_ratio"] == 0.5
    assert printed.splitlines()[2].startswith("usefulness as training data")
    code, printed, err = run_cli(
        ["evaluate", str(ckpt), str(chips), "-o", str(out), "--no-segmenter", "--no-figure",
         "--device", "cpu", "--no-utility", "--overwrite"], capsys)
    assert code == 0, err
    data = json.loads(out.read_text())
    assert "utility" not in data
    assert data["headline"]["utility_ratio"] is None
    assert data["headline"]["wasserstein"] == data["methods"]["model"]["wasserstein"]["mean"]
    assert "usefulness" not in printed and "realism: texture ratio" in printed


def test_cli_defaults_are_the_library_defaults():
    from geospade.commands.evaluate import command

    defaults = {p.name: p.default for p in command.params}
    assert defaults["utility_steps"] == DEFAULT_UTILITY.steps
    assert defaults["utility_seeds"] == len(DEFAULT_UTILITY.seeds)
    assert defaults["augmentation_ratio"] == DEFAULT_UTILITY.augmentation_ratio
    assert defaults["variants"] == DEFAULT_UTILITY.variants


def test_train_split_skips_tstr_with_a_note(chips, tmp_path, trainings):
    report = evaluate(write_checkpoint(tmp_path / "a.pt", chips), chips, "train",
                      segmenter=None, utility=TINY, figure=False, device="cpu", quiet=True)
    assert "utility" not in report and trainings == []
    assert any(note.startswith("TSTR skipped") for note in report["notes"])


def test_synthetic_chip_store_is_refused_in_one_line(chips, tmp_path, capsys):
    ckpt = write_checkpoint(tmp_path / "a.pt", chips)
    manifest = json.loads((chips / "manifest.json").read_text())
    manifest["synthetic"] = {"checkpoint": str(ckpt)}
    (chips / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "r.json"
    code, _, err = run_cli(["evaluate", str(ckpt), str(chips), "-o", str(out)], capsys)
    assert code == 1
    assert err == (f"geospade: error: {chips} is a synthetic chip store (from geospade "
                   "generate); evaluate needs the real chips it was made from\n")
    assert not out.exists()
    manifest["synthetic"]["source_store"] = "/data/real-chips"
    (chips / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(GeospadeError, match=r"is a synthetic chip store .* it was made from "
                                            r"\(/data/real-chips\)$"):
        evaluate_painter(lambda masks, indices: masks, chips, "val", segmenter=None)


def test_too_few_evaluation_chips_for_tstr_is_one_line_before_any_training(
        chips, tmp_path, capsys, trainings):
    ckpt = write_checkpoint(tmp_path / "a.pt", chips)
    index = chips / "index.gpkg"
    table = pyogrio.read_dataframe(index, layer="chips")
    val = table.index[table["split"] == "val"]
    table.loc[val[1:], "split"] = "test"  # leave one val chip
    pyogrio.write_dataframe(table, index, layer="chips")
    out = tmp_path / "r.json"
    code, _, err = run_cli(["evaluate", str(ckpt), str(chips), "-o", str(out), "--device",
                            "cpu"], capsys)
    assert code == 1 and err.count("\n") == 1
    assert err == ("geospade: error: an evaluation split with too few chips for TSTR (1; at "
                   "least 2): evaluate another --split, or pass --no-utility\n")
    assert trainings == [] and not out.exists()
    assert not (chips / CACHE_DIR).exists()  # not even the segmenter was trained
    code, _, err = run_cli(["evaluate", str(ckpt), str(chips), "-o", str(out), "--device",
                            "cpu", "--no-utility", "--no-segmenter"], capsys)
    assert code == 0, err


class Stages:
    """Stand-ins for the pipeline's stage functions; evaluate records its ``utility``."""

    def __init__(self):
        self.utility = []

    def landscape(self, landcover_path, imagery_path, **options):
        Path(landcover_path).write_bytes(b"lc")
        Path(imagery_path).write_bytes(b"im")

    def tile(self, landcover, imagery, out, **options):
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "manifest.json").write_text("{}")

    def train(self, chips, run_dir, config, **options):
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        (Path(run_dir) / "checkpoint.pt").write_bytes(b"ckpt")

    def synthesize(self, checkpoint, landcover, out, **options):
        Path(out).write_bytes(b"tif")

    def evaluate(self, checkpoint, chips, *, out, split="val", utility=DEFAULT_UTILITY,
                 **options):
        self.utility.append(utility)
        out.write_text("{}")
        out.with_suffix(".png").write_bytes(b"png")

    def functions(self):
        return {"landscape": self.landscape, "tile": self.tile, "train": self.train,
                "synthesize": self.synthesize, "evaluate": self.evaluate}


def _config(tmp_path, evaluate):
    return {"out": "work", "_base": str(tmp_path), "landscape": {"width": 8, "height": 8},
            "tile": {"size": 64, "val_fraction": 0.2}, "train": {"steps": 5},
            "synthesize": {}, "evaluate": evaluate}


def test_pipeline_evaluate_table_passes_the_tstr_keys(monkeypatch, tmp_path):
    stages = Stages()
    monkeypatch.setattr(pipeline, "stage_functions", stages.functions)
    tstr = {"utility_steps": 5, "utility_seeds": 2, "augmentation_ratio": 3, "variants": 2}
    pipeline.run_pipeline(_config(tmp_path, tstr), quiet=True)
    assert stages.utility == [UtilitySettings(steps=5, seeds=(0, 1), augmentation_ratio=3.0,
                                              variants=2)]
    pipeline.run_pipeline(_config(tmp_path, {"utility": False}), quiet=True)
    pipeline.run_pipeline(_config(tmp_path, {}), quiet=True)  # evaluate's default
    assert stages.utility[1:] == [None, DEFAULT_UTILITY]
    with pytest.raises(GeospadeError, match=r"^\[evaluate\]: utility_seeds must be at least 1"):
        pipeline.run_pipeline(_config(tmp_path, {"utility_seeds": 0}), quiet=True)
    with pytest.raises(GeospadeError, match=r"^\[evaluate\]: variants must be at least 1"):
        pipeline.run_pipeline(_config(tmp_path, {"variants": 0}), quiet=True)
    with pytest.raises(GeospadeError, match=r"^\[evaluate\]: augmentation_ratio must be a pos"):
        pipeline.run_pipeline(_config(tmp_path, {"augmentation_ratio": 0}), quiet=True)
    with pytest.raises(GeospadeError, match=r"^\[evaluate\]: utility must be bool"):
        pipeline.run_pipeline(_config(tmp_path, {"utility": 1}), quiet=True)


def test_headline_of_a_report_without_tstr_has_its_keys_as_none():
    report = {"methods": {"model": {"wasserstein": {"mean": 0.1, "mean_source": 2.0},
                                    "texture": {"mean_ratio": 0.5}}}}
    head = headline(report)
    assert list(head)[:8] == ["utility_ratio", "utility_ratio_sd", "augmentation_gain",
                              "augmentation_gain_sd", "real_trained_miou",
                              "real_trained_miou_sd", "class_mean_ratio", "class_mean_ratio_sd"]
    assert all(head[k] is None for k in list(head)[:8])
    assert head["wasserstein"] == 0.1 and head["miou_ratio"] is None
    assert "utility_ratio" not in headline({**report, "methods": {
        "class_mean": report["methods"]["model"]}}, "class_mean")


@pytest.fixture
def painted(monkeypatch):
    """The synthetic train images each TSTR run is given."""
    calls = []
    real = report_module.downstream_utility

    def spy(train_images, train_masks, synthetic_images, *args, **kwargs):
        calls.append(synthetic_images)
        return real(train_images, train_masks, synthetic_images, *args, **kwargs)

    monkeypatch.setattr(report_module, "downstream_utility", spy)
    return calls


def test_tstr_variants_are_the_images_generate_writes(chips, tmp_path, trainings, painted,
                                                        capsys):
    ckpt = write_checkpoint(tmp_path / "noise.pt", chips, noise_dim=4)
    out = tmp_path / "r.json"
    code, printed, err = run_cli(
        ["evaluate", str(ckpt), str(chips), "-o", str(out), "--no-segmenter", "--no-figure",
         "--device", "cpu", "--utility-steps", "2", "--utility-seeds", "1", "--variants", "3",
         "--augmentation-ratio", "3", "--seed", "5"], capsys)
    assert code == 0, err
    tstr = json.loads(out.read_text())["utility"]
    assert tstr["settings"]["variants"] == 3 and tstr["train_chips"] == 12
    assert "(3 generated variants of each)" in printed
    # The synthetic U-Net trains on all 36 images, the mixed one draws from 12 real + 36.
    assert sorted(trainings) == [12, 12, 36, 48]
    (synthetic,) = painted
    assert synthetic.shape[0] == 36
    generate(ckpt, chips, tmp_path / "synthetic", variants=3, seed=5, split="train",
             quiet=True)
    written = ChipDataset(tmp_path / "synthetic", "train")
    image_of = {chip: written[i]["image"].numpy() for i, chip in enumerate(written.ids)}
    real = ChipDataset(chips, "train")
    for v in range(3):
        for i, chip in enumerate(real.ids):
            mask = real[i]["mask"].numpy() != 255
            np.testing.assert_array_equal(synthetic[v * 12 + i][:, mask],
                                          image_of[f"{chip}_v{v}"][:, mask])
    # Variants differ: the noise is drawn per chip and variant.
    assert not np.array_equal(synthetic[0], synthetic[12])


def test_tstr_variants_of_a_generator_without_noise_is_a_one_line_error(chips, tmp_path,
                                                                         trainings, capsys):
    ckpt = write_checkpoint(tmp_path / "plain.pt", chips)
    code, _, err = run_cli(
        ["evaluate", str(ckpt), str(chips), "-o", str(tmp_path / "r.json"), "--no-segmenter",
         "--device", "cpu", "--variants", "2"], capsys)
    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith("geospade: error: 2 TSTR variants of each train mask: checkpoint ")
    assert "same image" in err and trainings == []
    assert not (tmp_path / "r.json").exists()
    # A painter without a variant painter cannot give variants either.
    with pytest.raises(GeospadeError, match="need a variant painter"):
        evaluate_painter(lambda masks, indices: None, chips, "val", segmenter=None,
                         utility=UtilitySettings(variants=2), device="cpu", quiet=True)


def test_downstream_utility_checks_the_number_of_variants():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(8, 2, 16, 16)).astype(np.float32)
    masks = rng.integers(0, 2, size=(8, 16, 16)).astype(np.uint8)
    settings = UtilitySettings(steps=1, batch_size=2, base_channels=4, depth=1, seeds=(0,),
                               variants=2)
    with pytest.raises(GeospadeError, match=r"not \(16, 2, 16, 16\) like the real train images "
                                            r"\(2 variants of each\)"):
        utility_module.downstream_utility(images, masks, images, images, images, masks, 2,
                                          settings)
    with pytest.raises(GeospadeError, match="variants must be at least 1"):
        UtilitySettings(variants=0)
