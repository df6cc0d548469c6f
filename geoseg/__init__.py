"""geoseg: whole-region satellite and aerial image segmentation on Ray, exported as GIS-ready layers."""

__version__ = "0.1.0"
