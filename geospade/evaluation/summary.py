"""The report read by a person: the headline numbers (usefulness as training data first, then
the realism of each method) and a terminal table.

(Schema of the report: :mod:`geospade.evaluation.report`, docs/design.md "Evaluation report".)
"""

from __future__ import annotations

from typing import Any

METHODS = ("model", "class_mean", "shuffled_real")
METHOD_LABELS = {"model": "model", "class_mean": "class-mean", "shuffled_real": "shuffled real"}


def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    return f"{v:.{digits}f}"


UTILITY_HEADLINE = ("utility_ratio", "augmentation_gain", "real_trained_miou",
                    "class_mean_ratio")
"""The TSTR numbers that lead a headline, each with its sd over seeds (``<key>_sd``)."""


def headline(report: dict[str, Any], method: str = "model") -> dict[str, float | None]:
    """The few numbers that summarise a method, usefulness first.

    For ``model``: the TSTR ``utility_ratio``, ``augmentation_gain``, ``real_trained_miou`` (the
    mIoU of the U-Net trained on real chips) and ``class_mean_ratio``, each followed by its sd
    over seeds (``<key>_sd``; all None when TSTR was not measured). Then, for every method, its
    realism: mean W1 (``wasserstein``, ``wasserstein_source``), ``texture_ratio``,
    segmentation consistency (``miou_ratio``) and ``fid`` (None when not measured).

    Returns:
        The numbers by name (``{}`` for a method not in the report).
    """
    m = report["methods"].get(method)
    if m is None:
        return {}
    head: dict[str, float | None] = {}
    if method == "model":
        head.update(_utility_headline(report.get("utility")))
    head.update({
        "wasserstein": m["wasserstein"]["mean"],
        "wasserstein_source": m["wasserstein"]["mean_source"],
        "texture_ratio": m["texture"]["mean_ratio"],
        "miou_ratio": (m.get("segmentation") or {}).get("ratio"),
        "fid": m.get("fid"),
    })
    return head


def _utility_headline(utility: dict[str, Any] | None) -> dict[str, float | None]:
    spreads = {} if utility is None else {
        "utility_ratio": utility["utility_ratio"],
        "augmentation_gain": utility["augmentation_gain"],
        "real_trained_miou": utility["conditions"]["real"]["miou"],
        "class_mean_ratio": utility["class_mean_ratio"],
    }
    head: dict[str, float | None] = {}
    for key in UTILITY_HEADLINE:
        spread = spreads.get(key) or {}
        head[key] = spread.get("mean")
        head[f"{key}_sd"] = spread.get("sd")
    return head


def format_summary(report: dict[str, Any]) -> str:
    """A plain-text table of the report: usefulness as training data (TSTR) first, then the
    realism of each method (headline numbers, then per class)."""
    methods = [m for m in METHODS if m in report["methods"]]
    lines = [
        f"evaluation of {report.get('checkpoint', 'a generator')} on {report['chips']} "
        f"({report['split']} split, {report['num_chips']} chips)",
        "",
    ]
    if report.get("utility") is not None:
        from geospade.evaluation.utility import utility_lines

        lines += utility_lines(report["utility"], report["split"]) + [""]
    return "\n".join(lines + _headline_table(report, methods) + _class_table(report, methods))


def _headline_table(report: dict[str, Any], methods: list[str]) -> list[str]:
    """One row per realism number, one column per method."""
    head = f"{'realism of the images (per method)':<44}" + "".join(
        f"{METHOD_LABELS[m]:>15}" for m in methods)
    lines = [head, "-" * len(head)]
    rows = [
        ("realism: spectral W1 (normalised)", "wasserstein", 4),
        (f"realism: spectral W1 ({report['dtype']} units)", "wasserstein_source", 2),
        ("realism: texture ratio (1 = real)", "texture_ratio", 3),
        ("segmentation consistency: mIoU ratio", "miou_ratio", 3),
    ]
    if report["fid"]["available"]:
        rows.append(("realism: FID", "fid", 2))
    heads = {m: headline(report, m) for m in methods}
    for label, key, digits in rows:
        cells = "".join(f"{_fmt(heads[m][key], digits):>15}" for m in methods)
        lines.append(f"{label:<44}{cells}")
    seg = report["real"]["segmentation"]
    if seg is not None:
        lines += ["(segmentation consistency: a U-Net trained on real chips reads the synthetic "
                  "image;", f" its mIoU there over its mIoU on the real image, 1 = real; mIoU "
                  f"{_fmt(seg['miou'])} on the real {report['split']} images)"]
    if not report["fid"]["available"]:
        lines.append(report["fid"]["note"])
    return lines


def _class_table(report: dict[str, Any], methods: list[str]) -> list[str]:
    """W1 and texture ratio of each class present in the split, one column per method."""
    lines = ["", "per class (W1 normalised / texture ratio):"]
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
    return lines
