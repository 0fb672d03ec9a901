#!/usr/bin/python3
"""Open and repaint times of one tile layer in headless QGIS, per file format.

Run under the system Python that has the qgis bindings, after writing the layers (e.g. with
smt_tools.export.vector.write_vector)::

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 benchmarks/qgis_layer_formats.py t.geojson t.gpkg

Per file: ``open_s`` (QgsVectorLayer: open, read the style, count), ``full_s`` (first paint at
full extent), ``repaint_s`` (second paint at full extent, what a pan or a style change costs)
and ``zoom_s`` (a paint of 1 % of the extent: where a spatial index pays). Best of 3 each.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def _paint(layer, extent) -> float:  # type: ignore[no-untyped-def]
    from qgis.core import QgsMapRendererCustomPainterJob, QgsMapSettings
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor, QImage, QPainter

    settings = QgsMapSettings()
    settings.setLayers([layer])
    settings.setDestinationCrs(layer.crs())
    settings.setExtent(extent)
    settings.setOutputSize(QSize(1000, 1000))
    image = QImage(settings.outputSize(), QImage.Format_ARGB32)
    image.fill(QColor(255, 255, 255))
    painter = QPainter(image)
    t0 = time.perf_counter()
    job = QgsMapRendererCustomPainterJob(settings, painter)
    job.start()
    job.waitForFinished()
    elapsed = time.perf_counter() - t0
    painter.end()
    return elapsed


def main(paths: list[str]) -> int:
    from qgis.core import QgsApplication, QgsRectangle, QgsVectorLayer

    app = QgsApplication([], False)
    app.initQgis()
    for path in paths:
        opens, layer = [], None
        for _ in range(3):
            t0 = time.perf_counter()
            layer = QgsVectorLayer(path, "tiles", "ogr")
            count = layer.featureCount()
            opens.append(time.perf_counter() - t0)
        assert layer is not None and layer.isValid(), path
        full = layer.extent()
        c = full.center()
        zoom = QgsRectangle(
            c.x() - full.width() / 20,
            c.y() - full.height() / 20,
            c.x() + full.width() / 20,
            c.y() + full.height() / 20,
        )
        first = _paint(layer, full)
        repaint = min(_paint(layer, full) for _ in range(3))
        zoomed = min(_paint(layer, zoom) for _ in range(3))
        print(
            json.dumps(
                {
                    "file": os.path.basename(path),
                    "features": count,
                    "renderer": layer.renderer().type(),
                    "open_s": round(min(opens), 3),
                    "full_s": round(first, 3),
                    "repaint_s": round(repaint, 3),
                    "zoom_s": round(zoomed, 3),
                }
            ),
            flush=True,
        )
    app.exitQgis()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
