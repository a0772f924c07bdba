"""Class schemes: raw land-cover raster values -> contiguous class indices, names and colours.

A scheme maps each raw value of a land-cover raster to an index ``0..K-1``. Values that mean
"unlabelled" (the scheme's ``nodata`` values, the file's nodata value, and values listed as
``ignore``) map to :data:`IGNORE_INDEX`, never to a class.
"""

from __future__ import annotations

import functools
import json
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from geospade.errors import ArgumentError, GeospadeError

IGNORE_INDEX = 255
"""Class index of pixels with no label (nodata, unlabelled classes, unknown values when ignored)."""


@dataclass(frozen=True)
class LandCoverClass:
    """One class: its raw value, name and RGB colour (None: the scheme picks a distinct one)."""

    value: int
    name: str
    color: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class ClassScheme:
    """A land-cover class scheme.

    Args:
        name: short name, e.g. ``chesapeake7``.
        classes: the classes in index order; ``classes[i].value`` is the raw value of index ``i``.
        nodata: raw values meaning "no data".
        ignore: raw values that are valid but unlabelled (e.g. Aberdeen Proving Ground).

    Classes given without a colour get one from :func:`distinct_colors`, away from the colours
    the other classes were given, so masks and previews of any scheme show every class.
    """

    name: str
    classes: tuple[LandCoverClass, ...]
    nodata: tuple[float, ...] = ()
    ignore: tuple[float, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.classes:
            raise GeospadeError(f"class scheme {self.name!r} has no classes")
        if len(self.classes) >= IGNORE_INDEX:
            raise GeospadeError(
                f"class scheme {self.name!r} has more than {IGNORE_INDEX - 1} classes"
            )
        by_value: dict[int, str] = {}
        by_name: dict[str, str] = {}
        for c in self.classes:
            if c.value in by_value:
                raise GeospadeError(
                    f"class scheme {self.name!r} gives raw value {c.value} to two classes "
                    f"({by_value[c.value]!r} and {c.name!r})"
                )
            by_value[c.value] = c.name
            # Names are matched ignoring case and spaces around them (index_of, --edit-field),
            # so two names that differ only so would make a class name ambiguous.
            key = c.name.strip().lower()
            if not key:
                raise GeospadeError(
                    f"class scheme {self.name!r}: the class of value {c.value} has an empty name"
                )
            if key in by_name:
                raise GeospadeError(
                    f"class scheme {self.name!r} has two classes named {by_name[key]!r} and "
                    f"{c.name!r} (class names are matched ignoring case)"
                )
            by_name[key] = c.name
        values = list(by_value)
        clash = set(values) & (set(self.nodata) | set(self.ignore))
        if clash:
            raise GeospadeError(
                f"class scheme {self.name!r}: values {sorted(clash)} "
                "are both a class and nodata/ignore"
            )
        self._fill_colors()

    def _fill_colors(self) -> None:
        """Give each class without a colour a distinct one (given colours are kept)."""
        missing = [i for i, c in enumerate(self.classes) if c.color is None]
        if not missing:
            return
        given = [c.color for c in self.classes if c.color is not None]
        chosen = iter(distinct_colors(len(missing), avoid=given))
        classes = tuple(
            replace(c, color=next(chosen)) if c.color is None else c for c in self.classes
        )
        # Frozen dataclass: the one place its field is completed after validation.
        object.__setattr__(self, "classes", classes)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def values(self) -> list[int]:
        return [c.value for c in self.classes]

    def palette(self) -> np.ndarray:
        """RGB colours as a ``(K, 3)`` uint8 array, in index order."""
        return np.array([c.color for c in self.classes], dtype=np.uint8)

    def colormap(self) -> dict[int, tuple[int, int, int, int]]:
        """A rasterio colour table for class-index rasters (ignore pixels are transparent black)."""
        cmap = {i: (*c.color, 255) for i, c in enumerate(self.classes)}
        cmap[IGNORE_INDEX] = (0, 0, 0, 0)
        return cmap

    def index_of(self, value_or_name: int | str) -> int:
        """Class index for a raw value (int or numeric string) or a class name (any case)."""
        if isinstance(value_or_name, str):
            key = value_or_name.strip().lower()
            for i, c in enumerate(self.classes):
                if c.name.lower() == key:
                    return i
            try:
                value_or_name = int(float(key))
            except ValueError:
                raise GeospadeError(
                    f"{value_or_name!r} is not a class of scheme {self.name!r} "
                    f"(classes: {', '.join(self.names)})"
                ) from None
        for i, c in enumerate(self.classes):
            if c.value == value_or_name:
                return i
        raise GeospadeError(
            f"value {value_or_name} is not a class of scheme {self.name!r} (values: {self.values})"
        )

    # -- encoding -------------------------------------------------------------------------------

    def unlabelled_mask(self, raw: np.ndarray, file_nodata: float | None = None) -> np.ndarray:
        """True where ``raw`` is nodata (scheme's or file's), NaN, or an ignore value."""
        mask = np.zeros(raw.shape, dtype=bool)
        if np.issubdtype(raw.dtype, np.floating):
            mask |= ~np.isfinite(raw)
        for v in (*self.nodata, *self.ignore, *(() if file_nodata is None else (file_nodata,))):
            if v is not None and not (isinstance(v, float) and np.isnan(v)):
                mask |= raw == v
        return mask

    def unknown_counts(self, raw: np.ndarray, file_nodata: float | None = None) -> dict[float, int]:
        """Raw values that are neither a class nor unlabelled, with their pixel counts."""
        known = np.isin(raw, self.values) | self.unlabelled_mask(raw, file_nodata)
        if known.all():
            return {}
        vals, counts = np.unique(raw[~known], return_counts=True)
        return {_plain_number(v): int(n) for v, n in zip(vals, counts, strict=True)}

    def encode(
        self,
        raw: np.ndarray,
        file_nodata: float | None = None,
        unknown: str = "error",
    ) -> np.ndarray:
        """Map raw values to class indices (uint8); unlabelled pixels become :data:`IGNORE_INDEX`.

        Args:
            raw: label values, any integer or float dtype (floats must hold integral values).
            file_nodata: the raster's own nodata value, if any.
            unknown: ``"error"`` raises on values outside the scheme; ``"ignore"`` maps them to
                :data:`IGNORE_INDEX`.

        Returns:
            uint8 array of the same shape.
        """
        if unknown not in ("error", "ignore"):
            raise ValueError("unknown must be 'error' or 'ignore'")
        if raw.dtype.kind in "ui" and raw.dtype.itemsize <= 2 and raw.size:
            return self._encode_lookup(raw, file_nodata, unknown)
        unlabelled = self.unlabelled_mask(raw, file_nodata)
        out = np.full(raw.shape, IGNORE_INDEX, dtype=np.uint8)
        matched = unlabelled.copy()
        for i, v in enumerate(self.values):
            hit = raw == v
            out[hit] = i
            matched |= hit
        if unknown == "error" and not matched.all():
            raise UnknownClassValuesError(self, self.unknown_counts(raw, file_nodata))
        return out

    def lookup(self, raw: np.ndarray, file_nodata: float | None = None) -> np.ndarray:
        """Class index per pixel of an 8/16-bit integer raster by one table lookup: int16,
        :data:`IGNORE_INDEX` for unlabelled values, -1 for values outside the scheme."""
        info = np.iinfo(raw.dtype)
        # Table over the dtype's whole range.
        table = np.full(int(info.max) - int(info.min) + 1, -1, dtype=np.int16)
        unlabelled = [*self.nodata, *self.ignore, *(() if file_nodata is None else (file_nodata,))]
        for v in unlabelled:
            if v is not None and float(v).is_integer() and info.min <= v <= info.max:
                table[int(v) - int(info.min)] = IGNORE_INDEX
        for i, v in enumerate(self.values):
            if info.min <= v <= info.max:
                table[v - int(info.min)] = i
        return table[raw.astype(np.int32) - int(info.min) if info.min else raw]

    def _encode_lookup(
        self, raw: np.ndarray, file_nodata: float | None, unknown: str
    ) -> np.ndarray:
        """:meth:`encode` for 8/16-bit integer rasters: one table lookup per pixel."""
        looked_up = self.lookup(raw, file_nodata)
        outside = looked_up < 0
        if outside.any():
            if unknown == "error":
                raise UnknownClassValuesError(self, self.unknown_counts(raw, file_nodata))
            looked_up[outside] = IGNORE_INDEX
        return looked_up.astype(np.uint8)

    # -- (de)serialisation ----------------------------------------------------------------------

    def to_dict(self) -> dict:
        """The JSON form of a scheme file (docs/design.md, "Class scheme files"; plus
        ``ignore``), used in manifests and checkpoints."""
        return {
            "name": self.name,
            "nodata": [_plain_number(v) for v in self.nodata],
            "ignore": [_plain_number(v) for v in self.ignore],
            "classes": [
                {"value": c.value, "name": c.name, "color": "#{:02x}{:02x}{:02x}".format(*c.color)}
                for c in self.classes
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping, origin: str | None = None) -> ClassScheme:
        """A scheme from its JSON form (see :meth:`to_dict`), checking every key.

        Args:
            data: ``{"name", "nodata", "ignore", "classes": [{"value", "name", "color"}]}``;
                only ``classes`` and each class's ``value`` and ``name`` are required (a class
                without ``color`` gets one from :func:`distinct_colors`).
            origin: where ``data`` came from (a file name), for error messages.

        Raises:
            GeospadeError: a missing, unknown or mistyped key, or an inconsistent scheme, in
                one line naming the key and ``origin``.
        """
        where = f"invalid class scheme {origin}" if origin else "invalid class scheme"
        if not isinstance(data, Mapping):
            raise GeospadeError(
                f"{where}: expected a JSON object with a 'classes' list, not {_kind(data)}"
            )
        _check_scheme_keys(where, "", data, _SCHEME_KEYS)
        if "classes" not in data:
            raise GeospadeError(
                f"{where}: missing key 'classes' (a list of "
                '{"value": 1, "name": "water", "color": "#1f78b4"} objects)'
            )
        if not isinstance(data["classes"], list):
            raise GeospadeError(
                f"{where}: 'classes' must be a list of class objects, not {_kind(data['classes'])}"
            )
        name = data.get("name", "custom")
        if not isinstance(name, str):
            raise GeospadeError(f"{where}: 'name' must be a string, not {_kind(name)}")
        classes = []
        for i, c in enumerate(data["classes"]):
            at = f"classes[{i}]"
            if not isinstance(c, Mapping):
                raise GeospadeError(
                    f"{where}: {at} must be an object with 'value' and 'name', not {_kind(c)}"
                )
            _check_scheme_keys(where, f"{at} ", c, _CLASS_KEYS)
            for key in ("value", "name"):
                if key not in c:
                    raise GeospadeError(f"{where}: {at} has no {key!r} key")
            if not _is_number(c["value"]) or not float(c["value"]).is_integer():
                raise GeospadeError(
                    f"{where}: {at} 'value' must be an integer, not {c['value']!r}"
                )
            if not isinstance(c["name"], str):
                raise GeospadeError(f"{where}: {at} 'name' must be a string, not {c['name']!r}")
            # No colour: the scheme chooses a distinct one (a grey default made masks blank).
            color = _parse_color(c["color"]) if "color" in c else None
            if "color" in c and color is None:
                raise GeospadeError(
                    f'{where}: {at} \'color\' must be "#rrggbb" or [r, g, b] (0-255), '
                    f"not {c['color']!r}"
                )
            classes.append(LandCoverClass(int(c["value"]), c["name"], color))
        unlabelled = {}
        for key in ("nodata", "ignore"):
            values = data.get(key)
            values = [] if values is None else values if isinstance(values, list) else [values]
            if not all(_is_number(v) for v in values):
                raise GeospadeError(
                    f"{where}: {key!r} must be a number or a list of numbers, not {data[key]!r}"
                )
            unlabelled[key] = tuple(values)
        try:
            return cls(name=name, classes=tuple(classes), **unlabelled)
        except GeospadeError as exc:
            raise GeospadeError(f"{where}: {exc}") from None

    def same_classes(self, other: ClassScheme) -> bool:
        """True when both schemes map the same raw values to the same indices."""
        return self.values == other.values


class UnknownClassValuesError(ArgumentError):
    """Raw label values outside the scheme; ``counts`` maps each value to its pixel count."""

    def __init__(self, scheme: ClassScheme, counts: Mapping[float, int]):
        self.counts = dict(counts)
        listed = ", ".join(f"{v} ({n} px)" for v, n in sorted(self.counts.items())[:20])
        more = "" if len(self.counts) <= 20 else f" and {len(self.counts) - 20} more"
        super().__init__(
            "unknown", f"label values outside scheme {scheme.name!r}: {listed}{more}; "
            "use another scheme, or unknown='ignore' to treat them as no data",
            others=[("another scheme", "another --scheme")], leading=False
        )


def _plain_number(v) -> int | float:
    f = float(v)
    return int(f) if f.is_integer() else f


_SCHEME_KEYS = ("name", "nodata", "ignore", "classes")
_CLASS_KEYS = ("value", "name", "color")


def _check_scheme_keys(where: str, at: str, data: Mapping, allowed: tuple[str, ...]) -> None:
    """Unknown keys are errors: a misspelt "colour" must not silently become grey."""
    unknown = [str(k) for k in data if k not in allowed]
    if unknown:
        raise GeospadeError(
            f"{where}: {at}unknown key(s) {', '.join(map(repr, unknown))} "
            f"(allowed: {', '.join(allowed)})"
        )


def _kind(v) -> str:
    """How a JSON value reads in an error message: ``a list``, ``the number 5``, …"""
    if isinstance(v, list):
        return "a list"
    if isinstance(v, Mapping):
        return "an object"
    if isinstance(v, str):
        return f"the string {v!r}"
    if v is None:
        return "null"
    return repr(v)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _parse_color(c) -> tuple[int, int, int] | None:
    """``"#rrggbb"`` or ``[r, g, b]`` (an alpha after them is ignored); None when neither."""
    if isinstance(c, str):
        s = c.removeprefix("#")
        if len(s) != 6 or not all(ch in string.hexdigits for ch in s):
            return None
        return (int(s[0:2], 16), int(s[2:4], 16), int(s[4:6], 16))
    if isinstance(c, (list, tuple)) and len(c) in (3, 4) and all(
        isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 255 for x in c
    ):
        return (c[0], c[1], c[2])
    return None


def distinct_colors(
    n: int, avoid: Sequence[tuple[int, int, int]] = ()
) -> list[tuple[int, int, int]]:
    """``n`` distinct RGB colours, each as far as possible from the ones before it and ``avoid``.

    A greedy farthest-point sequence in CIELAB (perceptual distance) over mid-light, moderately
    saturated sRGB colours: no greys (they read as "no class"), no near-black or near-white
    (ignore pixels and backgrounds). Deterministic, and a prefix of a longer sequence with the
    same ``avoid``; 7 colours are at least ~50 apart (CIE76), 20 about 30.

    Args:
        n: how many colours (a scheme has at most 254 classes; up to ~1200 are distinct).
        avoid: colours already in use (e.g. the ones a scheme gives); none is repeated.

    Returns:
        ``n`` ``(r, g, b)`` tuples of ints 0..255.
    """
    candidates, lab = _palette_candidates()
    # Distance of each candidate to the nearest colour in use; with none yet, start from the
    # candidate farthest from mid-grey (the most colourful).
    nearest = np.full(len(lab), np.inf)
    for color in avoid:
        nearest = np.minimum(nearest, np.linalg.norm(lab - _lab(np.array(color)), axis=1))
    if len(avoid) == 0:
        nearest = np.linalg.norm(lab - (60.0, 0.0, 0.0), axis=1)
    chosen = []
    for _ in range(n):
        i = int(np.argmax(nearest))
        chosen.append(tuple(int(x) for x in candidates[i]))
        nearest = np.minimum(nearest, np.linalg.norm(lab - lab[i], axis=1))
        nearest[i] = -1.0  # never twice, even once every candidate is taken
    return chosen


@functools.lru_cache(maxsize=1)
def _palette_candidates() -> tuple[np.ndarray, np.ndarray]:
    """sRGB colours on a 16-level grid with L* 40-82 and chroma 30-70, and their CIELAB."""
    levels = np.arange(0, 256, 17)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(-1, 3)
    lab = _lab(grid)
    chroma = np.hypot(lab[:, 1], lab[:, 2])
    keep = (lab[:, 0] >= 40) & (lab[:, 0] <= 82) & (chroma >= 30) & (chroma <= 70)
    return grid[keep], lab[keep]


def _lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65 white) of sRGB colours ``(..., 3)`` in 0..255."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    to_xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722],
                       [0.0193, 0.1192, 0.9505]])
    xyz = linear @ to_xyz.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])],
        axis=-1,
    )


def _scheme(name: str, rows: Iterable[tuple[int, str, tuple[int, int, int]]], nodata=(), ignore=()):
    return ClassScheme(
        name=name,
        classes=tuple(LandCoverClass(v, n, c) for v, n, c in rows),
        nodata=tuple(nodata),
        ignore=tuple(ignore),
    )


# Chesapeake Conservancy Baywide 7-class (and the CVPR 2019 `lc` layer, same 1-6); 15 is the
# product's no-data value, 7 is Aberdeen Proving Ground (unlabelled).
CHESAPEAKE7 = _scheme(
    "chesapeake7",
    [
        (1, "water", (0, 197, 255)),
        (2, "tree canopy and shrubs", (38, 115, 0)),
        (3, "low vegetation", (163, 255, 115)),
        (4, "barren", (255, 170, 0)),
        (5, "impervious surfaces", (156, 156, 156)),
        (6, "impervious roads", (0, 0, 0)),
    ],
    nodata=(0, 15),
    ignore=(7,),
)

CHESAPEAKE13 = _scheme(
    "chesapeake13",
    [
        (1, "water", (0, 197, 255)),
        (2, "wetlands", (0, 168, 132)),
        (3, "tree canopy", (38, 115, 0)),
        (4, "shrubland", (76, 230, 0)),
        (5, "low vegetation", (163, 255, 115)),
        (6, "barren", (255, 170, 0)),
        (7, "structures", (255, 0, 0)),
        (8, "impervious surfaces", (156, 156, 156)),
        (9, "impervious roads", (0, 0, 0)),
        (10, "tree canopy over structures", (115, 115, 0)),
        (11, "tree canopy over impervious surfaces", (230, 230, 0)),
        (12, "tree canopy over impervious roads", (255, 255, 115)),
    ],
    nodata=(0, 15),
    ignore=(13,),
)

# The published NLCD legend and colours (CONUS and Alaska-only classes).
NLCD = _scheme(
    "nlcd",
    [
        (11, "open water", (70, 107, 159)),
        (12, "perennial ice/snow", (209, 222, 248)),
        (21, "developed, open space", (222, 197, 197)),
        (22, "developed, low intensity", (217, 146, 130)),
        (23, "developed, medium intensity", (235, 0, 0)),
        (24, "developed, high intensity", (171, 0, 0)),
        (31, "barren land", (179, 172, 159)),
        (41, "deciduous forest", (104, 171, 95)),
        (42, "evergreen forest", (28, 95, 44)),
        (43, "mixed forest", (181, 197, 143)),
        (51, "dwarf scrub", (175, 150, 60)),
        (52, "shrub/scrub", (204, 184, 121)),
        (71, "grassland/herbaceous", (223, 223, 194)),
        (72, "sedge/herbaceous", (209, 209, 130)),
        (73, "lichens", (164, 204, 81)),
        (74, "moss", (130, 186, 158)),
        (81, "pasture/hay", (220, 217, 57)),
        (82, "cultivated crops", (171, 108, 40)),
        (90, "woody wetlands", (184, 217, 235)),
        (95, "emergent herbaceous wetlands", (108, 159, 184)),
    ],
    nodata=(0, 250),
)

BUILTIN_SCHEMES: dict[str, ClassScheme] = {s.name: s for s in (CHESAPEAKE7, CHESAPEAKE13, NLCD)}


def load_scheme(name_or_path: str | Path | ClassScheme) -> ClassScheme:
    """A built-in scheme by name (``chesapeake7``, ``chesapeake13``, ``nlcd``) or a JSON file."""
    if isinstance(name_or_path, ClassScheme):
        return name_or_path
    key = str(name_or_path)
    if key.lower() in BUILTIN_SCHEMES:
        return BUILTIN_SCHEMES[key.lower()]
    path = Path(key)
    if not path.exists():
        raise GeospadeError(
            f"unknown scheme {key!r}: not one of {', '.join(BUILTIN_SCHEMES)} and no such file"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GeospadeError(f"cannot read scheme file {path}: {exc}") from None
    return ClassScheme.from_dict(data, origin=str(path))
