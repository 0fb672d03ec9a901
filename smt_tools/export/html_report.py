"""``report.html``: one self-contained static page per build-balanced-dataset run.

No server, no JavaScript: small inline CSS, and every image embedded as a ``data:`` URI, so
the one file can be attached to a ticket, kept as a CI artefact or mailed, and still shows
everything. Its size stays small because the thumbnails are capped (``PER_SIDE`` per side of
each cluster, ``PER_REASON`` per exclusion reason, ``MAX_CLUSTERS`` clusters: see ``_gallery``)
and because the image part of a thumbnail is a JPEG (a 128 px tile is ~3 KB, ~9x smaller than
PNG); the mask overlay is a lossless PNG, so its colours are exactly the class colours.

Contents: the summary tables (tiles in / excluded by reason / weighted, clusters, weights,
effective sample size, expected pixel share uniform vs weighted with the nodata row) with
class names and colours (``classes.csv`` via the tile table or ``catalog_class``); the
per-class change on a ratio (log2) scale; the mean class shares of each composition cluster;
thumbnail galleries (image, mask overlay in class colours on top; hover or untick to see the
image alone) of the highest- and lowest-weighted tiles per cluster and of excluded tiles,
grouped by reason. Every string is HTML-escaped. Thumbnails that cannot be read (a raster
moved since ingest) are shown as a one-line note; they never fail the run.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smt_tools.atomic import atomic_path
from smt_tools.export._gallery import (
    MAX_CLUSTERS,
    PER_REASON,
    PER_SIDE,
    REASON_TEXT,
    RGB,
    Gallery,
    Thumb,
    class_rgb,
    cluster_composition,
    cluster_galleries,
    excluded_galleries,
    hex_colour,
    read_thumbs,
)

#: bins of the sampler_weight histogram
HIST_BINS = 30


@dataclass(frozen=True)
class HtmlReportData:
    """What the page shows. Every per-tile array has n rows in the same order as ``tiles``.

    summary: the run summary (``BalancedResult.summary()``: tiles, excluded, included,
        exclusion_counts, effective_method, k, k_selection, k_range, ess, weight_min,
        weight_max, rare_classes, warnings).
    tiles: frame with tile_id, image_path, mask_path, row_off, col_off, height, width and
        optionally mask_band (1 when absent).
    counts: (n, C) int64 class pixel counts; class_values: (C,) int64.
    class_names: class value -> name; class_colours: class value -> colour as written in
        classes.csv (``#rrggbb``, ``#rgb``, ``r,g,b[,a]`` or a CSS colour name).
    labels: (n,) int64 composition cluster (-1: none); weights: (n,) float64 sampler_weight;
    excluded: (n,) bool; reasons: {reason: (n,) bool} (a tile may match several).
    uniform_share / weighted_share: (C,) float64 expected pixel share per epoch.
    nodata_class: the mask value that is not a class (None: none); nodata_label /
    nodata_share: the nodata row (label, (uniform, weighted)) or None to leave it out.
    uniqueness: (n,) float64 (NaN for excluded) or None.
    pngs: file names of the PNG plots written beside the page (linked, not embedded).
    """

    summary: Mapping[str, Any]
    tiles: pd.DataFrame
    counts: np.ndarray
    class_values: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
    excluded: np.ndarray
    reasons: Mapping[str, np.ndarray]
    uniform_share: np.ndarray
    weighted_share: np.ndarray
    class_names: Mapping[int, str] = field(default_factory=dict)
    class_colours: Mapping[int, str | None] = field(default_factory=dict)
    nodata_class: int | None = None
    nodata_label: str | None = None
    nodata_share: tuple[float, float] | None = None
    uniqueness: np.ndarray | None = None
    title: str = "build-balanced-dataset"
    subtitle: str = ""
    pngs: Sequence[str] = ()


# --- HTML ----------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.5em;margin-bottom:.1em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}
.sub{color:#666;margin-top:0}table{border-collapse:collapse;margin:.5em 0}
td,th{padding:3px 9px;border-bottom:1px solid #eee;text-align:left;vertical-align:middle}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}tr.nd td{color:#777;font-style:italic}
.sw{display:inline-block;width:.9em;height:.9em;border:1px solid #0005;vertical-align:-2px;margin-right:4px}
.warn{background:#fff4e0;border-left:4px solid #e69f00;padding:.3em .8em;margin:.3em 0}
.ratio{position:relative;width:260px;height:14px;background:#f3f3f3}
.ratio .c{position:absolute;left:50%;top:-2px;bottom:-2px;border-left:1px solid #555}
.ratio .b{position:absolute;top:2px;bottom:2px}.axis{display:flex;justify-content:space-between;width:260px;color:#777;font-size:11px}
.stack{display:flex;width:320px;height:14px;border:1px solid #ccc}.stack span{height:100%}
.hist{display:flex;align-items:flex-end;height:90px;gap:1px;width:600px;border-bottom:1px solid #999}
.hist span{flex:1;background:#21918c;min-height:0}.hl{display:flex;justify-content:space-between;width:600px;color:#777;font-size:11px}
.g{display:flex;flex-wrap:wrap;gap:8px;margin:.3em 0 1em}.g h3{width:100%;margin:.4em 0 0;font-size:1em}
.g h3 small{font-weight:normal;color:#666}figure{margin:0;width:130px;font-size:11px;color:#444}
.th{position:relative;width:128px;height:128px;background:#eee;border:1px solid #ccc}
.th img{position:absolute;left:0;top:0;width:128px;height:128px;object-fit:contain;image-rendering:pixelated}
.th img.m{opacity:.5}.th:hover img.m{opacity:0}#ov:not(:checked)~.g img.m{opacity:0}
.err{padding:4px;color:#a00;font-size:10px;overflow:hidden;height:118px}
figcaption{overflow-wrap:anywhere}details{margin:.5em 0}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _share(v: float) -> str:
    return f"{v:.2%}"


def _change(u: float, w: float) -> str:
    return f"×{w / u:.2f}" if u > 0 else "-"


def _class_label(v: int, names: Mapping[int, str]) -> str:
    name = names.get(int(v))
    return f"{v} {name}" if name else str(v)


def _swatch(rgb: RGB) -> str:
    return f'<span class="sw" style="background:{hex_colour(rgb)}"></span>'


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool]) -> str:
    """``head`` escaped here; ``rows`` are HTML already (callers escape their text)."""
    cls = [' class="n"' if n else "" for n in numeric]
    out = ["<table><tr>", *(f"<th{c}>{_e(h)}</th>" for h, c in zip(head, cls, strict=True))]
    out.append("</tr>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td{c}>{v}</td>" for v, c in zip(row, cls, strict=True)))
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def _ratio_bar(ratio: float | None, span: float, rgb: RGB) -> str:
    """A bar from x1 (centre) to ``ratio`` on a log2 axis of +-``span`` doublings."""
    if ratio is None:
        return '<div class="ratio"><div class="c"></div></div>'
    lg = max(-span, min(span, math.log2(ratio))) if ratio > 0 else -span
    frac = abs(lg) / span * 50.0
    left = 50.0 if lg >= 0 else 50.0 - frac
    return (
        f'<div class="ratio"><div class="b" style="left:{left:.2f}%;width:{frac:.2f}%;'
        f'background:{hex_colour(rgb)}"></div><div class="c"></div></div>'
    )


def _summary_section(data: HtmlReportData) -> str:
    s = data.summary
    parts = ["<h2>Tiles</h2>"]
    rows = [["in", f"{int(s.get('tiles', len(data.tiles))):,}"]]
    rows.append(["excluded", f"{int(s.get('excluded', int(np.sum(data.excluded)))):,}"])
    for reason, count in dict(s.get("exclusion_counts", {})).items():
        if count:
            text = REASON_TEXT.get(str(reason), "")
            label = f"&nbsp;&nbsp;{_e(reason)}" + (f" <small>({_e(text)})</small>" if text else "")
            rows.append([label, f"{int(count):,}"])
    rows.append(["weighted", f"{int(s.get('included', int(np.sum(~data.excluded)))):,}"])
    parts.append(_table(["tiles", "count"], rows, [False, True]))
    parts.append("<p>A tile can match several exclusion reasons.</p>")

    parts.append("<h2>Weights</h2>")
    n_inc = int(s.get("included", int(np.sum(~data.excluded))))
    ess = float(s.get("ess", 0.0))
    wrows = [
        ["method", _e(s.get("effective_method", ""))],
        ["min sampler_weight", f"{float(s.get('weight_min', 0.0)):.3f}"],
        ["max sampler_weight", f"{float(s.get('weight_max', 0.0)):.3f}"],
        [
            "effective sample size",
            f"{ess:,.1f} of {n_inc:,} ({ess / max(n_inc, 1):.0%})",
        ],
    ]
    if s.get("k") is not None:
        rng = s.get("k_range")
        sel = _e(s.get("k_selection", ""))
        wrows.insert(
            1,
            [
                "composition clusters",
                f"k = {int(s['k'])} ({sel}"
                + (f" from k {int(rng[0])}..{int(rng[1])}" if rng else "")
                + ")",
            ],
        )
    rare = [int(v) for v in s.get("rare_classes", [])]
    if rare:
        wrows.append(
            ["rare-class boost on", _e(", ".join(_class_label(v, data.class_names) for v in rare))]
        )
    parts.append(_table(["", ""], wrows, [False, False]))
    parts.append(_histogram(data.weights[~data.excluded]))
    return "".join(parts)


def _histogram(w: np.ndarray) -> str:
    if w.size == 0:
        return ""
    lo, hi = float(w.min()), float(w.max())
    if hi <= lo:
        hi = lo + 1e-9
    counts, edges = np.histogram(w, bins=HIST_BINS, range=(lo, hi))
    top = max(int(counts.max()), 1)
    bars = "".join(
        f'<span style="height:{100.0 * c / top:.1f}%" title="{edges[i]:.3f}-{edges[i + 1]:.3f}: '
        f'{int(c)} tiles"></span>'
        for i, c in enumerate(counts)
    )
    return (
        f"<p>sampler_weight of the {w.size:,} weighted tiles (hover a bar for its range):</p>"
        f'<div class="hist">{bars}</div><div class="hl"><span>{lo:.3f}</span>'
        f"<span>{float(w.max()):.3f}</span></div>"
    )


def _class_section(data: HtmlReportData, rgb: Mapping[int, RGB]) -> str:
    vals = [int(v) for v in np.asarray(data.class_values).tolist()]
    u = np.asarray(data.uniform_share, dtype=np.float64)
    w = np.asarray(data.weighted_share, dtype=np.float64)
    ratios = [float(w[i] / u[i]) if u[i] > 0 else None for i in range(len(vals))]
    logs = [abs(math.log2(r)) for r in ratios if r is not None and r > 0]
    span = float(max(1, math.ceil(max(logs, default=1.0))))
    rows = []
    for i, v in enumerate(vals):
        rows.append(
            [
                _swatch(rgb[v]) + _e(_class_label(v, data.class_names)),
                _share(float(u[i])),
                _share(float(w[i])),
                _e(_change(float(u[i]), float(w[i]))),
                _ratio_bar(ratios[i], span, rgb[v]),
            ]
        )
    table = _table(
        ["class", "uniform", "weighted", "change", "change (log scale)"],
        rows,
        [False, True, True, True, False],
    )
    lo, hi = 2.0**-span, 2.0**span
    axis = (
        f'<tr><td colspan="4"></td><td><div class="axis"><span>×{lo:g}</span><span>×1</span>'
        f"<span>×{hi:g}</span></div></td></tr>"
    )
    table = table.replace("</table>", axis + "</table>")
    if data.nodata_label is not None and data.nodata_share is not None:
        nu, nw = data.nodata_share
        nd = (
            f'<tr class="nd"><td>{_e(data.nodata_label)}</td><td class="n">{_share(nu)}</td>'
            f'<td class="n">{_share(nw)}</td><td class="n">{_e(_change(nu, nw))}</td><td>not a '
            "class: share of window pixels of the weighted tiles</td></tr>"
        )
        table = table.replace(axis, nd + axis)
    return (
        "<h2>Expected pixel share per epoch</h2><p>Share of each class among the valid pixels "
        "a training epoch sees when tiles are drawn uniformly vs by sampler_weight. The change "
        "is weighted / uniform, drawn on a log2 scale: ×2 and ×0.5 are the same length.</p>" + table
    )


def _composition_section(
    data: HtmlReportData, rgb: Mapping[int, RGB], galleries: Sequence[Gallery]
) -> str:
    if not (np.asarray(data.labels) >= 0).any():
        return ""
    ids, sizes, means = cluster_composition(data.counts, data.labels, data.excluded)
    vals = [int(v) for v in np.asarray(data.class_values).tolist()]
    inc = ~np.asarray(data.excluded, dtype=bool)
    lab = np.asarray(data.labels, dtype=np.int64)
    w = np.asarray(data.weights, dtype=np.float64)
    total_w = float(w[inc].sum()) or 1.0
    n_inc = max(int(inc.sum()), 1)
    anchors: dict[int, str] = {}
    for g in galleries:
        head = g.key.split("-", 1)[0]
        if head.startswith("c") and head[1:].isdigit():
            anchors.setdefault(int(head[1:]), f"g-{g.key}")
    rows = []
    for j, c in enumerate(ids.tolist()):
        member = inc & (lab == c)
        segs = "".join(
            f'<span style="width:{100.0 * means[j, i]:.2f}%;background:{hex_colour(rgb[v])}" '
            f'title="{_e(_class_label(v, data.class_names))}: {means[j, i]:.1%}"></span>'
            for i, v in enumerate(vals)
            if means[j, i] > 0
        )
        du, dw = sizes[j] / n_inc, float(w[member].sum()) / total_w
        rows.append(
            [
                f'<a href="#{_e(anchors[c])}">{c}</a>' if c in anchors else str(c),
                f"{int(sizes[j]):,}",
                _share(du),
                _share(dw),
                _e(_change(du, dw)),
                f"{float(w[member].mean()):.3f}",
                f'<div class="stack">{segs}</div>',
            ]
        )
    legend = " ".join(f"{_swatch(rgb[v])}{_e(_class_label(v, data.class_names))}" for v in vals)
    cols = ["cluster", "tiles", "draws uniform", "draws weighted", "change", "mean weight"]
    table = _table([*cols, "mean class shares"], rows, [False, *([True] * 5), False])
    detail_rows = [
        [str(c), *(f"{means[j, i]:.2%}" for i in range(len(vals)))]
        for j, c in enumerate(ids.tolist())
    ]
    detail = _table(
        ["cluster", *(_class_label(v, data.class_names) for v in vals)],
        detail_rows,
        [False, *([True] * len(vals))],
    )
    return (
        "<h2>Composition clusters</h2><p>Mean class shares (over each tile's valid pixels) of "
        "the included tiles of each cluster, and each cluster's share of the draws.</p>"
        f"<p>{legend}</p>{table}<details><summary>mean class shares as numbers</summary>"
        f"{detail}</details>"
    )


def _figure(data: HtmlReportData, r: int, thumb: Thumb | None) -> str:
    t = data.tiles.iloc[r]
    tid = int(t["tile_id"])
    img_path = str(t["image_path"])
    lab = int(data.labels[r])
    cap = [f"w {float(data.weights[r]):.3f}" if not data.excluded[r] else "excluded"]
    if lab >= 0:
        cap.append(f"cluster {lab}")
    if data.uniqueness is not None and np.isfinite(data.uniqueness[r]):
        cap.append(f"u {float(data.uniqueness[r]):.3f}")
    where = f"{os.path.basename(img_path)} r{int(t['row_off'])} c{int(t['col_off'])}"
    if thumb is None or thumb.error:
        body = f'<div class="err">{_e(thumb.error if thumb else "not read")}</div>'
    else:
        body = f'<img src="{thumb.image}" alt="image"><img class="m" src="{thumb.mask}" alt="mask">'
    return (
        f'<figure data-tile-id="{tid}"><div class="th">{body}</div><figcaption>'
        f'<b>{_e(" · ".join(cap))}</b><br><span title="{_e(img_path)}">{_e(where)}</span>'
        f"<br>id {tid}</figcaption></figure>"
    )


def _gallery_html(data: HtmlReportData, g: Gallery, thumbs: Mapping[int, Thumb]) -> str:
    figs = "".join(_figure(data, r, thumbs.get(r)) for r in g.rows)
    return (
        f'<div class="g" id="g-{_e(g.key)}"><h3>{_e(g.heading)} <small>{_e(g.note)}</small>'
        f"</h3>{figs}</div>"
    )


def render_html(
    data: HtmlReportData,
    thumbs: Mapping[int, Thumb] | None = None,
    galleries: Sequence[Gallery] = (),
    left_out: Sequence[int] = (),
    generated: datetime | None = None,
) -> str:
    """The page as a string (``thumbs``: row -> :class:`Thumb`; a gallery row without one
    shows "not read")."""
    rgb, colour_notes = class_rgb(data.class_values, data.class_colours)
    when = (generated or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(data.title)} report</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(data.title)}</h1>",
        f'<p class="sub">{_e(data.subtitle)}{" · " if data.subtitle else ""}{_e(when)}</p>',
    ]
    for line in [*(str(x) for x in data.summary.get("warnings", [])), *colour_notes]:
        parts.append(f'<div class="warn">{_e(line)}</div>')
    parts.append(_summary_section(data))
    parts.append(_class_section(data, rgb))
    parts.append(_composition_section(data, rgb, galleries))
    if galleries:
        vals = [int(v) for v in np.asarray(data.class_values).tolist()]
        legend = " ".join(f"{_swatch(rgb[v])}{_e(_class_label(v, data.class_names))}" for v in vals)
        parts.append(
            "<h2>Thumbnails</h2><p>Each thumbnail is the tile's image with its mask on top in the "
            "class colours (nodata left clear); hover a tile to see the image alone. "
            f"{legend}</p>"
            '<input type="checkbox" id="ov" checked><label for="ov"> mask overlay</label>'
        )
        parts.extend(_gallery_html(data, g, thumbs or {}) for g in galleries)
        if left_out:
            parts.append(
                f"<p>No gallery for {len(left_out)} more clusters "
                f"({_e(', '.join(str(c) for c in left_out))}).</p>"
            )
        failed = [t.error for t in (thumbs or {}).values() if t.error]
        if failed:
            parts.append(
                f'<div class="warn">{len(failed)} thumbnails could not be read; first: '
                f"{_e(failed[0])}</div>"
            )
    if data.pngs:
        links = " · ".join(f'<a href="{_e(p)}">{_e(p)}</a>' for p in data.pngs)
        parts.append(f"<h2>Plots</h2><p>Beside this file: {links}</p>")
    parts.append("</body></html>\n")
    return "".join(parts)


def write_html_report(
    path: str | os.PathLike[str], data: HtmlReportData, thumbnails: bool = True
) -> Path:
    """Write ``report.html`` (or ``path``) atomically; with ``thumbnails`` the galleries read
    at most ``MAX_CLUSTERS * 2 * PER_SIDE + 5 * PER_REASON`` tile windows (from ``_gallery``),
    however many tiles the run has. Returns the path."""
    ids = data.tiles["tile_id"].to_numpy(np.int64)
    galleries: list[Gallery] = []
    left_out: list[int] = []
    thumbs: dict[int, Thumb] = {}
    if thumbnails:
        galleries, left_out = cluster_galleries(
            ids, data.labels, data.weights, data.excluded, PER_SIDE, MAX_CLUSTERS
        )
        galleries += excluded_galleries(ids, data.reasons, PER_REASON)
        rgb, _ = class_rgb(data.class_values, data.class_colours)
        rows = [r for g in galleries for r in g.rows]
        thumbs = read_thumbs(data.tiles, rows, data.class_values, rgb, data.nodata_class)
    text = render_html(data, thumbs, galleries, left_out)
    target = Path(path)
    with atomic_path(target, suffix=".html") as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target
