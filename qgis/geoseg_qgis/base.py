"""What every geoseg algorithm shares: finding geoseg, running it with progress and cancel, loading its layers."""

from __future__ import annotations

import os
from typing import Any

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QIcon

from . import runner
from .settings import executable_setting


class GeosegAlgorithm(QgsProcessingAlgorithm):
    """A Processing algorithm that runs the ``geoseg`` command (never geoseg inside QGIS's Python)."""

    def createInstance(self) -> GeosegAlgorithm:
        return type(self)()

    def icon(self) -> QIcon:
        return QIcon(os.path.join(os.path.dirname(__file__), "icon.svg"))

    def geoseg(self, feedback: QgsProcessingFeedback) -> str:
        """The geoseg executable, checked to run and to be recent enough.

        Raises:
            QgsProcessingException: none found, or too old; the message has the install command.
        """
        try:
            executable = runner.find_geoseg(executable_setting())
            version = runner.check_version(executable)
        except runner.GeosegMissing as err:
            raise QgsProcessingException(str(err)) from None
        feedback.pushInfo(f"geoseg {version}: {executable}")
        return executable

    def run_geoseg(self, args: list[str], feedback: QgsProcessingFeedback) -> runner.Outcome:
        """Run geoseg with ``args``, its progress lines as the dialog's percent, other lines in the log.

        Raises:
            QgsProcessingException: canceled (geoseg stopped with SIGINT, finished tiles kept), or geoseg failed
                without writing outputs; the message is geoseg's one line.
        """
        executable = self.geoseg(feedback)
        feedback.pushCommandInfo(" ".join([executable, *args]))

        def on_line(stream: str, line: str) -> None:
            progress = runner.parse_progress(line)
            if progress is not None:
                feedback.setProgress(progress.percent)
                failed = f", {progress.failed} failed" if progress.failed else ""
                feedback.setProgressText(f"{progress.stage}: {progress.done}/{progress.total}{failed}")
            elif stream == "stdout":
                feedback.pushInfo(line)
            else:
                feedback.pushConsoleInfo(line)

        outcome = runner.run(executable, args, on_line, feedback.isCanceled)
        if outcome.canceled:
            raise QgsProcessingException(
                f"canceled: geoseg stopped (exit {outcome.returncode}); its finished tiles are kept: run it again "
                "with Resume and Overwrite checked to redo only the missing tiles"
            )
        if outcome.returncode != 0:
            if outcome.returncode == 2 and runner.parse_written(outcome.stdout):
                feedback.reportError(f"some tiles failed (see the tiles layer): {outcome.error()}", False)
            else:
                raise QgsProcessingException(outcome.error())
        return outcome

    def load_layers(
        self, outcome: runner.Outcome, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        """The layers geoseg reports writing, opened with the styles stored in the GeoPackage and set to load.

        Returns:
            ``OUTPUT`` (the GeoPackage), ``LAYERS`` (every layer's source) and each layer's source by its name in
            upper case (``FIELDS``, ``CROP_HEALTH``, ...).
        """
        written = runner.parse_written(outcome.stdout)
        if written is None:
            raise QgsProcessingException("geoseg finished but did not report its outputs (no 'wrote ...' line)")
        results: dict[str, Any] = {"OUTPUT": written.geopackage, "LAYERS": []}
        for name, count in written.layers.items():
            source = f"{written.geopackage}|layername={name}"
            layer = QgsVectorLayer(source, name, "ogr")  # loads the default style: the GeoPackage's layer_styles
            if not layer.isValid():
                raise QgsProcessingException(f"QGIS cannot open layer {name} of {written.geopackage}")
            feedback.pushInfo(f"{name}: {count} features, style {layer.renderer().type() if layer.renderer() else '-'}")
            context.temporaryLayerStore().addMapLayer(layer)
            details = QgsProcessingContext.LayerDetails(name, context.project(), name.upper())
            context.addLayerToLoadOnCompletion(layer.id(), details)
            results[name.upper()] = source
            results["LAYERS"].append(source)
        return results
