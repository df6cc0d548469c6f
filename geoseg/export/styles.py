"""QGIS layer styles (QML strings) for geoseg's polygon layers.

The builders return minimal QGIS 3.x QML documents holding only the symbology: a categorized fill (one
colour per class), a graduated fill (one colour per value range) or an outline without fill (field
boundaries, objects, tiles). :func:`geoseg.export.vector.write_geopackage` stores them in the GeoPackage's
``layer_styles`` table so QGIS opens the layers styled. Colours are ``(red, green, blue, alpha)`` tuples of
integers in 0..255; widths are millimetres. Loaded and checked with QGIS 3.22.
"""

from __future__ import annotations

import math
import numbers
import xml.etree.ElementTree as ET
from collections.abc import Sequence

__all__ = ["RGBA", "categorized_qml", "graduated_qml", "outline_qml"]

RGBA = tuple[int, int, int, int]

_DOCTYPE = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>"
_QGIS_VERSION = "3.22.0"
_POLYGON_GEOMETRY_TYPE = "2"  # QgsWkbTypes::PolygonGeometry: QGIS refuses the style on point / line layers
_OUTLINE_RGBA: RGBA = (35, 35, 35, 255)
_OUTLINE_WIDTH_MM = 0.26


def categorized_qml(field: str, categories: Sequence[tuple[object, str, RGBA]], outline_only: bool = False) -> str:
    """Fill polygons with one colour per class value (or, ``outline_only``, draw their outlines in it).

    Args:
        field: Attribute holding the class (e.g. ``"class"``).
        categories: ``(value, label, rgba)`` per class. QGIS matches values as text, so an integer field's
            class ``1`` matches ``1`` (not ``1.0``).

    Returns:
        The QML document.
    """
    _check_field(field)
    if not categories:
        raise ValueError("categorized_qml needs at least one category")
    renderer = _renderer("categorizedSymbol", attr=field)
    cats = ET.SubElement(renderer, "categories")
    symbols = ET.SubElement(renderer, "symbols")
    for index, (value, label, rgba) in enumerate(categories):
        ET.SubElement(cats, "category", value=str(value), symbol=str(index), label=str(label), render="true")
        symbol = _fill_symbol(str(index), fill=None, outline=rgba, outline_width_mm=0.6) if outline_only else None
        symbols.append(symbol if symbol is not None else _fill_symbol(str(index), fill=rgba))
    return _document(renderer)


def graduated_qml(field: str, ranges: Sequence[tuple[float, float, str, RGBA]]) -> str:
    """Fill polygons with one colour per value range (e.g. an NDVI or health score).

    Args:
        field: Numeric attribute to classify.
        ranges: ``(lower, upper, label, rgba)`` per class, lower <= upper.

    Returns:
        The QML document.
    """
    _check_field(field)
    if not ranges:
        raise ValueError("graduated_qml needs at least one range")
    renderer = _renderer("graduatedSymbol", attr=field, graduatedMethod="GraduatedColor")
    ranges_el = ET.SubElement(renderer, "ranges")
    symbols = ET.SubElement(renderer, "symbols")
    for index, (lower, upper, label, rgba) in enumerate(ranges):
        if not (math.isfinite(lower) and math.isfinite(upper) and lower <= upper):
            raise ValueError(f"graduated_qml range {index} must have finite lower <= upper, got {lower}, {upper}")
        ET.SubElement(
            ranges_el,
            "range",
            lower=repr(float(lower)),
            upper=repr(float(upper)),
            symbol=str(index),
            label=str(label),
            render="true",
        )
        symbols.append(_fill_symbol(str(index), fill=rgba))
    ET.SubElement(renderer, "classificationMethod", id="Custom")
    return _document(renderer)


def outline_qml(rgba: RGBA, width_mm: float = 0.6) -> str:
    """Draw polygon outlines only, no fill (field boundaries, objects, tile index).

    Args:
        rgba: Outline colour.
        width_mm: Outline width in millimetres.

    Returns:
        The QML document.
    """
    if not (math.isfinite(width_mm) and width_mm > 0):
        raise ValueError(f"outline width must be a positive number of millimetres, got {width_mm}")
    renderer = _renderer("singleSymbol")
    symbols = ET.SubElement(renderer, "symbols")
    symbols.append(_fill_symbol("0", fill=None, outline=rgba, outline_width_mm=width_mm))
    return _document(renderer)


# --------------------------------------------------------------------------------------------- helpers
def _renderer(kind: str, **attrs: str) -> ET.Element:
    base = {"type": kind, "symbollevels": "0", "forceraster": "0", "enableorderby": "0"}
    return ET.Element("renderer-v2", {**base, **attrs})


def _fill_symbol(
    name: str,
    *,
    fill: RGBA | None,
    outline: RGBA = _OUTLINE_RGBA,
    outline_width_mm: float = _OUTLINE_WIDTH_MM,
) -> ET.Element:
    """A fill symbol with one SimpleFill layer; ``fill=None`` draws the outline only."""
    symbol = ET.Element("symbol", type="fill", name=name, alpha="1", clip_to_extent="1", force_rhr="0")
    layer = ET.SubElement(symbol, "layer", {"class": "SimpleFill", "enabled": "1", "locked": "0", "pass": "0"})
    props = {
        "color": _rgba_text(fill if fill is not None else (0, 0, 0, 0)),
        "style": "solid" if fill is not None else "no",
        "outline_color": _rgba_text(outline),
        "outline_style": "solid",
        "outline_width": repr(float(outline_width_mm)),
        "outline_width_unit": "MM",
        "joinstyle": "miter",
    }
    options = ET.SubElement(layer, "Option", type="Map")
    for key, value in props.items():
        ET.SubElement(options, "Option", type="QString", name=key, value=value)
    return symbol


def _document(renderer: ET.Element) -> str:
    root = ET.Element("qgis", version=_QGIS_VERSION, styleCategories="Symbology")
    root.append(renderer)
    ET.SubElement(root, "layerGeometryType").text = _POLYGON_GEOMETRY_TYPE
    ET.indent(root)
    return f"{_DOCTYPE}\n{ET.tostring(root, encoding='unicode')}\n"


def _rgba_text(rgba: RGBA) -> str:
    values = tuple(rgba)
    if len(values) != 4 or not all(isinstance(v, numbers.Integral) and 0 <= v <= 255 for v in values):
        raise ValueError(f"a colour must be 4 integers (r, g, b, a) in 0..255, got {rgba!r}")
    return ",".join(str(int(v)) for v in values)


def _check_field(field: str) -> None:
    if not field:
        raise ValueError("a style needs the name of the attribute it classifies")
