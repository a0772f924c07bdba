"""The report read by a person: the headline numbers of each method and a terminal table.

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
    return "\n".join(lines + _headline_table(report, methods) + _class_table(report, methods))


def _headline_table(report: dict[str, Any], methods: list[str]) -> list[str]:
    """One row per headline number, one column per method."""
    head = f"{'metric':<28}" + "".join(f"{METHOD_LABELS[m]:>15}" for m in methods)
    lines = [head, "-" * len(head)]
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
