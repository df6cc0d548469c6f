"""The plugin object QGIS loads: it registers the Processing provider, in the desktop and in ``qgis_process``."""

from __future__ import annotations

from qgis.core import QgsApplication

from .provider import GeosegProvider


class GeosegPlugin:
    """Adds the "geoseg" Processing provider; there is no other user interface."""

    def __init__(self, iface: object = None) -> None:
        self.iface = iface
        self.provider: GeosegProvider | None = None

    def initProcessing(self) -> None:
        self.provider = GeosegProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:
        self.initProcessing()

    def unload(self) -> None:
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
