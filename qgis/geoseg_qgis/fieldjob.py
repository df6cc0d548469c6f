"""The field job that *Map fields* runs: which input band plays which role, and the job spec (crop health + field
delineator, as ``jobs/sample_fields.yaml``) written as YAML.

Plain Python, no QGIS: the algorithm hands in what it read off the layers (:class:`RasterInput`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

ROLES = ("blue", "green", "red", "nir", "rededge", "swir16")
"""Band roles the field job reads; green, red and nir are required, the others add indices and rules."""
REQUIRED = ("green", "red", "nir")
_ALIASES = {
    "blue": ("blue", "b2", "b02", "srb2", "coastalblue"),
    "green": ("green", "b3", "b03", "srb3"),
    "red": ("red", "b4", "b04", "srb4"),
    "nir": ("nir", "nearinfrared", "b8", "b08", "srb5", "nir08", "infrared"),
    "rededge": ("rededge", "b5", "b05", "re", "re1", "rededge1", "vegetationrededge"),
    "swir16": ("swir16", "swir1", "swir", "b11", "srb6", "shortwaveinfrared1"),
}
_ROLE_OF = {alias: role for role, aliases in _ALIASES.items() for alias in aliases}


class FieldJobError(ValueError):
    """A mistake in the algorithm's parameters; the message says what to change."""


@dataclass(frozen=True)
class RasterInput:
    """One raster layer as *Map fields* sees it: its file, and per band the description QGIS reads."""

    path: str
    name: str
    descriptions: tuple[str, ...]
    """One entry per band, '' where the band has none."""
    is_float: bool = False


@dataclass(frozen=True)
class BandChoice:
    """A role filled by band ``band`` (1-based) of ``path``."""

    role: str
    path: str
    band: int
    label: str
    """How the band was named when the role was read off it, for messages."""


def role_of(text: str) -> str | None:
    """The role a band description or layer name names (``B04``, ``Red``, ``SR_B5``, ``nir``), or None."""
    key = re.sub(r"[^a-z0-9]", "", text.lower())
    if key in _ROLE_OF:
        return _ROLE_OF[key]
    words = re.findall(r"[a-z]+[0-9]*", text.lower())
    hits = {_ROLE_OF[w] for w in words if w in _ROLE_OF and not w[-1].isdigit()}
    return hits.pop() if len(hits) == 1 else None


def _named_bands(layers: Sequence[RasterInput]) -> list[tuple[str, int, str]]:
    """(path, band, label) of every band, layer by layer; a one-band layer's label falls back to its name."""
    found = []
    for layer in layers:
        for band, description in enumerate(layer.descriptions, start=1):
            label = description or (layer.name if len(layer.descriptions) == 1 else "")
            found.append((layer.path, band, label))
    return found


def choose_bands(layers: Sequence[RasterInput], roles: str = "") -> list[BandChoice]:
    """Which band plays which role.

    Args:
        layers: the raster layers, in the order given.
        roles: comma-separated roles, one per band of the layers in order (``-`` or empty skips a band), e.g.
            ``blue,green,red,nir`` for one four-band layer; empty: read off the band descriptions (or a one-band
            layer's name: ``B04`` is red).

    Raises:
        FieldJobError: a role unknown, given twice, or a required role (green, red, nir) missing.
    """
    bands = _named_bands(layers)
    if not bands:
        raise FieldJobError("no raster layer given: choose one multi-band layer or one layer per band")
    if roles.strip():
        given = [r.strip().lower() for r in roles.split(",")]
        if len(given) != len(bands):
            raise FieldJobError(
                f"band roles lists {len(given)} role(s) for {len(bands)} band(s): give one per band, in layer "
                "order (- skips a band)"
            )
        unknown = [r for r in given if r not in (*ROLES, "-", "")]
        if unknown:
            raise FieldJobError(f"band role {unknown[0]!r} is not one of {', '.join(ROLES)} (or - to skip)")
        pairs = zip(given, bands, strict=True)
        picked = [BandChoice(r, p, b, f"band {b} of {p}") for r, (p, b, _) in pairs if r not in ("-", "")]
    else:
        picked = [BandChoice(r, p, b, label) for p, b, label in bands if (r := role_of(label))]
    return _checked(picked)


def _checked(picked: list[BandChoice]) -> list[BandChoice]:
    seen: dict[str, BandChoice] = {}
    for choice in picked:
        if choice.role in seen:
            raise FieldJobError(
                f"two bands for {choice.role}: {seen[choice.role].label!r} and {choice.label!r}; "
                "set the band roles (e.g. blue,green,red,nir,-) to choose"
            )
        seen[choice.role] = choice
    missing = [role for role in REQUIRED if role not in seen]
    if missing:
        named = ", ".join(c.label or "?" for c in picked) or "none"
        raise FieldJobError(
            f"no band for {', '.join(missing)} (bands recognised: {named}); set the band roles, one per band in "
            "layer order, e.g. blue,green,red,nir"
        )
    return sorted(seen.values(), key=lambda c: ROLES.index(c.role))


@dataclass(frozen=True)
class FieldJob:
    """The settings of a field job besides its bands."""

    name: str
    output: str
    scale: float
    nodata: float | None
    aoi: str | None = None
    datetime: str | None = None
    tile_size: int = 512
    actors: int = 1


def spec_yaml(job: FieldJob, bands: Sequence[BandChoice]) -> str:
    """The job spec as YAML (every value JSON-quoted, which YAML reads as is): crop health + field delineator."""
    roles = {b.role for b in bands}
    indices = ["ndvi"] + (["ndre"] if "rededge" in roles else []) + (["ndmi"] if "swir16" in roles else [])
    q = json.dumps
    lines = [f"# written by the geoseg QGIS plugin (Map fields)\nname: {q(job.name)}", "inputs:", "  bands:"]
    lines += [f"    {b.role}: {{path: {q(b.path)}, band: {b.band}}}" for b in bands]
    if job.nodata is not None:
        lines.append(f"  nodata: {q(job.nodata)}")
    lines.append(f"  scale: {q(job.scale)}")
    if job.datetime:
        lines.append(f"  datetime: {q(job.datetime)}")
    if job.aoi:
        lines.append(f"aoi: {{path: {q(job.aoi)}}}")
    lines += [
        f"tiling: {{tile_size: {job.tile_size}}}",
        "models:",
        f"  - {{type: crop_health, name: crop_health, indices: {q(indices)}, classify_by: ndvi,",
        "     thresholds: {non_vegetation: 0.25, stressed: 0.45, moderate: 0.6}}",
        f"  - {{type: field_delineator, name: fields, use_swir: {q('swir16' in roles)}}}",
        "output:",
        f"  path: {q(job.output)}",
        "  masks: true\n  min_area_m2: 5000\n  fill_holes_m2: 1000\n  simplify: 5",
        f"compute: {{actors: {job.actors}, batch_size: 4}}",
    ]
    return "\n".join(lines) + "\n"
