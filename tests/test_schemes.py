"""Class schemes: built-in facts, encoding (table and general paths), JSON files, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from geospade.errors import GeospadeError
from geospade.schemes import (
    CHESAPEAKE7,
    CHESAPEAKE13,
    IGNORE_INDEX,
    NLCD,
    ClassScheme,
    UnknownClassValuesError,
    load_scheme,
)


def test_builtin_schemes_carry_the_published_values_and_colours():
    assert load_scheme("chesapeake7") is CHESAPEAKE7
    assert CHESAPEAKE7.values == [1, 2, 3, 4, 5, 6]
    assert CHESAPEAKE7.classes[0].color == (0, 197, 255)
    assert CHESAPEAKE7.classes[5].name == "impervious roads"
    assert set(CHESAPEAKE7.nodata) == {0, 15} and CHESAPEAKE7.ignore == (7,)
    assert CHESAPEAKE13.num_classes == 12 and CHESAPEAKE13.ignore == (13,)
    assert CHESAPEAKE13.classes[CHESAPEAKE13.index_of(7)].color == (255, 0, 0)
    assert load_scheme("NLCD") is NLCD
    assert NLCD.values[0] == 11 and NLCD.values[-1] == 95
    assert NLCD.classes[NLCD.index_of("evergreen forest")].color == (28, 95, 44)


@pytest.mark.parametrize("dtype", ["uint8", "int16", "uint16", "int32", "float32", "float64"])
def test_encode_maps_values_to_indices_and_nodata_to_ignore(dtype):
    raw = np.array([[1, 2, 3, 4], [5, 6, 7, 0], [15, 3, 3, 1]], dtype=dtype)
    out = CHESAPEAKE7.encode(raw)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(
        out, [[0, 1, 2, 3], [4, 5, IGNORE_INDEX, IGNORE_INDEX], [IGNORE_INDEX, 2, 2, 0]]
    )


def test_encode_table_path_equals_general_path():
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 16, size=(64, 64))
    raw[raw > 7] = 15
    expected = CHESAPEAKE7.encode(raw.astype(np.float64))
    for dtype in ("uint8", "int8", "int16", "uint16"):
        np.testing.assert_array_equal(CHESAPEAKE7.encode(raw.astype(dtype)), expected)


def test_file_nodata_is_ignore_and_never_class_zero():
    raw = np.array([[1, 2, 99]], dtype=np.uint8)
    out = NLCD.encode(np.array([[11, 0, 250]], dtype=np.uint8))
    np.testing.assert_array_equal(out, [[0, IGNORE_INDEX, IGNORE_INDEX]])
    # 99 is the file's nodata: ignore, not an unknown value.
    np.testing.assert_array_equal(CHESAPEAKE7.encode(raw, file_nodata=99), [[0, 1, IGNORE_INDEX]])
    floats = np.array([[1.0, np.nan, -9999.0]], dtype=np.float32)
    np.testing.assert_array_equal(
        CHESAPEAKE7.encode(floats, file_nodata=-9999.0), [[0, IGNORE_INDEX, IGNORE_INDEX]]
    )


def test_unknown_values_error_lists_values_and_counts_or_are_ignored():
    raw = np.array([[1, 9, 9], [42, 2, 9]], dtype=np.uint16)
    with pytest.raises(UnknownClassValuesError) as info:
        CHESAPEAKE7.encode(raw)
    assert info.value.counts == {9: 3, 42: 1}
    assert "9 (3 px)" in str(info.value) and "42 (1 px)" in str(info.value)
    out = CHESAPEAKE7.encode(raw, unknown="ignore")
    np.testing.assert_array_equal(out, [[0, 255, 255], [255, 1, 255]])
    with pytest.raises(UnknownClassValuesError):
        CHESAPEAKE7.encode(np.array([[1.5]]))  # a float that is not integral is not a class


def test_json_scheme_file_round_trips(tmp_path):
    path = tmp_path / "scheme.json"
    path.write_text(json.dumps({
        "name": "my-scheme", "nodata": [0, -99999],
        "classes": [{"value": 1, "name": "water", "color": "#1f78b4"},
                    {"value": 2, "name": "forest", "color": "#33a02c"}],
    }))
    scheme = load_scheme(path)
    assert scheme.name == "my-scheme" and scheme.names == ["water", "forest"]
    assert scheme.classes[0].color == (0x1F, 0x78, 0xB4)
    assert ClassScheme.from_dict(scheme.to_dict()) == scheme
    cmap = scheme.colormap()
    assert cmap[1] == (0x33, 0xA0, 0x2C, 255) and cmap[IGNORE_INDEX] == (0, 0, 0, 0)
    np.testing.assert_array_equal(
        scheme.encode(np.array([[2, 1, 0, -99999]], dtype=np.int32)), [[1, 0, 255, 255]]
    )


def test_bad_scheme_files_and_names_are_one_line_errors(tmp_path):
    with pytest.raises(GeospadeError, match="unknown scheme"):
        load_scheme("no-such-scheme")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(GeospadeError, match="cannot read scheme file"):
        load_scheme(bad)
    bad.write_text(json.dumps({"classes": [{"value": 1.5, "name": "x"}]}))
    with pytest.raises(GeospadeError, match="invalid class scheme"):
        load_scheme(bad)
    bad.write_text(json.dumps({"nodata": [1], "classes": [{"value": 1, "name": "x"}]}))
    with pytest.raises(GeospadeError, match="both a class and nodata"):
        load_scheme(bad)
