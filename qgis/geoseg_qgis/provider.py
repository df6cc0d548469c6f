"""The "geoseg" Processing provider and its one setting: the path of the ``geoseg`` executable."""

from __future__ import annotations

import os

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithms import MapFields, RunJobSpec
from .cluster import JobStatus, SubmitJob
from .settings import EXECUTABLE_SETTING, processing_config


class GeosegProvider(QgsProcessingProvider):
    """Processing provider ``geoseg``: Map fields, Run job spec, Submit job to cluster, Cluster job status."""

    def load(self) -> bool:
        config, setting = processing_config()
        if config is not None:
            config.settingIcons[self.name()] = self.icon()
            config.addSetting(
                setting(
                    self.name(),
                    EXECUTABLE_SETTING,
                    "geoseg executable (empty: $GEOSEG_EXECUTABLE, PATH, ~/.venv, ~/geoseg-env, conda env geoseg)",
                    "",
                    valuetype=setting.FILE,
                )
            )
            config.readSettings()
        self.refreshAlgorithms()
        return True

    def unload(self) -> None:
        config, _ = processing_config()
        if config is not None:
            config.removeSetting(EXECUTABLE_SETTING)

    def loadAlgorithms(self) -> None:
        for algorithm in (MapFields(), RunJobSpec(), SubmitJob(), JobStatus()):
            self.addAlgorithm(algorithm)

    def id(self) -> str:
        return "geoseg"

    def name(self) -> str:
        return "geoseg"

    def longName(self) -> str:
        return "geoseg: field boundaries and crop health"

    def icon(self) -> QIcon:
        return QIcon(os.path.join(os.path.dirname(__file__), "icon.svg"))
