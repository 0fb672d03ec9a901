#!/usr/bin/python3
"""Open smt-tools map outputs in real QGIS (headless) and check they come out styled.

Runs under the system Python that has the ``qgis`` bindings (Debian: ``apt-get install
python3-qgis qgis-providers``), not under the project's Python::

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 scripts/qgis_check.py demo/balanced_train.geojson \
        --png out/balanced_train.png
    /usr/bin/python3 scripts/qgis_check.py \
        --pg-url postgresql://postgres@127.0.0.1:5432/smt --pg-layer tile_result_map \
        --pg-key run_id,tile_id --pg-filter "run_id = 1" --pg-style demo/balanced_postgres.qml \
        --png out/tile_result_map.png
    /usr/bin/python3 scripts/qgis_check.py --pg-url postgresql://postgres@127.0.0.1:5432/smt \
        --pg-layer run_3_split --pg-browser --field fold --excluded-field "" --png out/folds.png

For every layer (the GeoJSON, the PostGIS layer, or both) it checks: the layer is valid, its
feature count (``--expect-count``), CRS EPSG:4326, the style (the ``.qml`` beside a GeoJSON is
loaded the way QGIS loads it when the file is added; a PostGIS layer gets ``--pg-style``), the
renderer type (rule-based or graduated) and that it classifies on ``--field``, that every
feature gets a symbol, that excluded features get a hatched fill and the others a solid one
(skipped with ``--excluded-field ""``), and it renders the layer to a PNG with
``QgsMapRendererCustomPainterJob``. A GeoPackage's own style (its ``layer_styles`` table) is
loaded the way QGIS loads it; ``--pg-browser`` opens the PostGIS layer as QGIS's browser does
(a saved connection, no key typed: the browser's URI) with the default style QGIS finds in the
database's ``layer_styles``. It prints ONE line of JSON (``{"ok": ..., "layers": [...]}``,
with each layer's legend labels and feature counts per label, and open / render seconds) and
exits 1 on any problem.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

#: QGIS message log lines (tag: message), collected while checking
_LOG: list[str] = []
#: QGIS objects that must outlive the check, and what to undo at its end (see _browser_uri)
_KEEP: list[Any] = []
_CLEANUP: list[Any] = []

#: renderer type names (QgsFeatureRenderer.type()) per --expect-renderer choice
RENDERERS = {
    "rule": {"RuleRenderer"},
    "graduated": {"graduatedSymbol"},
    "styled": {"RuleRenderer", "graduatedSymbol"},
}


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "geojson",
        nargs="?",
        type=Path,
        help="layer file written by smt-tools (.geojson, .gpkg, .fgb)",
    )
    p.add_argument("--style", type=Path, help="style for the GeoJSON (default: the .qml beside it)")
    p.add_argument("--pg-url", help="postgresql://user[:password]@host:port/database")
    p.add_argument("--pg-layer", default="tile_result_map", help="table or view [schema.]name")
    p.add_argument("--pg-key", default="run_id,tile_id", help="key column(s), comma separated")
    p.add_argument("--pg-geometry", default="footprint", help="geometry column")
    p.add_argument("--pg-filter", default="", help='provider filter (SQL), e.g. "run_id = 1"')
    p.add_argument("--pg-style", type=Path, help="style (.qml) to apply to the PostGIS layer")
    p.add_argument(
        "--pg-browser",
        action="store_true",
        help="open the PostGIS layer as QGIS's browser does (no key, default style from the db)",
    )
    p.add_argument(
        "--expect-renderer",
        choices=[*RENDERERS, "any"],
        default="styled",
        help="renderer type to expect (styled = rule or graduated; any = no style check)",
    )
    p.add_argument("--field", default="sampler_weight", help="field the colours classify on")
    p.add_argument("--excluded-field", default="excluded", help="field marking hatched tiles")
    p.add_argument("--expect-count", type=int, help="exact feature count of every layer")
    p.add_argument("--png", type=Path, help="render to this PNG (several layers: name_<layer>.png)")
    p.add_argument("--size", type=int, default=800, help="PNG width in pixels")
    args = p.parse_args(argv)
    if args.geojson is None and args.pg_url is None:
        p.error("give a GeoJSON path and/or --pg-url")
    if args.style is not None and args.geojson is None:
        p.error("--style needs a GeoJSON path")
    return args


def _pg_uri(url: str, layer: str, key: str, geometry: str, sql: str) -> Any:
    """QgsDataSourceUri of a PostgreSQL URL and a [schema.]table (password never logged)."""
    from qgis.core import QgsDataSourceUri

    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres", "postgresql+psycopg"):
        raise ValueError(f"--pg-url must start with postgresql://; got {parts.scheme}://")
    uri = QgsDataSourceUri()
    uri.setConnection(
        parts.hostname or "localhost",
        str(parts.port or 5432),
        unquote(parts.path.lstrip("/")),
        unquote(parts.username or ""),
        unquote(parts.password or ""),
    )
    sslmode = parse_qs(parts.query).get("sslmode")
    if sslmode:
        uri.setSslMode(QgsDataSourceUri.decodeSslMode(sslmode[0]))
    schema, _, table = layer.rpartition(".")
    uri.setDataSource(schema or "public", table, geometry, sql)
    uri.setKeyColumn(",".join(f'"{k.strip()}"' for k in key.split(",") if k.strip()))
    return uri


def _safe_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


def _is_true(value: Any) -> bool:
    """QGIS attribute -> bool (NULL and missing are False)."""
    from qgis.core import NULL

    if value is None or value == NULL:
        return False
    if isinstance(value, str):
        return value.strip().lower() in ("true", "t", "1", "yes")
    return bool(value)


def _fill_kind(symbol: Any) -> str:
    """'hatched', 'solid' or 'other' for a fill symbol (its first visible layer decides)."""
    from qgis.core import QgsLinePatternFillSymbolLayer, QgsSimpleFillSymbolLayer
    from qgis.PyQt.QtCore import Qt

    hatches = {
        Qt.BDiagPattern,
        Qt.FDiagPattern,
        Qt.DiagCrossPattern,
        Qt.HorPattern,
        Qt.VerPattern,
        Qt.CrossPattern,
    }
    for i in range(symbol.symbolLayerCount()):
        layer = symbol.symbolLayer(i)
        if not layer.enabled():
            continue
        if isinstance(layer, QgsLinePatternFillSymbolLayer):
            return "hatched"
        if isinstance(layer, QgsSimpleFillSymbolLayer):
            if layer.brushStyle() in hatches:
                return "hatched"
            if layer.brushStyle() == Qt.SolidPattern:
                return "solid"
    return "other"


def _renderer_fields(renderer: Any) -> set[str]:
    """Fields the renderer classifies on (rule filters / graduated attribute)."""
    from qgis.core import QgsExpression

    rtype = renderer.type()
    if rtype == "graduatedSymbol":
        expr = QgsExpression(renderer.classAttribute())
        return set(expr.referencedColumns()) or {renderer.classAttribute()}
    if rtype == "RuleRenderer":
        out: set[str] = set()
        stack = list(renderer.rootRule().children())
        while stack:
            rule = stack.pop()
            if rule.filterExpression():
                out |= set(QgsExpression(rule.filterExpression()).referencedColumns())
            stack.extend(rule.children())
        return out
    return set()


def _rule_count(renderer: Any) -> int:
    if renderer.type() == "RuleRenderer":
        return len(renderer.rootRule().children())
    if renderer.type() == "graduatedSymbol":
        return len(renderer.ranges())
    return 1


def _classify(layer: Any, args: argparse.Namespace, problems: list[str]) -> dict[str, Any]:
    """Symbol of every feature: counts per legend label, hatched/solid vs the excluded flag."""
    from qgis.core import QgsRenderContext

    renderer = layer.renderer().clone()
    ctx = QgsRenderContext()
    ctx.setExpressionContext(layer.createExpressionContext())
    fields = layer.fields()
    has_excl = bool(args.excluded_field) and fields.indexOf(args.excluded_field) >= 0
    labels = {item.ruleKey(): item.label() for item in renderer.legendSymbolItems()}
    per_label = dict.fromkeys(labels.values(), 0)  # legend order, empty classes included
    unstyled = excluded = excluded_hatched = solid_included = included = 0
    colours: set[str] = set()
    renderer.startRender(ctx, fields)
    try:
        for feature in layer.getFeatures():
            ctx.expressionContext().setFeature(feature)
            symbols = renderer.symbolsForFeature(feature, ctx)
            if not symbols:
                unstyled += 1
                continue
            for key in renderer.legendKeysForFeature(feature, ctx):
                if key in labels:  # the root rule of a rule-based renderer has no legend item
                    per_label[labels[key]] = per_label.get(labels[key], 0) + 1
            kinds = {_fill_kind(s) for s in symbols}
            if has_excl and _is_true(feature[args.excluded_field]):
                excluded += 1
                excluded_hatched += "hatched" in kinds
            else:
                included += 1
                solid_included += kinds == {"solid"}
                colours.add(symbols[0].color().name())
    finally:
        renderer.stopRender(ctx)
    if unstyled:
        problems.append(f"{unstyled} feature(s) match no rule/class (drawn with no symbol)")
    if excluded_hatched != excluded:
        problems.append(
            f"{excluded - excluded_hatched} of {excluded} excluded feature(s) not hatched"
        )
    if args.excluded_field and solid_included != included:
        problems.append(f"{included - solid_included} of {included} included feature(s) not solid")
    return {
        "legend": [item.label() for item in renderer.legendSymbolItems()],
        "features_per_class": per_label,
        "unstyled": unstyled,
        "excluded": excluded,
        "excluded_hatched": excluded_hatched,
        "included_solid": solid_included,
        "colours_used": len(colours),
    }


def _render(layer: Any, png: Path, width: int, problems: list[str]) -> dict[str, Any]:
    """Draw ``layer`` alone on white into ``png``; pixel statistics of the picture."""
    import numpy as np
    from qgis.core import QgsMapRendererCustomPainterJob, QgsMapSettings
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor, QImage, QPainter

    extent = layer.extent()
    extent.scale(1.05)
    height = max(1, round(width * extent.height() / max(extent.width(), 1e-12)))
    settings = QgsMapSettings()
    settings.setLayers([layer])
    settings.setDestinationCrs(layer.crs())
    settings.setExtent(extent)
    settings.setOutputSize(QSize(width, height))
    settings.setBackgroundColor(QColor(255, 255, 255))
    image = QImage(settings.outputSize(), QImage.Format_ARGB32)
    image.fill(QColor(255, 255, 255))
    painter = QPainter(image)
    job = QgsMapRendererCustomPainterJob(settings, painter)
    t0 = time.perf_counter()
    job.start()
    job.waitForFinished()
    render_s = time.perf_counter() - t0
    painter.end()
    for err in job.errors():
        problems.append(f"render error in {err.layerID}: {err.message}")
    png.parent.mkdir(parents=True, exist_ok=True)
    if not image.save(str(png), "PNG"):
        problems.append(f"could not write {png}")
    ptr = image.constBits()
    ptr.setsize(image.sizeInBytes())
    bgra = np.frombuffer(ptr, np.uint8).reshape(image.height(), image.bytesPerLine())
    rgb = bgra[:, : image.width() * 4].reshape(image.height(), image.width(), 4)[..., 2::-1]
    drawn = (rgb != 255).any(axis=2)
    colours = np.unique(rgb[drawn].astype(np.uint32) @ np.array([65536, 256, 1], np.uint32))
    if drawn.mean() < 0.05:
        problems.append(f"{png}: only {drawn.mean():.1%} of the picture is drawn")
    return {
        "png": str(png),
        "png_size": [image.width(), image.height()],
        "drawn_fraction": round(float(drawn.mean()), 3),
        "png_colours": int(colours.size),
        "render_s": round(render_s, 4),
    }


def check_layer(
    layer: Any, name: str, style: Path | None, args: argparse.Namespace, png: Path | None
) -> dict[str, Any]:
    """All checks of one layer; ``problems`` lists every failed one."""
    problems: list[str] = []
    out: dict[str, Any] = {"layer": name, "valid": layer.isValid()}
    if not layer.isValid():
        # (error() of an invalid provider layer can crash QGIS 3.22: use the message log)
        hint = " (a view needs --pg-key)" if args.pg_url and not args.pg_key.strip() else ""
        last = _LOG[-1] if _LOG else "no message"
        out["problems"] = [f"layer is not valid{hint}; QGIS says: {last}"]
        return out
    if style is not None:
        message, ok = layer.loadNamedStyle(str(style))
        out["style"] = str(style)
        if not ok:
            problems.append(f"style {style} not loaded: {message}")
    out["features"] = layer.featureCount()
    out["crs"] = layer.crs().authid()
    if args.expect_count is not None and out["features"] != args.expect_count:
        problems.append(f"{out['features']} features, expected {args.expect_count}")
    if out["features"] <= 0:
        problems.append("layer has no features")
    if out["crs"] != "EPSG:4326":
        problems.append(f"CRS {out['crs']}, expected EPSG:4326")
    renderer = layer.renderer()
    out["renderer"] = renderer.type() if renderer else None
    if args.expect_renderer != "any" and renderer is not None:
        out["classes"] = _rule_count(renderer)
        if renderer.type() not in RENDERERS[args.expect_renderer]:
            problems.append(
                f"renderer {renderer.type()}, expected {'/'.join(RENDERERS[args.expect_renderer])}"
                " (style not loaded?)"
            )
        else:
            used = _renderer_fields(renderer)
            names = set(layer.fields().names())
            out["style_fields"] = sorted(used)
            if args.field not in used:
                problems.append(f"renderer does not classify on {args.field} (uses {sorted(used)})")
            if used - names:
                problems.append(f"style uses field(s) {sorted(used - names)} the layer lacks")
            out.update(_classify(layer, args, problems))
    if png is not None:
        out.update(_render(layer, png, args.size, problems))
    out["problems"] = problems
    return out


def _png_for(args: argparse.Namespace, name: str, several: bool) -> Path | None:
    if args.png is None:
        return None
    if not several:
        return args.png
    return args.png.with_name(f"{args.png.stem}_{name}{args.png.suffix or '.png'}")


def _browser_uri(args: argparse.Namespace) -> str:
    """The URI QGIS's browser gives ``--pg-layer`` of a connection to ``--pg-url`` (what a
    user gets by dragging the layer onto the map: no key typed)."""
    from qgis.core import QgsProviderRegistry

    conninfo = _pg_uri(args.pg_url, args.pg_layer, "", args.pg_geometry, "").connectionInfo(False)
    registry = QgsProviderRegistry.instance()
    meta = registry.providerMetadata("postgres")
    name = f"smt-check-{os.getpid()}"
    meta.createConnection(conninfo, {}).store(name)
    _CLEANUP.append(lambda: meta.deleteConnection(name))  # the saved connection goes again
    schema, _, table = args.pg_layer.rpartition(".")
    for provider in registry.dataItemProviders("postgres"):
        root = provider.createDataItem("", None)
        if root is None:
            continue
        _KEEP.append(root)  # destroying a browser item tree crashes QGIS 3.22: keep it
        root.populate(True)
        _KEEP.append(root.children())  # (and every item wrapper it hands out)
        for conn in _KEEP[-1]:
            if conn.name() != name:
                continue
            conn.populate(True)
            _KEEP.append(conn.children())
            for sch in _KEEP[-1]:
                if sch.name() != (schema or "public"):
                    continue
                sch.populate(True)
                _KEEP.append(sch.children())
                for item in _KEEP[-1]:
                    if item.name() == table:
                        return str(item.mimeUris()[0].uri)
    raise ValueError(f"the QGIS browser does not list {args.pg_layer} in {_safe_url(args.pg_url)}")


def _db_style(layer: Any) -> str | None:
    """Name of the default style QGIS found in the layer's own database (``layer_styles``)."""
    provider = layer.dataProvider()
    if provider is None or not provider.isSaveAndLoadStyleToDatabaseSupported():
        return None
    listed = layer.listStylesInDatabase()
    count, names = listed[0], listed[2]
    return f"layer_styles: {names[0]}" if count > 0 and names else None


def _check_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Check the layer file and/or the PostGIS layer; the layers die with this frame."""
    from qgis.core import QgsVectorLayer

    results: list[dict[str, Any]] = []
    several = args.geojson is not None and args.pg_url is not None
    if args.geojson is not None:
        if not args.geojson.is_file():
            results.append({"layer": str(args.geojson), "problems": ["file not found"]})
        else:
            # the constructor loads the default style as adding the file in QGIS does: the
            # GeoPackage's own layer_styles, else <name>.qml beside the file
            t0 = time.perf_counter()
            layer = QgsVectorLayer(str(args.geojson), args.geojson.stem, "ogr")
            open_s = time.perf_counter() - t0
            png = _png_for(args, "geojson", several)
            res = check_layer(layer, str(args.geojson), args.style, args, png)
            res["open_s"] = round(open_s, 4)
            if args.style is None:
                qml = args.geojson.with_suffix(".qml")
                db = _db_style(layer) if layer.isValid() else None
                res["style"] = db or (f"{qml} (default)" if qml.is_file() else None)
            results.append(res)
    if args.pg_url is not None:
        if args.pg_browser:
            source = _browser_uri(args)
        else:
            uri = _pg_uri(args.pg_url, args.pg_layer, args.pg_key, args.pg_geometry, args.pg_filter)
            source = uri.uri(False)
        t0 = time.perf_counter()
        layer = QgsVectorLayer(source, args.pg_layer, "postgres")
        open_s = time.perf_counter() - t0
        name = f"{_safe_url(args.pg_url)}#{args.pg_layer}"
        png = _png_for(args, args.pg_layer.rpartition(".")[2], several)
        res = check_layer(layer, name, args.pg_style, args, png)
        res["open_s"] = round(open_s, 4)
        if layer.isValid():
            res["key"] = layer.dataProvider().uri().keyColumn()
            if args.pg_style is None:
                res["style"] = _db_style(layer)
        results.append(res)
    return results


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        from qgis.core import Qgis, QgsApplication
    except ImportError as exc:
        print(json.dumps({"ok": False, "error": f"cannot import qgis: {exc}"}))
        return 1
    app = QgsApplication([], False)
    app.initQgis()
    QgsApplication.messageLog().messageReceived.connect(
        lambda message, tag, _level: _LOG.append(f"{tag}: {' '.join(message.split())}")
    )
    try:
        results = _check_all(args)
    except Exception as exc:  # reported in the one-line summary, never as a traceback
        results = [{"layer": "?", "problems": [f"{type(exc).__name__}: {exc}"]}]
    ok = all(not r.get("problems") for r in results)
    text = json.dumps({"ok": ok, "qgis": str(Qgis.QGIS_VERSION), "layers": results})
    password = urlsplit(args.pg_url).password if args.pg_url else None
    if password:  # QGIS messages may echo connection details
        text = text.replace(password, "***")
    print(text, flush=True)
    for undo in _CLEANUP:
        undo()
    if _CLEANUP:
        from qgis.core import QgsSettings

        QgsSettings().sync()  # os._exit below skips the usual write-back
    if _KEEP:  # QGIS 3.22 crashes destroying browser items: leave without tearing down
        sys.stderr.flush()
        os._exit(0 if ok else 1)
    app.exitQgis()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
