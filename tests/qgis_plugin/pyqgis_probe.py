"""Runs in QGIS's own Python (``/usr/bin/python3``), not geoseg's: loads the plugin from a profile's plugins
folder the way QGIS does (``classFactory``, ``initProcessing``), runs one of its algorithms with
``processing.run`` and prints one JSON line: the results, or the error, the progress texts the dialog would show,
the layers set to load (with their renderer types: the styles stored in the GeoPackage) and the project's layers
after the dialog's post-processing has loaded them.

Usage: python3 pyqgis_probe.py PLUGINS_DIR ALGORITHM PARAMS_JSON [CANCEL_AT_TILES]
(CANCEL_AT_TILES: press Cancel, ``QgsProcessingFeedback.cancel()``, once this many tiles are done).
"""

import json
import os
import re
import sys

sys.path[:0] = ["/usr/share/qgis/python/plugins", sys.argv[1]]

from qgis.core import (  # noqa: E402
    QgsApplication,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProject,
)
from qgis.PyQt.QtCore import QCoreApplication  # noqa: E402

QCoreApplication.setOrganizationName("QGIS")  # as QGIS itself: the profile's QGIS3.ini holds the settings
QCoreApplication.setApplicationName("QGIS3")
app = QgsApplication([], False)
app.initQgis()
from processing.core.Processing import Processing  # noqa: E402

Processing.initialize()
import geoseg_qgis  # noqa: E402
import processing  # noqa: E402

plugin = geoseg_qgis.classFactory(None)
plugin.initProcessing()


class Feedback(QgsProcessingFeedback):
    """Records what the Processing dialog would show; presses Cancel at a given number of tiles done."""

    def __init__(self, cancel_at: int | None) -> None:
        super().__init__()
        self.cancel_at = cancel_at
        self.texts: list[str] = []

    def setProgressText(self, text: str) -> None:
        self.texts.append(text)
        tiles = re.fullmatch(r"\w+: (\d+)/\d+.*", text)  # the plugin's "tiles: 3/9"; Processing's own texts pass
        if tiles and self.cancel_at is not None and int(tiles.group(1)) >= self.cancel_at:
            self.cancel()


def style(layer) -> list:
    """The layer's renderer: its type and categories, or its one symbol's outline colour."""
    renderer = layer.renderer()
    if renderer.type() == "categorizedSymbol":
        return [renderer.type(), [c.value() for c in renderer.categories()]]
    return [renderer.type(), renderer.symbol().symbolLayer(0).strokeColor().name()]


feedback = Feedback(int(sys.argv[4]) if len(sys.argv) > 4 else None)
context = QgsProcessingContext()
context.setProject(QgsProject.instance())
out: dict = {}
try:
    out["results"] = processing.run(sys.argv[2], json.loads(sys.argv[3]), feedback=feedback, context=context)
except QgsProcessingException as err:
    out["error"] = str(err)
out["progress"] = feedback.texts
out["loaded"] = {}
for layer_id, details in context.layersToLoadOnCompletion().items():
    layer = context.temporaryLayerStore().mapLayer(layer_id)
    out["loaded"][details.name] = [layer.isValid(), layer.renderer().type(), layer.featureCount()]
if "results" in out:  # what the Processing dialog does next: load the layers into the project
    from processing.gui.Postprocessing import handleAlgorithmResults

    handleAlgorithmResults(QgsApplication.processingRegistry().algorithmById(sys.argv[2]), context, feedback)
    layers = QgsProject.instance().mapLayers().values()
    out["project"] = {layer.name(): style(layer) for layer in layers}
print(json.dumps(out), flush=True)
os._exit(0)  # QGIS 3.22 may crash in exitQgis() while tearing down providers
