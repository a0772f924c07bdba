"""`evaluate`: how real a checkpoint's imagery is, class by class, with baselines (DESIGN.md).

On one split of a chip store, in one pass, the model and two baselines paint every chip's mask:

- ``model``: the checkpoint's generator (its EMA weights when present);
- ``class_mean``: every pixel painted with its class's mean real spectrum (means from the train
  split) — flat "paint by numbers" output, texture near 0;
- ``shuffled_real``: the real image of another chip (a fixed derangement of the split), i.e. real
  imagery that ignores the mask.

Each is compared with the real images of the same masks: per-class/per-band Wasserstein distance
(normalised and source units), per-class texture ratio, segmentation consistency (mIoU of a U-Net
trained on real train chips; see :mod:`geospade.evaluation.segmenter`) and FID when Inception
weights are on this machine. The report is a plain dict (``report.json``), a terminal table
(:func:`format_summary`) and a PNG figure (:func:`write_figure`).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geospade import __version__
from geospade.atomic import atomic_path
from geospade.errors import GeospadeError, check_seed
from geospade.evaluation import metrics
from geospade.evaluation.segmenter import (
    DEFAULT_SEGMENTER,
    ConfusionMatrix,
    SegmenterSettings,
    cache_path,
    cache_segmenter,
    load_cached_segmenter,
    predict,
    train_segmenter,
    user_cache_dir,
)
from geospade.models.precision import resolve_device
from geospade.normalization import BandStats, denormalize, normalize
from geospade.outputs import (
    EVALUATION_REPORT,
    PNG,
    locked_outputs,
    prepare_output,
    same_file,
)
from geospade.schemes import ClassScheme

REPORT_FORMAT = "geospade-evaluation"
REPORT_VERSION = 1
METHODS = ("model", "class_mean", "shuffled_real")
METHOD_LABELS = {"model": "model", "class_mean": "class-mean", "shuffled_real": "shuffled real"}
FIGURE_SAMPLES = 4

Painter = Callable[[np.ndarray, Sequence[int]], np.ndarray]
"""``(masks (N, H, W) uint8, chip indices) -> normalised images (N, C, H, W) float32``."""


def progress_enabled(quiet: bool = False) -> bool:
    """Progress bars are shown only on a terminal and without ``--quiet``."""
    return not quiet and sys.stderr.isatty()


# -- painters ------------------------------------------------------------------------------------


def generator_painter(
    checkpoint: dict[str, Any], store_bands: Sequence[BandStats], device: torch.device,
    seed: int = 0, path: str | Path | None = None,
) -> Painter:
    """A painter running a checkpoint's generator (EMA weights when present).

    Its output is mapped to the source dtype with the checkpoint's stats (what ``synthesize``
    writes) and normalised back with the chip store's, so it is measured like a real chip.
    ``path`` (the checkpoint's file) is named when its weights do not fit its generator config.
    """
    from geospade.formats.checkpoint import load_weights
    from geospade.models import build_generator

    net = build_generator(checkpoint["generator_config"])
    part = "generator_ema" if checkpoint.get("generator_ema") else "generator"
    load_weights(net, checkpoint[part], path, part)
    net = net.to(device).eval()
    ckpt_bands = [BandStats.from_dict(b) for b in checkpoint["bands"]]
    gen = torch.Generator(device="cpu").manual_seed(seed)

    @torch.no_grad()
    def paint(masks: np.ndarray, indices: Sequence[int]) -> np.ndarray:
        labels = torch.from_numpy(masks.astype(np.int64)).to(device)
        z = None
        if getattr(net, "use_vae", False):
            z = torch.randn(len(masks), net.z_dim, generator=gen).to(device)
        out = net(labels, z=z).float().cpu().numpy()
        return np.stack([normalize(denormalize(o, ckpt_bands), store_bands) for o in out])

    return paint


def class_mean_painter(means: np.ndarray) -> Painter:
    """Paint each pixel with its class's mean normalised spectrum ``means (K, C)``; ignore -> 0."""

    def paint(masks: np.ndarray, indices: Sequence[int]) -> np.ndarray:
        table = np.zeros((256, means.shape[1]), dtype=np.float32)
        table[: len(means)] = means
        return np.ascontiguousarray(np.moveaxis(table[masks], -1, 1))

    return paint


def derangement(n: int, seed: int = 0) -> np.ndarray | None:
    """A fixed permutation of ``range(n)`` with no fixed point (None when ``n < 2``)."""
    if n < 2:
        return None
    order = np.random.default_rng(seed).permutation(n)
    perm = np.empty(n, dtype=np.int64)
    perm[order] = np.roll(order, -1)
    return perm


def shuffled_painter(load_image: Callable[[int], np.ndarray], perm: np.ndarray) -> Painter:
    """Give chip ``i`` the real image of chip ``perm[i]``."""

    def paint(masks: np.ndarray, indices: Sequence[int]) -> np.ndarray:
        return np.stack([load_image(int(perm[i])) for i in indices])

    return paint


# -- measuring -----------------------------------------------------------------------------------


class _Scores:
    """The accumulators of one painter (or of the real images)."""

    def __init__(self, num_classes: int, bands: int, bins: int, seg: bool):
        self.hist = metrics.SpectralHistograms(num_classes, bands, bins)
        self.texture = metrics.TextureStats(num_classes)
        self.confusion = ConfusionMatrix(num_classes) if seg else None
        self.features: list[np.ndarray] = []

    def add(self, images: np.ndarray, masks: np.ndarray) -> None:
        for image, mask in zip(images, masks, strict=True):
            self.hist.add(image, mask)
            self.texture.add(image, mask)


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


def _row_mean(values: np.ndarray) -> np.ndarray:
    """Mean over the last axis of the finite values; NaN for rows with none."""
    ok = np.isfinite(values)
    total = np.where(ok, values, 0.0).sum(axis=-1)
    count = ok.sum(axis=-1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _class_means(dataset, num_classes: int, bands: int, progress: bool) -> np.ndarray:
    """Mean normalised spectrum per class ``(K, C)`` over a dataset's chips (0 if never seen)."""
    from tqdm.auto import tqdm

    total = np.zeros((num_classes, bands), dtype=np.float64)
    count = np.zeros(num_classes, dtype=np.int64)
    for i in tqdm(range(len(dataset)), desc="class means", disable=not progress, leave=False):
        item = dataset[i]
        mask = item["mask"].numpy()
        image = item["image"].numpy()
        valid = mask < num_classes
        cls = mask[valid]
        for b in range(bands):
            total[:, b] += np.bincount(cls, weights=image[b][valid], minlength=num_classes)
        count += np.bincount(cls, minlength=num_classes)
    return (total / np.maximum(count, 1)[:, None]).astype(np.float32)


def _check_compatible(ckpt: dict[str, Any], scheme: ClassScheme, bands: Sequence[BandStats],
                      checkpoint: Path, chips: Path) -> None:
    ck_scheme = ClassScheme.from_dict(ckpt["scheme"])
    if not ck_scheme.same_classes(scheme):
        raise GeospadeError(
            f"checkpoint {checkpoint} was trained on scheme {ck_scheme.name!r} (values "
            f"{ck_scheme.values}) but chip store {chips} uses {scheme.name!r} "
            f"(values {scheme.values})"
        )
    ck_bands = [BandStats.from_dict(b) for b in ckpt["bands"]]
    if [b.name for b in ck_bands] != [b.name for b in bands]:
        raise GeospadeError(
            f"checkpoint {checkpoint} has bands {[b.name for b in ck_bands]} but chip store "
            f"{chips} has {[b.name for b in bands]}"
        )
    if ck_bands[0].dtype != bands[0].dtype:
        raise GeospadeError(
            f"checkpoint {checkpoint} makes {ck_bands[0].dtype} imagery but chip store {chips} "
            f"holds {bands[0].dtype}"
        )


def evaluate(
    checkpoint: str | Path,
    chips: str | Path,
    split: str = "val",
    out: str | Path | None = None,
    *,
    figure: str | Path | None | bool = True,
    segmenter: SegmenterSettings | None = DEFAULT_SEGMENTER,
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
        inception_weights: a local Inception v3 weight file for FID (default: look in the torch
            hub cache; FID is skipped, and the report says so, when there is none).
        batch_size: chips per generator call.
        device: ``cpu``, ``cuda``, … (default: CUDA when available).
        seed: seed of the derangement and of any generator noise.
        overwrite: replace existing output files.
        quiet: no progress bars.

    Returns:
        The report (see ``report.json``; NaN values are None).

    Raises:
        GeospadeError: missing files, scheme/band mismatch, an empty split, an unknown device,
            outputs that exist or whose folder cannot be written (all before any work).
    """
    check_seed(seed)
    checkpoint, chips = Path(checkpoint), Path(chips)
    out = Path(out) if out is not None else None
    fig_path = _figure_path(out, figure)
    _check_outputs(out, fig_path, overwrite,
                   [("the checkpoint", checkpoint), ("the chip store", chips),
                    ("the Inception weights", inception_weights)])
    with locked_outputs([(out, "report"), (fig_path, "figure")]):
        return _evaluate(checkpoint, chips, split, out, fig_path, segmenter, inception_weights,
                         batch_size, device, seed, quiet)


def _check_outputs(out: Path | None, fig_path: Path | None, overwrite: bool, inputs) -> None:
    """The report and the figure are two new files (or replaceable ones of their kind), and
    neither is an input nor lies inside the chip store."""
    if out is not None and fig_path is not None and same_file(out, fig_path):
        raise GeospadeError(f"the report and the figure would both be written to {out}; give "
                            "the report a .json name (or pass --no-figure)")
    if out is not None:
        prepare_output(out, overwrite, inputs, kind=EVALUATION_REPORT)
    if fig_path is not None:
        prepare_output(fig_path, overwrite, inputs, kind=PNG)


def _evaluate(checkpoint: Path, chips: Path, split: str, out: Path | None,
              fig_path: Path | None, segmenter, inception_weights, batch_size: int, device,
              seed: int, quiet: bool) -> dict[str, Any]:
    from geospade.data.chips import ChipDataset, open_chip_store
    from geospade.formats.checkpoint import load_checkpoint

    dev = resolve_device(device)
    ckpt = load_checkpoint(checkpoint)
    store = open_chip_store(chips)
    _check_compatible(ckpt, store.scheme, store.bands, checkpoint, chips)
    painter = generator_painter(ckpt, store.bands, dev, seed=seed, path=checkpoint)
    report = evaluate_painter(
        painter, chips, split, segmenter=segmenter, inception_weights=inception_weights,
        batch_size=batch_size, device=dev, seed=seed, quiet=quiet, dataset_cls=ChipDataset,
    )
    report["checkpoint"] = str(checkpoint)
    report["step"] = ckpt.get("step")
    if out is not None:
        write_report(report, out)
    if fig_path is not None:
        write_figure(report, fig_path)
        report["figure"] = str(fig_path)
    return report


def _figure_path(out: Path | None, figure) -> Path | None:
    if figure is True:
        return out.with_suffix(".png") if out is not None else None
    if figure in (None, False):
        return None
    return Path(figure)


def evaluate_painter(
    painter: Painter,
    chips: str | Path,
    split: str = "val",
    *,
    segmenter: SegmenterSettings | None = DEFAULT_SEGMENTER,
    inception_weights: str | Path | None = None,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    seed: int = 0,
    quiet: bool = False,
    dataset_cls=None,
) -> dict[str, Any]:
    """Measure any painter (masks -> normalised images) like :func:`evaluate` measures a model.

    ``painter`` is reported as the ``model`` method; the baselines are computed alongside. This is
    what :func:`evaluate` runs once it has built the generator; tests and custom generators call
    it directly.

    Returns:
        The report dict (without ``checkpoint``/``step``).
    """
    from tqdm.auto import tqdm

    check_seed(seed)
    if dataset_cls is None:
        from geospade.data.chips import ChipDataset as dataset_cls

    chips = Path(chips)
    dev = resolve_device(device)
    show = progress_enabled(quiet)
    data = dataset_cls(chips, split)
    store = data.store
    scheme, bands = store.scheme, store.bands
    k, c = scheme.num_classes, len(bands)
    if split != "train":
        train = dataset_cls(chips, "train")
    else:
        train = data
    notes: list[str] = []

    # Segmentation consistency: a U-Net trained on real train chips (cached per chip store, or
    # in the user's cache folder when the store is read-only).
    seg_net, seg_info = None, None
    if segmenter is not None:
        seg_net, path = load_cached_segmenter(chips, segmenter, dev)
        cached = seg_net is not None
        if seg_net is None:
            def load(i: int) -> tuple[np.ndarray, np.ndarray]:
                item = train[i]
                return item["image"].numpy(), item["mask"].numpy().astype(np.uint8)

            seg_net = train_segmenter(load, len(train), c, k, segmenter, dev, progress=show)
            path = cache_segmenter(chips, seg_net, segmenter, c, k)
        if path is None:
            notes.append(f"segmenter not cached: neither chip store {chips} nor "
                         f"{user_cache_dir()} can be written, so it is retrained every time")
        elif path != cache_path(chips, segmenter):
            notes.append(f"segmenter cached in {path}, not in chip store {chips}, which cannot "
                         "be written")
        seg_info = {"settings": asdict(segmenter), "cache": None if path is None else str(path),
                    "cached": cached}

    # FID only with local Inception weights.
    weights = metrics.find_inception_weights(inception_weights)
    rgb = metrics.rgb_band_indices([b.name for b in bands])
    inception = None
    if weights is None:
        fid_note = ("FID skipped: no Inception v3 weights on this machine (pass inception_weights "
                    "or set GEOSPADE_INCEPTION_WEIGHTS; geospade never downloads them)")
    elif rgb is None:
        fid_note = "FID skipped: it needs at least 3 bands"
    else:
        inception = metrics.load_inception(weights, str(dev))
        fid_note = f"FID on bands {[bands[i].name for i in rgb]} with Inception weights {weights}"
    notes.append(fid_note)

    means = _class_means(train, k, c, show)
    perm = derangement(len(data), seed)
    painters: dict[str, Painter] = {"model": painter, "class_mean": class_mean_painter(means)}
    if perm is None:
        notes.append("shuffled_real baseline skipped: the split has a single chip")
    else:
        painters["shuffled_real"] = shuffled_painter(lambda i: data[i]["image"].numpy(), perm)

    bins = metrics.bins_for_dtype(bands[0].dtype)
    real = _Scores(k, c, bins, seg_net is not None)
    scores = {name: _Scores(k, c, bins, seg_net is not None) for name in painters}
    samples: dict[str, list[np.ndarray]] = {"mask": [], "real": [], "model": [], "ids": []}

    n = len(data)
    for start in tqdm(range(0, n, batch_size), desc="evaluate", disable=not show, leave=False):
        indices = list(range(start, min(start + batch_size, n)))
        items = [data[i] for i in indices]
        masks = np.stack([it["mask"].numpy() for it in items]).astype(np.uint8)
        images = np.stack([it["image"].numpy() for it in items])
        outputs = {"real": images}
        outputs.update({name: p(masks, indices) for name, p in painters.items()})
        for name, imgs in outputs.items():
            acc = real if name == "real" else scores[name]
            acc.add(imgs, masks)
            if acc.confusion is not None:
                acc.confusion.add(masks, predict(seg_net, imgs, dev))
            if inception is not None:
                acc.features.append(metrics.inception_features(inception, imgs[:, rgb], str(dev)))
        for j, it in enumerate(items):
            if len(samples["mask"]) < FIGURE_SAMPLES:
                samples["mask"].append(masks[j])
                samples["real"].append(images[j])
                samples["model"].append(outputs["model"][j])
                samples["ids"].append(it["id"])

    span = np.array([(b.high - b.low) / 2.0 for b in bands])
    real_tex = real.texture.mean()
    real_miou = real.confusion.miou() if real.confusion is not None else float("nan")
    methods: dict[str, Any] = {}
    for name, acc in scores.items():
        w = acc.hist.distance(real.hist)  # (K, C) normalised
        w_src = w * span[None, :]
        tex = acc.texture.ratio(real.texture)
        per_class = _row_mean(w)
        entry: dict[str, Any] = {
            "wasserstein": {
                "per_class": w, "per_class_source": w_src, "per_class_mean": per_class,
                "mean": metrics.nanmean(per_class),
                "mean_source": metrics.nanmean(_row_mean(w_src)),
            },
            "texture": {
                "per_class_gradient": acc.texture.mean(), "per_class_ratio": tex,
                "mean_ratio": metrics.nanmean(tex),
            },
        }
        if acc.confusion is not None:
            miou = acc.confusion.miou()
            entry["segmentation"] = {
                "miou": miou, "per_class_iou": acc.confusion.iou(),
                "ratio": miou / real_miou if real_miou > 0 else float("nan"),
            }
        if inception is not None:
            feats = np.concatenate(acc.features)
            entry["fid"] = (metrics.frechet_distance(np.concatenate(real.features), feats)
                            if len(feats) >= 2 else None)
        methods[name] = entry

    report = {
        "format": REPORT_FORMAT,
        "format_version": REPORT_VERSION,
        "geospade_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "chips": str(chips),
        "split": split,
        "num_chips": n,
        "scheme": scheme.name,
        "classes": scheme.names,
        "colors": ["#{:02x}{:02x}{:02x}".format(*cls.color) for cls in scheme.classes],
        "bands": [b.name for b in bands],
        "dtype": bands[0].dtype,
        "class_pixels": real.hist.pixels(),
        "histogram_bins": bins,
        "real": {
            "texture": {"per_class_gradient": real_tex},
            "segmentation": (
                {"miou": real_miou, "per_class_iou": real.confusion.iou()}
                if real.confusion is not None else None
            ),
        },
        "methods": methods,
        "segmenter": seg_info,
        "fid": {"available": inception is not None, "note": fid_note},
        "notes": notes,
    }
    report = _json(report)
    report["_samples"] = samples  # numpy arrays for the figure; never written to JSON
    return report


# -- outputs -------------------------------------------------------------------------------------


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        write(tmp)


def write_report(report: dict[str, Any], path: str | Path) -> Path:
    """Write ``report`` as JSON (atomically; private keys starting with ``_`` are left out)."""
    path = Path(path)
    public = {k: v for k, v in report.items() if not k.startswith("_")}
    # _json already turned NaN/inf into None; allow_nan=False keeps it strict JSON regardless.
    text = json.dumps(_json(public), indent=2, allow_nan=False)
    _atomic_write(path, lambda tmp: tmp.write_text(text + "\n"))
    return path


def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    return f"{v:.{digits}f}"


def headline(report: dict[str, Any], method: str = "model") -> dict[str, float | None]:
    """The few numbers that summarise a method: mean W1, texture ratio, mIoU ratio, FID."""
    m = report["methods"].get(method)
    if m is None:
        return {}
    return {
        "wasserstein": m["wasserstein"]["mean"],
        "wasserstein_source": m["wasserstein"]["mean_source"],
        "texture_ratio": m["texture"]["mean_ratio"],
        "miou_ratio": (m.get("segmentation") or {}).get("ratio"),
        "fid": m.get("fid"),
    }


def format_summary(report: dict[str, Any]) -> str:
    """A plain-text table of the report: headline numbers per method, then per class."""
    methods = [m for m in METHODS if m in report["methods"]]
    lines = [
        f"evaluation of {report.get('checkpoint', 'a generator')} on {report['chips']} "
        f"({report['split']} split, {report['num_chips']} chips)",
        "",
    ]
    head = f"{'metric':<28}" + "".join(f"{METHOD_LABELS[m]:>15}" for m in methods)
    lines += [head, "-" * len(head)]
    rows = [
        ("spectral W1 (normalised)", "wasserstein", 4),
        (f"spectral W1 ({report['dtype']} units)", "wasserstein_source", 2),
        ("texture ratio (1 = real)", "texture_ratio", 3),
        ("seg. mIoU ratio (1 = real)", "miou_ratio", 3),
    ]
    if report["fid"]["available"]:
        rows.append(("FID", "fid", 2))
    heads = {m: headline(report, m) for m in methods}
    for label, key, digits in rows:
        cells = "".join(f"{_fmt(heads[m][key], digits):>15}" for m in methods)
        lines.append(f"{label:<28}{cells}")
    seg = report["real"]["segmentation"]
    if seg is not None:
        lines.append(f"segmenter mIoU on real {report['split']} images: {_fmt(seg['miou'])}")
    if not report["fid"]["available"]:
        lines.append(report["fid"]["note"])
    lines += ["", "per class (W1 normalised / texture ratio):"]
    head = f"{'class':<24}{'pixels':>10}" + "".join(f"{METHOD_LABELS[m]:>22}" for m in methods)
    lines += [head, "-" * len(head)]
    for i, name in enumerate(report["classes"]):
        px = report["class_pixels"][i]
        if not px:
            continue
        cells = ""
        for m in methods:
            w = report["methods"][m]["wasserstein"]["per_class_mean"][i]
            t = report["methods"][m]["texture"]["per_class_ratio"][i]
            cells += f"{_fmt(w, 4) + ' / ' + _fmt(t, 2):>22}"
        lines.append(f"{name[:23]:<24}{px:>10}" + cells)
    return "\n".join(lines)


def _display(image: np.ndarray, bands: Sequence[str]) -> np.ndarray:
    """A normalised image ``(C, H, W)`` as an RGB (or grey) array in 0..1 for plotting."""
    rgb = metrics.rgb_band_indices(bands)
    img = image[rgb] if rgb is not None else image[:1].repeat(3, axis=0)
    return np.clip((np.moveaxis(img, 0, -1) + 1.0) / 2.0, 0.0, 1.0)


def write_figure(report: dict[str, Any], path: str | Path) -> Path:
    """A PNG: per-class W1 and texture bars for each method, and mask | real | generated samples."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    samples = report.get("_samples") or {"mask": []}
    methods = [m for m in METHODS if m in report["methods"]]
    present = [i for i, px in enumerate(report["class_pixels"]) if px]
    names = [report["classes"][i] for i in present]
    nrows = 1 + len(samples["mask"])
    fig = plt.figure(figsize=(10, 3.6 + 2.6 * len(samples["mask"])))
    grid = fig.add_gridspec(nrows, 6, height_ratios=[1.2] + [1.0] * (nrows - 1))
    x = np.arange(len(present))
    width = 0.8 / max(len(methods), 1)
    for col, (key, sub, title) in enumerate([
        ("wasserstein", "per_class_mean", "spectral W1 (normalised, lower is better)"),
        ("texture", "per_class_ratio", "texture ratio (1 = real)"),
    ]):
        ax = fig.add_subplot(grid[0, col * 3 : col * 3 + 3])
        for j, m in enumerate(methods):
            vals = [report["methods"][m][key][sub][i] for i in present]
            vals = [np.nan if v is None else v for v in vals]
            ax.bar(x + (j - (len(methods) - 1) / 2) * width, vals, width, label=METHOD_LABELS[m])
        if key == "texture":
            ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    palette = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in report["colors"]])
    table = np.full((256, 3), 255, dtype=np.uint8)  # ignore/nodata shows white
    table[: len(palette)] = palette
    for r, mask in enumerate(samples["mask"]):
        panels = [("mask", table[mask]), ("real", _display(samples["real"][r], report["bands"])),
                  ("generated", _display(samples["model"][r], report["bands"]))]
        for col, (title, img) in enumerate(panels):
            ax = fig.add_subplot(grid[r + 1, col * 2 : col * 2 + 2])
            ax.imshow(img, interpolation="nearest")
            ax.set_title(f"{title} ({samples['ids'][r]})" if col == 0 else title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    _atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=80, format="png"))
    plt.close(fig)
    return path


__all__ = [
    "evaluate", "evaluate_painter", "format_summary", "headline", "write_figure", "write_report",
]
