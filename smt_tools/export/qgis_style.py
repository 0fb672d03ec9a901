"""A QGIS 3 layer style (``.qml``) for tile layers: graduated colours on a score, excluded
tiles hatched.

The renderer is rule-based (``RuleRenderer``): one rule per colour class on ``field`` (viridis:
dark purple for low values to yellow for high ones) for tiles that are not excluded, and one
rule drawing excluded tiles with a grey diagonal hatch. Save it beside the GeoJSON with the same
base name and QGIS applies it when the layer is added; for a PostGIS layer (e.g. the catalog view
``tile_result_map``) load it in Layer Properties > Symbology > Style > Load Style.
Checked in real QGIS (3.22) by ``scripts/qgis_check.py``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from xml.sax.saxutils import quoteattr

from smt_tools.export._atomic import atomic_path

#: viridis, dark to light; low values dark, high values bright
RAMP: tuple[str, ...] = (
    "68,1,84",
    "59,82,139",
    "33,145,140",
    "94,201,98",
    "253,231,37",
)


def _fill_symbol(name: str, color: str, style: str, outline: str) -> str:
    props = {
        "color": f"{color},200",
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


def qml_text(
    field: str = "sampler_weight",
    excluded_field: str | None = "excluded",
    breaks: Sequence[float] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
    ramp: Sequence[str] = RAMP,
) -> str:
    """The .qml XML: ``len(breaks) - 1`` colour classes on ``field`` (+ a hatch rule).

    Class i holds ``breaks[i] <= field < breaks[i + 1]``; the first class has no lower bound
    and the last one includes its upper edge. Values above ``breaks[-1]`` and NULL values get
    no symbol (drawn nowhere).
    """
    edges = [float(b) for b in breaks]
    if (
        len(edges) < 2
        or not all(math.isfinite(b) for b in edges)
        or any(b >= a for a, b in zip(edges[1:], edges[:-1], strict=True))
    ):
        raise ValueError("breaks must be at least two finite, strictly increasing numbers")
    n_classes = len(edges) - 1
    colors = [ramp[round(i * (len(ramp) - 1) / max(n_classes - 1, 1))] for i in range(n_classes)]
    f = _field(field)
    not_excluded = f"NOT coalesce({_field(excluded_field)}, false) AND " if excluded_field else ""
    rules: list[str] = []
    symbols: list[str] = []
    for i in range(n_classes):
        lo, hi = edges[i], edges[i + 1]
        upper = "<=" if i == n_classes - 1 else "<"
        top = f"{f} {upper} {_number(hi)}"
        cond = top if i == 0 else f"{f} >= {_number(lo)} AND {top}"
        expr = f"{not_excluded}{cond}"
        label = f"{field} {lo:g} – {hi:g}"
        rules.append(
            f'<rule key="class{i}" symbol="{i}" label={quoteattr(label)} filter={quoteattr(expr)}/>'
        )
        symbols.append(_fill_symbol(str(i), colors[i], "solid", "35,35,35,255"))
    if excluded_field:
        k = n_classes
        rules.append(
            f'<rule key="excluded" symbol="{k}" label="excluded" '
            f"filter={quoteattr(f'coalesce({_field(excluded_field)}, false)')}/>"
        )
        symbols.append(_fill_symbol(str(k), "120,120,120", "b_diagonal", "90,90,90,255"))
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.28.0" styleCategories="Symbology">\n'
        '  <renderer-v2 type="RuleRenderer" symbollevels="0" enableorderby="0" '
        'forceraster="0" referencescale="-1">\n'
        '    <rules key="root">' + "".join(rules) + "</rules>\n"
        "    <symbols>" + "".join(symbols) + "</symbols>\n"
        "  </renderer-v2>\n"
        "  <blendMode>0</blendMode>\n"
        "  <featureBlendMode>0</featureBlendMode>\n"
        "  <layerGeometryType>2</layerGeometryType>\n"
        "</qgis>\n"
    )


def write_qml(
    path: str | os.PathLike[str],
    field: str = "sampler_weight",
    excluded_field: str | None = "excluded",
    breaks: Sequence[float] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
    ramp: Sequence[str] = RAMP,
) -> None:
    """Write :func:`qml_text` to ``path`` atomically (use the GeoJSON's base name + .qml)."""
    text = qml_text(field, excluded_field, breaks, ramp)
    with atomic_path(path, suffix=".qml") as tmp:
        tmp.write_text(text, encoding="utf-8")
