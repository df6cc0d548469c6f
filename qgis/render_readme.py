"""Render README's QGIS picture: the sample job's fields, styled as the plugin loads them (the GeoPackage's stored
QGIS styles), over the sample's false-colour imagery, with QGIS's own renderer, headless.

Runs in QGIS's Python, not geoseg's (it reads only the outputs):

    geoseg run jobs/sample_fields.yaml --overwrite
    QT_QPA_PLATFORM=offscreen /usr/bin/python3 qgis/render_readme.py out/sample_fields.gpkg qgis/qgis_fields.png
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from osgeo import gdal
from qgis.core import (
    QgsApplication,
    QgsMapRendererParallelJob,
    QgsMapSettings,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor, QImage

SAMPLE = Path(__file__).resolve().parent.parent / "jobs" / "sample"
SIZE = 560
"""Pixels a side of the picture (the scene is 768 px at 10 m)."""


def false_colour(folder: str) -> QgsRasterLayer:
    """NIR / red / green of the sample as one virtual raster, stretched as QGIS does by default (2-98 % cut)."""
    vrt = os.path.join(folder, "false_colour.vrt")
    bands = [str(SAMPLE / f"{name}.tif") for name in ("B08", "B04", "B03")]
    gdal.BuildVRT(vrt, bands, separate=True).FlushCache()  # on disk before QGIS opens it
    layer = QgsRasterLayer(vrt, "Sentinel-2 false colour")
    if not layer.isValid():
        raise SystemExit(f"QGIS cannot open {vrt}")
    return layer


def render(gpkg: str, png: str) -> None:
    """Draw the fields (their stored style) over the imagery into ``png``."""
    fields = QgsVectorLayer(f"{gpkg}|layername=fields", "fields", "ogr")  # the default style: layer_styles
    if not fields.isValid():
        raise SystemExit(f"no fields layer in {gpkg}: run geoseg run jobs/sample_fields.yaml first")
    imagery = false_colour(tempfile.mkdtemp(prefix="geoseg_render_"))  # kept: QGIS rewrites the VRT on close
    settings = QgsMapSettings()
    settings.setLayers([fields, imagery])  # top first
    settings.setDestinationCrs(imagery.crs())
    settings.setExtent(imagery.extent())
    settings.setOutputSize(QSize(SIZE, SIZE))
    settings.setBackgroundColor(QColor("white"))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage().convertToFormat(QImage.Format_Indexed8)  # 256 colours: a small file
    if not image.save(png, "PNG", 9):
        raise SystemExit(f"cannot write {png}")
    print(f"wrote {png} ({fields.featureCount()} fields, renderer {fields.renderer().type()})")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    app = QgsApplication([], False)
    app.initQgis()
    render(sys.argv[1], sys.argv[2])
    os._exit(0)  # QGIS 3.22 may crash in exitQgis() while tearing down providers
