"""geoseg's QGIS plugin: a Processing provider whose algorithms run the ``geoseg`` command of another environment."""


def classFactory(iface):
    """QGIS's entry point: the plugin object."""
    from .plugin import GeosegPlugin

    return GeosegPlugin(iface)
