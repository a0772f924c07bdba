"""Class colours: classes a scheme gives no colour get distinct, well-separated ones."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from geospade.schemes import (
    CHESAPEAKE7,
    ClassScheme,
    LandCoverClass,
    distinct_colors,
    load_scheme,
)


def _lab(rgb) -> np.ndarray:
    """CIELAB (D65) of an sRGB colour, written out here to check the module independently."""
    c = np.asarray(rgb, dtype=float) / 255
    linear = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    x, y, z = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722],
                        [0.0193, 0.1192, 0.9505]]) @ linear / [0.95047, 1.0, 1.08883]
    fx, fy, fz = (t ** (1 / 3) if t > 216 / 24389 else (24389 / 27 * t + 16) / 116
                  for t in (x, y, z))
    return np.array([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)])


def _lab_distance(a, b) -> float:
    return float(np.linalg.norm(_lab(a) - _lab(b)))


def _scheme_without_colours(n: int) -> ClassScheme:
    return ClassScheme.from_dict(
        {"classes": [{"value": v, "name": f"class {v}"} for v in range(1, n + 1)]}
    )


@pytest.mark.parametrize("n", [2, 7, 13, 20, 40])
def test_a_scheme_without_colours_gets_n_distinct_colours(n):
    colours = [c.color for c in _scheme_without_colours(n).classes]
    assert len(set(colours)) == n
    assert all(isinstance(x, int) and 0 <= x <= 255 for c in colours for x in c)
    # Well separated: no two closer than a small perceptual distance (CIE76; ~2.3 is "just
    # noticeable"), and the smallest gap of a short legend is large.
    gaps = [_lab_distance(a, b) for a, b in itertools.combinations(colours, 2)]
    assert min(gaps) > 15
    if n <= 7:
        assert min(gaps) > 45


def test_no_class_is_drawn_grey_any_more():
    scheme = _scheme_without_colours(6)
    assert (128, 128, 128) not in [c.color for c in scheme.classes]
    palette = scheme.palette()
    # Not a blank square: every channel varies across the classes.
    assert (palette.max(axis=0) - palette.min(axis=0) > 50).all()


def test_given_colours_are_kept_and_not_reused(tmp_path):
    path = tmp_path / "scheme.json"
    path.write_text(json.dumps({"name": "mixed", "classes": [
        {"value": 1, "name": "water", "color": "#1f78b4"},
        {"value": 2, "name": "forest"},
        {"value": 3, "name": "fields", "color": [51, 160, 44]},
        {"value": 4, "name": "roads"},
        {"value": 5, "name": "houses"},
    ]}))
    scheme = load_scheme(path)
    colours = [c.color for c in scheme.classes]
    assert colours[0] == (0x1F, 0x78, 0xB4) and colours[2] == (51, 160, 44)
    assert len(set(colours)) == 5
    for auto in (colours[1], colours[3], colours[4]):
        assert min(_lab_distance(auto, colours[0]), _lab_distance(auto, colours[2])) > 15


def test_chosen_colours_are_deterministic_and_round_trip():
    a, b = _scheme_without_colours(9), _scheme_without_colours(9)
    assert [c.color for c in a.classes] == [c.color for c in b.classes]
    again = ClassScheme.from_dict(a.to_dict())
    assert [c.color for c in again.classes] == [c.color for c in a.classes]
    # A longer legend starts with the same colours (the palette is a sequence).
    assert [c.color for c in _scheme_without_colours(4).classes] == [
        c.color for c in a.classes[:4]]


def test_python_classes_may_leave_out_colours_and_builtins_are_unchanged():
    scheme = ClassScheme("py", (LandCoverClass(1, "a", (0, 197, 255)), LandCoverClass(2, "b")))
    assert scheme.classes[0].color == (0, 197, 255)
    assert scheme.classes[1].color not in (None, (0, 197, 255))
    assert scheme.colormap()[1][:3] == scheme.classes[1].color
    assert CHESAPEAKE7.classes[5].color == (0, 0, 0)


def test_distinct_colors_avoids_the_given_ones():
    avoid = distinct_colors(3)
    assert distinct_colors(4, avoid=avoid)[0] not in avoid
    assert len(set(distinct_colors(254))) == 254
    assert distinct_colors(0) == []
