"""`evaluate`: how useful and how real a checkpoint's imagery is, class by class, with baselines.

First, usefulness as training data (:mod:`geospade.evaluation.utility`): train on synthetic, test
on real — the same U-Net trained on the real train chips, on the model's paintings of their masks,
on class-mean paintings and on real + synthetic, each tested on the real chips of the evaluated
split; the utility ratio and the augmentation gain over seeds lead the report.

Then realism. On one split of a chip store, in one pass, the model and two baselines paint every
chip's mask (:mod:`geospade.evaluation.painters`):

- ``model``: the checkpoint's generator (its EMA weights when present), loaded as ``synthesize``
  loads it (:func:`geospade.synthesis.model.load_synthesis_model`: the same precision, layout
  and style code), so the report measures the imagery ``synthesize`` writes;
- ``class_mean``: every pixel painted with its class's mean real spectrum (means from the train
  split) — flat "paint by numbers" output, texture near 0;
- ``shuffled_real``: the real image of another chip (a fixed derangement of the split), i.e. real
  imagery that ignores the mask.

Each is compared with the real images of the same masks (:mod:`geospade.evaluation.scores`):
per-class/per-band Wasserstein distance (normalised and source units), per-class texture ratio,
segmentation consistency (mIoU of a U-Net trained on real train chips, reading the painted
images; see :mod:`geospade.evaluation.segmenter`) and FID when Inception weights are on this
machine. The report is a plain dict (``report.json``, schema below and in docs/design.md,
"Evaluation report"), a terminal table (:func:`~geospade.evaluation.summary.format_summary`)
and a PNG figure (:func:`~geospade.evaluation.figure.write_figure`).

``report.json``: ``format`` ("geospade-evaluation"), ``format_version`` (1),
``geospade_version``, ``created``, ``chips``, ``split``, ``num_chips``, ``headline``
(:func:`~geospade.evaluation.summary.headline` of the model: the utility ratio first),
``utility`` (:meth:`~geospade.evaluation.utility.UtilityResult.to_dict`; absent when not
measured), ``scheme``, ``classes``, ``colors``, ``bands``, ``dtype``, ``class_pixels`` (per class
index), ``histogram_bins``, ``real`` (``texture``, ``segmentation``), ``methods`` ({method:
:func:`~geospade.evaluation.scores.method_entry`}), ``segmenter`` (settings, cache, cached),
``fid`` (available, note), ``notes``, ``checkpoint``, ``step``. NaN and infinite values are null.
Version 1 readers are unaffected: ``headline`` and ``utility`` are new keys, nothing else moved.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geospade import __version__
from geospade.atomic import atomic_path
from geospade.errors import ArgumentError, GeospadeError, check_seed
from geospade.evaluation import metrics
from geospade.evaluation.figure import write_figure
from geospade.evaluation.painters import (
    Painter,
    VariantPainter,
    class_mean_painter,
    derangement,
    shuffled_painter,
    synthesis_painter,
    variant_painter,
)
from geospade.evaluation.scores import (
    FIGURE_SAMPLES,
    Judges,
    Measurements,
    measure,
    method_entry,
    real_miou,
)
from geospade.evaluation.segmenter import (
    DEFAULT_SEGMENTER,
    SegmenterSettings,
    cache_path,
    cache_segmenter,
    load_cached_segmenter,
    train_segmenter,
    user_cache_dir,
)
from geospade.evaluation.split_source import SplitSource
from geospade.evaluation.summary import METHOD_LABELS, METHODS, format_summary, headline
from geospade.evaluation.utility import (
    DEFAULT_UTILITY,
    ChipStoreScoreCache,
    UtilitySettings,
    check_chip_counts,
    downstream_utility,
    train_subset,
)
from geospade.formats.chip_store import check_real_chips
from geospade.models.precision import resolve_device
from geospade.normalization import BandStats
from geospade.outputs import (
    EVALUATION_REPORT,
    PNG,
    locked_outputs,
    prepare_output,
    same_file,
)

REPORT_FORMAT = "geospade-evaluation"
REPORT_VERSION = 1


def progress_enabled(quiet: bool = False) -> bool:
    """Progress is shown without ``--quiet``: a bar on a terminal, log lines elsewhere
    (:func:`geospade.log.progress`)."""
    return not quiet


def _json(value):
    """NaN/inf -> None, numpy -> Python, recursively."""
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json(value.tolist())
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


# -- evaluating a checkpoint ---------------------------------------------------------------------


def evaluate(
    checkpoint: str | Path,
    chips: str | Path,
    split: str = "val",
    out: str | Path | None = None,
    *,
    figure: str | Path | None | bool = True,
    segmenter: SegmenterSettings | None = DEFAULT_SEGMENTER,
    utility: UtilitySettings | None = DEFAULT_UTILITY,
    inception_weights: str | Path | None = None,
    batch_size: int = 8,
    device: str | None = None,
    seed: int = 0,
    overwrite: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Evaluate a checkpoint on one split of a chip store, with baselines on the same masks.

    Args:
        checkpoint: a ``geospade train`` checkpoint.
        chips: the chip store (``geospade tile`` output) with the same scheme and bands.
        split: which split's masks and real images to use (``val``, ``test``, ``train``).
        out: where to write ``report.json`` (None: write nothing, just return the report).
        figure: PNG figure path; True (default) puts it next to ``out`` with a ``.png`` suffix;
            False/None writes none.
        segmenter: settings of the segmentation-consistency U-Net; None skips that metric.
        utility: settings of train on synthetic, test on real (TSTR), whose U-Nets train on the
            train split (the model paints ``utility.variants`` images of each mask, as
            ``geospade generate`` does) and test on ``split``; None skips it, as does
            ``split="train"`` (with a note).
        inception_weights: a local Inception v3 weight file for FID (default: look in the torch
            hub cache; FID is skipped, and the report says so, when there is none).
        batch_size: chips per generator call.
        device: ``cpu``, ``cuda``, … (default: CUDA when available). The generator runs there as
            ``synthesize`` runs it (bf16 where the device has native bf16).
        seed: seed of the derangement and of a VAE generator's style code (as ``synthesize``'s),
            and of TSTR's synthetic train chips (``geospade generate``'s seed: they are the
            images ``generate`` writes with it).
        overwrite: replace existing output files.
        quiet: no progress bars.

    Returns:
        The report (see ``report.json``; NaN values are None).

    Raises:
        GeospadeError: missing files, scheme/band mismatch, a synthetic chip store, an empty
            split, an unknown device, outputs that exist or whose folder cannot be written (all
            before any work); a split with too few chips for TSTR
            (:class:`~geospade.evaluation.utility.TooFewChipsError`, before any training).
    """
    check_seed(seed)
    checkpoint, chips = Path(checkpoint), Path(chips)
    out = Path(out) if out is not None else None
    fig_path = _figure_path(out, figure)
    _check_outputs(out, fig_path, overwrite,
                   [("the checkpoint", checkpoint), ("the chip store", chips),
                    ("the Inception weights", inception_weights)])
    with locked_outputs([(out, "report"), (fig_path, "figure")]):
        return _evaluate(checkpoint, chips, split, out, fig_path, segmenter, utility,
                         inception_weights, batch_size, device, seed, quiet)


def _check_outputs(out: Path | None, fig_path: Path | None, overwrite: bool, inputs) -> None:
    """The report and the figure are two new files (or replaceable ones of their kind), and
    neither is an input nor lies inside the chip store."""
    if out is not None and fig_path is not None and same_file(out, fig_path):
        raise ArgumentError("figure", f"the report and the figure would both be written to "
                            f"{out}; give the report a .json name (or pass figure=False)",
                            others=[("figure=False", "--no-figure")], leading=False)
    if out is not None:
        prepare_output(out, overwrite, inputs, kind=EVALUATION_REPORT)
    if fig_path is not None:
        prepare_output(fig_path, overwrite, inputs, kind=PNG)


def _figure_path(out: Path | None, figure) -> Path | None:
    if figure is True:
        return out.with_suffix(".png") if out is not None else None
    if figure in (None, False):
        return None
    return Path(figure)


def _evaluate(checkpoint: Path, chips: Path, split: str, out: Path | None,
              fig_path: Path | None, segmenter, utility, inception_weights, batch_size: int,
              device, seed: int, quiet: bool) -> dict[str, Any]:
    from geospade.data.chips import ChipDataset, open_chip_store
    from geospade.formats.checkpoint import check_fits_store
    from geospade.synthesis.model import load_synthesis_model, paints_variants

    dev = resolve_device(device)
    # The generator as synthesize runs it (precision and layout "auto", its style code), so the
    # report measures the imagery synthesize writes, not an fp32 copy of the model.
    model = load_synthesis_model(checkpoint, dev, amp="auto", seed=seed)
    store = open_chip_store(chips)
    check_real_chips(store, "evaluate")
    check_fits_store(checkpoint, model.scheme, model.bands, store)
    step = model.step
    if utility is not None and utility.variants > 1 and not paints_variants(model.generator):
        raise GeospadeError(
            f"{utility.variants} TSTR variants of each train mask: checkpoint {checkpoint} has "
            "no noise input or style code (trained with noise_dim 0 and without use_vae), so "
            "they would all be the same image; ask for 1 variant, or evaluate a checkpoint "
            "trained with noise_dim > 0")
    report = evaluate_painter(
        synthesis_painter(model, store.bands), chips, split, segmenter=segmenter,
        utility=utility, inception_weights=inception_weights, batch_size=batch_size,
        device=dev, seed=seed, quiet=quiet, dataset_cls=ChipDataset,
        variants=variant_painter(model, store.bands, seed),
    )
    report["checkpoint"] = str(checkpoint)
    report["step"] = step
    if out is not None:
        write_report(report, out)
    if fig_path is not None:
        write_figure(report, fig_path)
        report["figure"] = str(fig_path)
    return report


# -- evaluating any painter ----------------------------------------------------------------------


def evaluate_painter(
    painter: Painter,
    chips: str | Path,
    split: str = "val",
    *,
    segmenter: SegmenterSettings | None = DEFAULT_SEGMENTER,
    utility: UtilitySettings | None = None,
    inception_weights: str | Path | None = None,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    seed: int = 0,
    quiet: bool = False,
    dataset_cls=None,
    variants: VariantPainter | None = None,
) -> dict[str, Any]:
    """Measure any painter (masks -> normalised images) like :func:`evaluate` measures a model.

    ``painter`` is reported as the ``model`` method; the baselines are computed alongside. This is
    what :func:`evaluate` runs once it has loaded the generator; tests and custom generators call
    it directly.

    Args:
        painter: see :data:`~geospade.evaluation.painters.Painter`. With ``utility`` it also
            paints the train split's masks (the indices it gets are then train-split indices).
        chips, split, segmenter, inception_weights, batch_size, device, seed, quiet: as for
            :func:`evaluate`.
        utility: TSTR settings, as for :func:`evaluate`; None (the default here, unlike
            :func:`evaluate`'s) skips it, as a painter of the evaluated split's chips by index
            cannot paint the train masks.
        dataset_cls: the dataset class chips are read with (default
            :class:`geospade.data.chips.ChipDataset`).
        variants: what paints TSTR's synthetic train chips, variant by variant (see
            :data:`~geospade.evaluation.painters.VariantPainter`; :func:`evaluate` passes
            :func:`~geospade.evaluation.painters.variant_painter`); None: ``painter`` paints
            them, and ``utility.variants`` must be 1.

    Returns:
        The report dict (without ``checkpoint``/``step``), with the figure's chips under
        ``_samples``.
    """
    check_seed(seed)
    if utility is not None and utility.variants > 1 and variants is None:
        raise GeospadeError(f"{utility.variants} TSTR variants of each train mask need a "
                            "variant painter (evaluate passes the generator's)")
    chips = Path(chips)
    dev = resolve_device(device)
    show = progress_enabled(quiet)
    source = SplitSource(chips, split, dataset_cls)
    if utility is not None and split != "train":
        check_chip_counts(len(source.train), len(source))  # before any training
    seg_net, seg_info, seg_note = _segmenter(source, segmenter, dev, show)
    inception, rgb, fid_note = _inception(source.bands, inception_weights, dev)
    means = source.class_means(show)
    painters, shuffle_note = _painters(painter, means, source, seed, show)
    found = measure(source, painters, Judges(dev, seg_net, inception, rgb), batch_size, show)
    tstr, tstr_note = _utility(painter, variants, means, source, utility, batch_size, dev,
                               show)
    notes = [n for n in (tstr_note, seg_note, fid_note, shuffle_note) if n is not None]
    report = _json(_report(source, found, tstr, seg_info, inception is not None, fid_note,
                           notes))
    report["headline"] = headline(report)
    report["_samples"] = found.samples.as_dict()  # numpy arrays for the figure; never in JSON
    return report


def _utility(painter: Painter, variants: VariantPainter | None, means: np.ndarray,
             source: SplitSource, settings: UtilitySettings | None, batch_size: int,
             device: torch.device, progress: bool) -> tuple[dict[str, Any] | None, str | None]:
    """Train on synthetic, test on real: the report's ``utility`` entry (None when skipped) and
    a note when it is skipped."""
    if settings is None:
        return None, None
    if source.split == "train":
        return None, ("TSTR skipped: it tests on the evaluated split, here the train split its "
                      "U-Nets train on")
    subset = train_subset(len(source.train), settings.max_train_chips)
    train_images, train_masks = source.train_arrays(subset)
    ids = source.train.ids

    def paint(variant: int, start: int) -> np.ndarray:
        masks, chips = train_masks[start:start + batch_size], subset[start:start + batch_size]
        if variants is None:  # one variant (checked by evaluate_painter)
            return painter(masks, chips.tolist())
        return variants(masks, [ids[i] for i in chips], variant)

    synthetic = np.concatenate([paint(v, start) for v in range(settings.variants)
                                for start in range(0, len(subset), batch_size)])
    class_mean = class_mean_painter(means)(train_masks, subset.tolist())
    test_images, test_masks = source.arrays()
    result = downstream_utility(
        train_images, train_masks, synthetic, class_mean, test_images, test_masks,
        source.num_classes, settings, device, progress,
        cache=ChipStoreScoreCache(source.chips, source.split, settings, device))
    return result.to_dict(), None


def _segmenter(source: SplitSource, settings: SegmenterSettings | None, device: torch.device,
               progress: bool) -> tuple[torch.nn.Module | None, dict[str, Any] | None, str | None]:
    """The segmentation-consistency U-Net, trained on real train chips (cached per chip store,
    or in the user's cache folder when the store is read-only).

    Returns:
        The network, the report's ``segmenter`` entry and a note on where it is cached (all
        None without ``settings``; the note None when cached in the store).
    """
    if settings is None:
        return None, None, None
    chips = source.chips
    net, path = load_cached_segmenter(chips, settings, device)
    cached = net is not None
    if net is None:
        c, k = len(source.bands), source.num_classes
        net = train_segmenter(source.train_chip, len(source.train), c, k, settings, device,
                              progress=progress)
        path = cache_segmenter(chips, net, settings, c, k)
    note = None
    if path is None:
        note = (f"segmenter not cached: neither chip store {chips} nor {user_cache_dir()} can be "
                "written, so it is retrained every time")
    elif path != cache_path(chips, settings):
        note = f"segmenter cached in {path}, not in chip store {chips}, which cannot be written"
    info = {"settings": asdict(settings), "cache": None if path is None else str(path),
            "cached": cached}
    return net, info, note


def _inception(bands: Sequence[BandStats], weights: str | Path | None, device: torch.device
               ) -> tuple[torch.nn.Module | None, list[int] | None, str]:
    """Inception v3 for FID, only with local weights and at least 3 bands.

    Returns:
        The network (None: no FID), the bands it sees, and the report's FID note.
    """
    found = metrics.find_inception_weights(weights)
    rgb = metrics.rgb_band_indices([b.name for b in bands])
    if found is None:
        return None, rgb, ("FID skipped: no Inception v3 weights on this machine (pass "
                           "inception_weights or set GEOSPADE_INCEPTION_WEIGHTS; geospade never "
                           "downloads them)")
    if rgb is None:
        return None, rgb, "FID skipped: it needs at least 3 bands"
    inception = metrics.load_inception(found, str(device))
    names = [bands[i].name for i in rgb]
    return inception, rgb, f"FID on bands {names} with Inception weights {found}"


def _painters(model: Painter, means: np.ndarray, source: SplitSource, seed: int,
              progress: bool) -> tuple[dict[str, Painter], str | None]:
    """The model and the baselines (``means``: the class-mean spectra), in report order, and a
    note when a baseline is skipped."""
    painters = {"model": model, "class_mean": class_mean_painter(means)}
    perm = derangement(len(source), seed)
    if perm is None:
        return painters, "shuffled_real baseline skipped: the split has a single chip"
    painters["shuffled_real"] = shuffled_painter(source.image, perm)
    return painters, None


def _report(source: SplitSource, found: Measurements, utility: dict[str, Any] | None,
            seg_info: dict[str, Any] | None, fid_available: bool, fid_note: str,
            notes: list[str]) -> dict[str, Any]:
    """The report's content (numpy values; :func:`_json` makes it JSON). ``headline`` is a
    placeholder, filled from the finished report, so that it comes first in the file."""
    scheme, bands, real = source.scheme, source.bands, found.real
    span = np.array([(b.high - b.low) / 2.0 for b in bands])
    methods = {name: method_entry(scores, real, span, fid_available)
               for name, scores in found.methods.items()}
    return {
        "format": REPORT_FORMAT,
        "format_version": REPORT_VERSION,
        "geospade_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "chips": str(source.chips),
        "split": source.split,
        "num_chips": len(source),
        "headline": None,
        **({"utility": utility} if utility is not None else {}),
        "scheme": scheme.name,
        "classes": scheme.names,
        "colors": ["#{:02x}{:02x}{:02x}".format(*cls.color) for cls in scheme.classes],
        "bands": [b.name for b in bands],
        "dtype": bands[0].dtype,
        "class_pixels": real.hist.pixels(),
        "histogram_bins": found.bins,
        "real": {
            "texture": {"per_class_gradient": real.texture.mean()},
            "segmentation": (
                {"miou": real_miou(real), "per_class_iou": real.confusion.iou()}
                if real.confusion is not None else None
            ),
        },
        "methods": methods,
        "segmenter": seg_info,
        "fid": {"available": fid_available, "note": fid_note},
        "notes": notes,
    }


# -- outputs -------------------------------------------------------------------------------------


def write_report(report: dict[str, Any], path: str | Path) -> Path:
    """Write ``report`` as JSON (atomically; private keys starting with ``_`` are left out)."""
    path = Path(path)
    public = {k: v for k, v in report.items() if not k.startswith("_")}
    # _json already turned NaN/inf into None; allow_nan=False keeps it strict JSON regardless.
    text = json.dumps(_json(public), indent=2, allow_nan=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")
    return path


__all__ = [
    "FIGURE_SAMPLES", "METHODS", "METHOD_LABELS", "REPORT_FORMAT", "REPORT_VERSION", "evaluate",
    "evaluate_painter", "format_summary", "headline", "write_figure", "write_report",
]
