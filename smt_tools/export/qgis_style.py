"""QGIS 3 layer styles (``.qml``) for the tile layers, one per kind of output.

Every style is rule-based (``RuleRenderer``) with one legend entry per class and a label that
reads as what it is:

- :func:`qml_text` (balanced): graduated colours on a score (viridis, dark = low), excluded
  tiles hatched grey, a map tip naming why a tile was excluded (``exclusion_reason``);
- :func:`fold_qml` (split): one qualitative colour per fold (``fold 0``, ``fold 1``, ...), the
  holdout test set dark grey, tiles the spatial buffer drops from a training set hatched on top
  of their fold colour, tiles without a fold light grey;
- :func:`leak_qml` (check-leakage): one entry per check and split side
  (``same source image: train``), colour by check, fill pattern by side;
- :func:`coreset_qml` (select-coreset): selected tiles coloured by score class, tiles not
  selected light grey, excluded tiles hatched (with the same map tip).

Save a style beside a GeoJSON / FlatGeobuf with the same base name and QGIS applies it when the
layer is added; a GeoPackage carries it inside (``layer_styles``, see
:mod:`smt_tools.export.vector`), and each catalog run's view gets it in the database's
``layer_styles`` table (:mod:`smt_tools.catalog.layers`). Checked in real QGIS (3.22) by
``scripts/qgis_check.py`` (tests/test_qgis.py).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from xml.sax.saxutils import escape, quoteattr

from smt_tools.atomic import atomic_path

#: viridis, dark to light; low values dark, high values bright
RAMP: tuple[str, ...] = (
    "68,1,84",
    "59,82,139",
    "33,145,140",
    "94,201,98",
    "253,231,37",
)

#: qualitative colours for folds and split sides (Tableau 10 without its grey)
QUALITATIVE: tuple[str, ...] = (
    "31,119,180",
    "255,127,14",
    "44,160,44",
    "214,39,40",
    "148,103,189",
    "140,86,75",
    "227,119,194",
    "188,189,34",
    "23,190,207",
)
HOLDOUT_COLOUR = "64,64,64"
NONE_COLOUR = "200,200,200"
HATCH_COLOUR = "20,20,20"
OUTLINE = "35,35,35,255"

#: leak checks (a)-(c) as the leak layer's ``leak_reasons`` names them, with legend text
#: and colour
LEAK_CHECKS: tuple[tuple[str, str, str], ...] = (
    ("source_image", "same source image", "214,39,40"),
    ("spatial", "overlap or within buffer", "255,127,14"),
    ("near_duplicate", "near-duplicate", "148,103,189"),
)
LEAK_CHECK_NAMES: tuple[str, ...] = tuple(name for name, _, _ in LEAK_CHECKS)
#: fill pattern of the i-th split side in the leak layer (train solid, val hatched, ...)
SIDE_PATTERNS: tuple[str, ...] = (
    "solid",
    "b_diagonal",
    "f_diagonal",
    "diagonal_x",
    "horizontal",
    "vertical",
    "cross",
    "dense4",
)


def _fill_symbol(
    name: str, color: str, style: str, outline: str = OUTLINE, alpha: int = 200
) -> str:
    props = {
        "color": f"{color},{alpha}",
        "style": style,
        "outline_color": outline,
        "outline_style": "solid",
        "outline_width": "0.2",
        "outline_width_unit": "MM",
        "joinstyle": "miter",
    }
    opts = "".join(
        f'<Option name={quoteattr(k)} value={quoteattr(v)} type="QString"/>'
        for k, v in props.items()
    )
    legacy = "".join(f"<prop k={quoteattr(k)} v={quoteattr(v)}/>" for k, v in props.items())
    return (
        f'<symbol type="fill" name={quoteattr(name)} alpha="1" clip_to_extent="1" '
        'force_rhr="0">'
        '<layer class="SimpleFill" enabled="1" locked="0" pass="0">'
        f'<Option type="Map">{opts}</Option>{legacy}'
        "</layer></symbol>"
    )


def _number(value: float) -> str:
    """Exact expression literal of a class edge (``repr`` round-trips; ``:g`` would round
    0.1234564 to 0.123456 and leave the top value out of its class)."""
    return repr(float(value))


def _field(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class _Rules:
    """Rules + symbols of one rule-based renderer, in drawing (and legend) order."""

    def __init__(self) -> None:
        self.rules: list[str] = []
        self.symbols: list[str] = []

    def add(
        self,
        label: str,
        expr: str,
        color: str,
        style: str = "solid",
        key: str | None = None,
        **kw: object,
    ) -> None:
        i = len(self.rules)
        self.rules.append(
            f'<rule key={quoteattr(key or f"r{i}")} symbol="{i}" label={quoteattr(label)} '
            f"filter={quoteattr(expr)}/>"
        )
        self.symbols.append(_fill_symbol(str(i), color, style, **kw))  # type: ignore[arg-type]

    def document(self, map_tip: str | None = None) -> str:
        """The .qml; ``map_tip``: a QGIS map tip template (shown on hover) carried too."""
        categories = "Symbology|MapTips" if map_tip else "Symbology"
        tip = f"  <mapTip>{escape(map_tip)}</mapTip>\n" if map_tip else ""
        return (
            "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
            f'<qgis version="3.28.0" styleCategories="{categories}">\n'
            '  <renderer-v2 type="RuleRenderer" symbollevels="0" enableorderby="0" '
            'forceraster="0" referencescale="-1">\n'
            '    <rules key="root">' + "".join(self.rules) + "</rules>\n"
            "    <symbols>" + "".join(self.symbols) + "</symbols>\n"
            "  </renderer-v2>\n"
            "  <blendMode>0</blendMode>\n"
            "  <featureBlendMode>0</featureBlendMode>\n"
            "  <layerGeometryType>2</layerGeometryType>\n" + tip + "</qgis>\n"
        )


def exclusion_tip(excluded_field: str, reason_field: str = "exclusion_reason") -> str:
    """Map tip template: ``excluded: <exclusion_reason>`` or ``included`` (the codes of
    docs/algorithms.md §5)."""
    e, r = _field(excluded_field), _field(reason_field)
    return (
        f"[% CASE WHEN coalesce({e}, false) THEN 'excluded: ' || coalesce({r}, '') "
        "ELSE 'included' END %]"
    )


def _edges(breaks: Sequence[float]) -> list[float]:
    edges = [float(b) for b in breaks]
    if (
        len(edges) < 2
        or not all(math.isfinite(b) for b in edges)
        or any(b >= a for a, b in zip(edges[1:], edges[:-1], strict=True))
    ):
        raise ValueError("breaks must be at least two finite, strictly increasing numbers")
    return edges


def _ramp_colours(n: int, ramp: Sequence[str]) -> list[str]:
    return [ramp[round(i * (len(ramp) - 1) / max(n - 1, 1))] for i in range(n)]


def _graduated(
    rules: _Rules,
    field: str,
    edges: list[float],
    ramp: Sequence[str],
    prefix: str,
    label: str,
    key: str = "class",
) -> None:
    """One rule per class ``edges[i] <= field < edges[i + 1]`` (first: no lower bound, last:
    upper edge included), each ``prefix AND`` the class condition."""
    n = len(edges) - 1
    f = _field(field)
    for i, color in enumerate(_ramp_colours(n, ramp)):
        lo, hi = edges[i], edges[i + 1]
        top = f"{f} {'<=' if i == n - 1 else '<'} {_number(hi)}"
        cond = top if i == 0 else f"{f} >= {_number(lo)} AND {top}"
        rules.add(f"{label} {lo:.3g} – {hi:.3g}", f"{prefix}{cond}", color, key=f"{key}{i}")


def qml_text(
    field: str = "sampler_weight",
    excluded_field: str | None = "excluded",
    breaks: Sequence[float] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
    ramp: Sequence[str] = RAMP,
) -> str:
    """The .qml XML: ``len(breaks) - 1`` colour classes on ``field`` (+ a hatch rule).

    Class i holds ``breaks[i] <= field < breaks[i + 1]``; the first class has no lower bound
    and the last one includes its upper edge. Values above ``breaks[-1]`` and NULL values get
    no symbol (drawn nowhere). Labels read ``field lo – hi``.
    """
    edges = _edges(breaks)
    rules = _Rules()
    not_excluded = f"NOT coalesce({_field(excluded_field)}, false) AND " if excluded_field else ""
    _graduated(rules, field, edges, ramp, not_excluded, field)
    if excluded_field:
        rules.add(
            "excluded",
            f"coalesce({_field(excluded_field)}, false)",
            "120,120,120",
            "b_diagonal",
            key="excluded",
            outline="90,90,90,255",
        )
    return rules.document(exclusion_tip(excluded_field) if excluded_field else None)


def fold_colour(fold: int) -> str:
    """Qualitative colour of fold ``fold`` (>= 0): Tableau 10, then golden-angle hues."""
    if fold < len(QUALITATIVE):
        return QUALITATIVE[fold]
    import colorsys

    h = (fold * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.65, 0.85)
    return f"{round(r * 255)},{round(g * 255)},{round(b * 255)}"


def fold_qml(
    n_splits: int,
    *,
    field: str = "fold",
    buffer_field: str | None = "buffer_excluded_folds",
) -> str:
    """Categorical style of a split: legend ``fold 0`` .. ``fold {n_splits-1}`` (qualitative
    colours), ``holdout test`` (fold -1, dark grey), ``no fold`` (any other value or NULL,
    light grey) and, with ``buffer_field``, ``dropped from a training set by the buffer``: a
    hatch drawn over the fold colour of every tile whose ``buffer_field`` is not empty."""
    if n_splits < 1:
        raise ValueError("n_splits must be >= 1")
    f = _field(field)
    rules = _Rules()
    for k in range(n_splits):
        rules.add(f"fold {k}", f"{f} = {k}", fold_colour(k), alpha=220)
    rules.add("holdout test", f"{f} = -1", HOLDOUT_COLOUR, alpha=220)
    rules.add("no fold", f"{f} IS NULL OR {f} < -1 OR {f} >= {n_splits}", NONE_COLOUR)
    if buffer_field:
        b = _field(buffer_field)
        rules.add(
            "dropped from a training set by the buffer",
            f"coalesce({b}, '') <> ''",
            HATCH_COLOUR,
            "b_diagonal",
            outline="20,20,20,255",
            alpha=255,
        )
    return rules.document()


def leak_qml(
    sides: Sequence[str],
    checks: Sequence[str] = LEAK_CHECK_NAMES,
    *,
    reasons_field: str = "leak_reasons",
    side_field: str = "split",
) -> str:
    """Style of a leak layer: one entry per check in ``checks`` and split side in ``sides``,
    labelled ``same source image: train``; colour by check, fill pattern by side (the first
    side solid, the next hatched). ``reasons_field`` holds comma-separated check names."""
    known = {c: (text, colour) for c, text, colour in LEAK_CHECKS}
    unknown = [c for c in checks if c not in known]
    if unknown:
        raise ValueError(f"unknown leak check(s) {unknown}; known: {sorted(known)}")
    r, sd = _field(reasons_field), _field(side_field)
    rules = _Rules()
    for check in checks:
        text, colour = known[check]
        hit = f"concat(',', {r}, ',') LIKE {_string(f'%,{check},%')}"
        for i, side in enumerate(sides):
            pattern = SIDE_PATTERNS[i % len(SIDE_PATTERNS)]
            rules.add(
                f"{text}: {side}",
                f"{hit} AND {sd} = {_string(side)}",
                colour,
                pattern,
                alpha=230,
            )
    return rules.document()


def score_breaks(scores: Sequence[float] | object, n_classes: int = 5) -> list[float]:
    """Class edges of ``scores`` (finite values only): quantiles, duplicates merged; one class
    ``[v, v + 1]`` when all scores are equal, ``[0, 1]`` when there are none."""
    import numpy as np

    arr = np.asarray(scores, dtype=np.float64).ravel()
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return [0.0, 1.0]
    edges = np.unique(np.quantile(arr, np.linspace(0.0, 1.0, n_classes + 1)))
    if edges.size < 2:
        return [float(edges[0]), float(edges[0]) + 1.0]
    return [float(e) for e in edges]


def coreset_qml(
    breaks: Sequence[float],
    *,
    score_field: str = "coreset_score",
    selected_field: str = "coreset_selected",
    excluded_field: str | None = "excluded",
) -> str:
    """Style of a coreset: ``not selected`` (light grey) below, then the selected tiles by
    score class (``selected, score lo – hi``, viridis), and ``excluded`` tiles hatched.
    Selected tiles whose score lies outside ``breaks`` land in ``selected, score outside
    lo – hi`` so every tile has a symbol."""
    edges = _edges(breaks)
    sel = f"coalesce({_field(selected_field)}, false)"
    excl = f"coalesce({_field(excluded_field)}, false)" if excluded_field else "false"
    rules = _Rules()
    rules.add("not selected", f"NOT {sel} AND NOT {excl}", NONE_COLOUR, alpha=160)
    _graduated(rules, score_field, edges, RAMP, f"{sel} AND NOT {excl} AND ", "selected, score")
    s = _field(score_field)
    rules.add(
        f"selected, score outside {edges[0]:.3g} – {edges[-1]:.3g}",
        f"{sel} AND NOT {excl} AND ({s} IS NULL OR {s} < {_number(edges[0])} "
        f"OR {s} > {_number(edges[-1])})",
        "255,0,255",
    )
    if excluded_field:
        rules.add("excluded", excl, "120,120,120", "b_diagonal", outline="90,90,90,255")
    return rules.document(exclusion_tip(excluded_field) if excluded_field else None)


def write_qml(
    path: str | os.PathLike[str],
    field: str = "sampler_weight",
    excluded_field: str | None = "excluded",
    breaks: Sequence[float] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
    ramp: Sequence[str] = RAMP,
    *,
    text: str | None = None,
) -> None:
    """Write ``text`` (default :func:`qml_text` of the other arguments) to ``path``
    atomically (use the layer file's base name + .qml)."""
    if text is None:
        text = qml_text(field, excluded_field, breaks, ramp)
    with atomic_path(path, suffix=".qml") as tmp:
        tmp.write_text(text, encoding="utf-8")
