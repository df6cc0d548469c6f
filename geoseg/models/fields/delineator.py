"""Field delineator (no weights): regions between lanes and edges, then a field / not-field rule per pixel and region.

What a field is on a 10-30 m image: a large, smooth region of cropland (green, stubble or bare soil) bounded by
hedges, tree lines, roads, ditches or a change of crop. The steps, each with its spec parameter:

1. **Line strength** (:mod:`geoseg.models.fields.edges`): an elongated line filter (``edge_width_px`` across,
   ``edge_length_m`` along, 16 orientations) on the logarithm of green, red, NIR (and SWIR). It follows a faint
   lane between two fields of one crop, which a plain gradient loses in the noise, and it answers on steps too.
   Beside it a long filter (``long_edge_length_m``, by default 80 m on pixels up to 20 m), whose answer counts
   ``long_edge_gain`` times: a boundary faint along its whole length (a change of crop, a lane one pixel wide)
   runs straight for a field's length, where the streaks and patches inside a field do not.
2. **Field-like pixels** (all must hold; each rule leaves one kind of land out), on the bands smoothed with a
   Gaussian (``smoothing_sigma``):

   - NDWI = (green - NIR) / (green + NIR) <= ``water_ndwi`` — not water;
   - NDVI >= ``bare_ndvi_min`` — not sand, beach, roofs, tarmac (bare soil has NDVI 0.1-0.3, sand and roofs < 0.08),
     nor the sparse dune grass on sand behind a beach (0.09-0.10);
   - SWIR >= ``swir_min`` (with ``use_swir``; without SWIR: mean(green, red) >= ``visible_min``) — not woods,
     marsh or water: crops and soil are bright in SWIR (0.2-0.3), woods and wet land dark (< 0.12) — **or**
     NIR >= ``green_nir_min``: a dense green crop can be as dark in SWIR as a wood (Landsat TOA: 0.13), but
     it is brighter in NIR (>= 0.25 where woods stay <= 0.21: their crowns shade each other) — **or**
     SWIR >= ``dry_swir_min`` and NDMI = (NIR - SWIR) / (NIR + SWIR) <= ``dry_ndmi_max``: soil under haze or
     dark soil can read 0.11-0.14 in SWIR, but it is dry (NIR no brighter than SWIR), where woods and wet land,
     dark in SWIR because of their water, mostly have NDMI > 0.05 (the tune split's woods: 0.06 and
     up); water and most marsh stay below 0.10 in SWIR;
   - NIR texture (standard deviation / mean in 3 x 3) <= ``texture_max`` — not town or woods (crowns, roofs and
     shadows), and not the hedges and lanes between fields.
3. **Seeds**: field-like pixels whose line strength is below ``edge_threshold``, eroded by ``seed_erode_px``
   (by default 1 px up to 20 m pixels, none on coarser ones), split where they narrow to a neck
   (``neck_depth_m``, at least :data:`MIN_NECK_DEPTH_PX`: a gap in a lane joins two fields only through
   a neck), each of at least ``min_seed_m2``.
4. **Regions**: a watershed of the line strength from the seeds over the field-like pixels, so that every
   field-like pixel joins the seed it is reached from by the lowest path and edges settle on the lane, hedge or
   change of crop.
5. **Merge** adjacent regions whose shared boundary is weak: its ``merge_quantile`` line strength is below
   ``merge_edge_max``. A lane between two fields is strong along most of their boundary (a gap in it is short);
   a neck cut through one irregular field, or a boundary drawn through a streaky field, is calm along most of
   its length, so that field becomes one region again.
6. **Split** a region whose NDVI falls in two solid blocks (``split_ndvi_step``, ``split_bimodality``,
   ``split_ramp_m``; :mod:`geoseg.models.fields.split`): a bare field beside a green one, joined where the lane
   between them ends and the colour only ramps from one to the other.
7. **Region rule**: a region whose mean texture exceeds ``region_texture_max`` is dropped (orchards, gardens,
   scattered houses that passed pixel by pixel).

**Any imagery: which signals carry each decision, and why they hold across sensors.** The bands decide: SWIR is read
when the job has it (``use_swir`` unset), never required. Where the inputs are digital numbers without units
(integer data, no ``inputs.scale``: NAIP, drones, orthophotos; :attr:`SceneInfo.reflectance` is False), no rule uses
an absolute level:

- *Levels* are relative to the scene: the bands are multiplied by one gain, which puts the scene's 99th percentile
  (mean over green, red, NIR, from the plan's one decimated read) at :data:`DN_BRIGHT_LEVEL`; one gain for all
  bands keeps every ratio and index as the sensor gave it, and the log offset of the line filter and the visible
  and NIR floors of step 2 weigh as they do on reflectance.
- *Boundaries* (steps 1, 3-5) are contrasts of logarithms, ratios that no gain changes; pixels finer than
  ``working_pixel_m`` (10 m) are averaged in blocks of whole pixels first (:func:`working_block`), so the filters
  see 10 m cells whatever the pixel (0.5-30 m): crop rows, tillage lines and wheel tracks average out, the fields
  come back at full resolution (each block's label). Lengths and areas are in metres.
- *Water* is NDWI above ``water_ndwi`` **and** NIR below ``water_nir_share`` of the scene's median NIR: on
  uncalibrated bands NDWI shifts (bare soil reads 0 to 0.1 on NAIP), but open water is far darker than land in NIR
  on every sensor. The NDVI floor (sand, roofs) is not applied: uncalibrated NDVI of bare soil can read below it.
- *Wet-grass and cattail rings, verges, farmsteads*: a field's calm core (its seed) reaches within a lane's width of
  its boundary; a strip beyond it wider than ``grow_max_m`` (20 m) that touches non-field land and is narrower
  than twice that is a ring around a pond or a verge, and is cut (:func:`_drop_outer_strips`); regions narrower than
  ``min_width_m`` (25 m) are dropped; shelterbelts and yards are textured (texture is std / mean: no units).
- *One field, many streaks*: aerial pixels show rows and patches a satellite pixel averages out; adjacent regions
  of one colour (mean log colours within ``merge_colour_max``) join across a line of middling strength
  (``merge_similar_edge_max``).

On reflectance (Sentinel-2, Landsat) these last three rules are off by default: the defaults there were chosen
without them and score as before. Crop-health classes follow the units the same way (``classes_by: auto``).

Tiles: steps 1-2 and the distance map of step 3 are local (up to 24 px, the long filter's reach; the map is capped
at 16 px), and the stitcher joins a field's fragments across core edges where the tiles agree
(``merge_min_agreement``). The neck split of step 3, the watershed, the merge, the split and the region rule see the
read window: the halo (``receptive_field``, 50 px by default) keeps their differences between tile sizes small;
tests state the tolerance, ``benchmarks/bench_field_tiles.py`` measures it on real scenes (the neck split is the
least local).
How the defaults were chosen and what they score: ``benchmarks/bench_fields.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage.segmentation import watershed

from geoseg.models.base import InstanceInfo, InstanceOutput, Model, ModelOutput, SceneInfo, TileContext
from geoseg.models.fields.edges import (
    FOUR_CONNECTED,
    LineFilter,
    calm_seeds,
    edge_length_px,
    line_strength,
    log_bands,
    masked_smooth,
)
from geoseg.models.fields.split import SplitRule, split_mixed_cover
from geoseg.spec.job import FieldDelineatorSpec
from geoseg.spec.models import MAX_LONG_EDGE_LENGTH_PX

_TEXTURE_SIZE = 3
DEFAULT_LONG_EDGE_M = 80.0
"""The long line filter's sigma along where ``long_edge_length_m`` is not set (pixels up to 20 m)."""
MIN_NECK_DEPTH_PX = 1.5
"""Necks shallower than this many pixels are not split: on 30 m pixels the distance map climbs in steps of a
pixel or less (1, 1.41, 2, ...), and 20 m (0.7 px) would split a field at every notch of its outline."""


class FieldDelineator(Model):
    """Fields as regions of smooth, bright, non-water land between lanes and edges; one instance each."""

    kind = "instance"

    def __init__(self, spec: FieldDelineatorSpec, pixel_size_m: float = 10.0, scene: SceneInfo | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        self.block = working_block(spec.working_pixel_m, pixel_size_m)
        pixel_size_m *= self.block  # every size below is in working pixels
        self.pixel_size_m = pixel_size_m
        self.levels = scene_levels(spec, scene)
        similar = spec.merge_similar_edge_max if not self.levels.reflectance else 0.0
        grow_m = spec.grow_max_m if spec.grow_max_m is not None else (0.0 if self.levels.reflectance else DN_GROW_MAX_M)
        self.grow_max_px = grow_m / pixel_size_m
        width_m = spec.min_width_m
        self.min_width_m = width_m if width_m is not None else (0.0 if self.levels.reflectance else DN_MIN_WIDTH_M)
        self.merge_rule = MergeRule(spec.merge_edge_max, spec.merge_quantile, similar, spec.merge_colour_max)
        erode = spec.seed_erode_px
        self.seed_erode_px = (1 if pixel_size_m <= 20 else 0) if erode is None else erode
        self.min_seed_px = max(1, round(spec.min_seed_m2 / pixel_size_m**2))
        self.neck_depth_px = max(spec.neck_depth_m / pixel_size_m, MIN_NECK_DEPTH_PX) if spec.neck_depth_m else 0.0
        self.line_filter = _line_filter(spec, pixel_size_m)
        self.merge_min_agreement = spec.merge_min_agreement
        ramp_px = spec.split_ramp_m / pixel_size_m
        self.split_rule = SplitRule(spec.split_ndvi_step, spec.split_bimodality, ramp_px, self.min_seed_px)
        self.bands = spec.bands

    def predict(self, pixels: np.ndarray, valid: np.ndarray, contexts: list[TileContext]) -> list[ModelOutput]:
        return [self.delineate(tile_pixels, tile_valid) for tile_pixels, tile_valid in zip(pixels, valid, strict=True)]

    def delineate(self, pixels: np.ndarray, valid: np.ndarray) -> InstanceOutput:
        """Fields of one read window: ``pixels`` (C, H, W) in ``self.bands`` order, ``valid`` (H, W); found on
        blocks of ``self.block`` pixels (the working resolution), returned at full resolution."""
        pixels = pixels.astype(np.float32, copy=False)
        if self.levels.gain != 1.0:
            pixels = pixels * np.float32(self.levels.gain)
        if self.block == 1:
            return self._delineate(pixels, valid)
        coarse, coarse_valid = block_mean(pixels, valid, self.block)
        found = self._delineate(coarse, coarse_valid)
        rows, cols = valid.shape
        labels = np.repeat(np.repeat(found.labels, self.block, 0), self.block, 1)[:rows, :cols]
        return InstanceOutput(np.where(valid, labels, 0).astype(np.int32), found.instances)

    def _delineate(self, pixels: np.ndarray, valid: np.ndarray) -> InstanceOutput:
        spec = self.spec
        strength = line_strength(pixels, valid, self.line_filter)
        sigma = spec.smoothing_sigma
        smooth = {name: masked_smooth(band, valid, sigma) for name, band in zip(self.bands, pixels, strict=True)}
        texture = _local_variation(pixels[self.bands.index("nir")], valid, _TEXTURE_SIZE)
        fieldlike = self._fieldlike(smooth, texture) & valid
        calm = fieldlike & (strength < spec.edge_threshold)
        seeds = calm_seeds(calm, self.seed_erode_px, self.neck_depth_px, self.min_seed_px, strength)
        labels = watershed(strength, seeds, mask=fieldlike).astype(np.int32)
        if self.grow_max_px:
            labels = _drop_outer_strips(labels, seeds, self.grow_max_px)
        if spec.merge_edge_max > 0:
            colours = None if self.levels.reflectance else log_bands(np.stack(list(smooth.values())), valid)
            labels = _merge_weak_boundaries(labels, strength, self.merge_rule, colours)
        if spec.split_ndvi_step > 0:
            ndvi = _normalized_difference(smooth["nir"], smooth["red"])
            labels = split_mixed_cover(labels, ndvi, self.split_rule)
        labels = self._region_rules(labels, texture)
        labels, count = _relabel(labels)
        return InstanceOutput(labels, [InstanceInfo(label=i, score=1.0) for i in range(1, count + 1)])

    def _fieldlike(self, smooth: dict[str, np.ndarray], texture: np.ndarray) -> np.ndarray:
        spec = self.spec
        green, red, nir = smooth["green"], smooth["red"], smooth["nir"]
        ndwi = _normalized_difference(green, nir)
        if self.levels.reflectance:
            ndvi = _normalized_difference(nir, red)
            mask = (ndwi <= spec.water_ndwi) & (ndvi >= spec.bare_ndvi_min) & (texture <= spec.texture_max)
        else:  # uncalibrated bands: NDVI of bare soil and NDWI of land shift; water stays dark in NIR
            water = (ndwi > spec.water_ndwi) & (nir < self.levels.water_nir_max)
            mask = ~water & (texture <= spec.texture_max)
        if "swir16" in smooth:
            swir = smooth["swir16"]
            dry = (swir >= spec.dry_swir_min) & (_normalized_difference(nir, swir) <= spec.dry_ndmi_max)
            dark_ok = (swir >= spec.swir_min) | dry
        else:
            dark_ok = (green + red) / 2 >= spec.visible_min
        return mask & (dark_ok | (nir >= spec.green_nir_min))

    def _region_rules(self, labels: np.ndarray, texture: np.ndarray) -> np.ndarray:
        """Drop textured regions (orchards, gardens, yards) and narrow ones (roads, verges, rings around ponds)."""
        n = int(labels.max()) + 1
        counts = np.bincount(labels.ravel(), minlength=n)
        mean_texture = np.bincount(labels.ravel(), weights=texture.ravel(), minlength=n) / np.maximum(counts, 1)
        drop = mean_texture > self.spec.region_texture_max
        if self.min_width_m > 0:
            width_m = 2 * counts / np.maximum(_outline_steps(labels, n), 1) * self.pixel_size_m
            drop |= width_m < self.min_width_m
        drop[0] = True
        return np.where(drop[labels], 0, labels)


@dataclass(frozen=True)
class SceneLevels:
    """How the delineator reads levels: reflectance as is, or digital numbers times ``gain`` (scene-relative)."""

    reflectance: bool = True
    gain: float = 1.0
    """Factor on digital numbers: the scene's bright end (99th percentile) becomes :data:`DN_BRIGHT_LEVEL`."""
    water_nir_max: float = 0.0
    """On digital numbers: water is darker in NIR than this (after ``gain``)."""


DN_BRIGHT_LEVEL = 0.4
"""Digital numbers are scaled so that the scene's 99th percentile (over green, red, NIR) reads as this: the
reflectance of bright soil or a lush crop in NIR, so that the log offset of the line filter and the visible and
NIR floors weigh as they do on reflectance."""


DN_GROW_MAX_M = 20.0
"""``grow_max_m`` on digital numbers (where it is not set)."""
DN_MIN_WIDTH_M = 25.0
"""``min_width_m`` on digital numbers (where it is not set)."""


def scene_levels(spec: FieldDelineatorSpec, scene: SceneInfo | None) -> SceneLevels:
    """Reflectance levels, or a scene-relative scale of digital numbers from the scene's band percentiles."""
    if scene is None or scene.reflectance:
        return SceneLevels()
    missing = [band for band in spec.bands if band not in scene.percentiles]
    if missing:
        raise ValueError(f"digital-number inputs need the scene percentiles of {missing}")
    bright = float(np.mean([scene.percentiles[band][99] for band in ("green", "red", "nir")]))
    gain = DN_BRIGHT_LEVEL / max(bright, 1e-6)
    return SceneLevels(False, gain, spec.water_nir_share * float(scene.percentiles["nir"][50]) * gain)


def working_block(working_pixel_m: float, pixel_size_m: float) -> int:
    """Pixels per side of a working block: the most whole pixels within ``working_pixel_m`` (1: no blocks)."""
    if working_pixel_m <= 0:
        return 1
    return max(1, math.floor(working_pixel_m / pixel_size_m + 1e-6))


def block_mean(pixels: np.ndarray, valid: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """(C, H, W) bands averaged over the valid pixels of ``block`` x ``block`` blocks (edges padded); a block is
    valid when half its pixels are."""
    channels, rows, cols = pixels.shape
    pad = ((0, 0), (0, -rows % block), (0, -cols % block))
    weight = np.pad(valid, pad[1:]).astype(np.float32)
    values = np.pad(np.where(valid, pixels, 0), pad)
    shape = (weight.shape[0] // block, block, weight.shape[1] // block, block)
    counts = weight.reshape(shape).sum((1, 3))
    sums = values.reshape((channels, *shape)).sum((2, 4))
    return (sums / np.maximum(counts, 1)).astype(np.float32), counts >= block * block / 2


def _outline_steps(labels: np.ndarray, n: int) -> np.ndarray:
    """Per label, the number of 4-neighbour steps from it to another label (or off the window's edge)."""
    padded = np.pad(labels, 1)
    steps = np.zeros(n, np.int64)
    for a, b in ((padded[:, :-1], padded[:, 1:]), (padded[:-1], padded[1:])):
        change = a != b
        steps += np.bincount(a[change], minlength=n)[:n] + np.bincount(b[change], minlength=n)[:n]
    return steps


def _line_filter(spec: FieldDelineatorSpec, pixel_size_m: float) -> LineFilter:
    """The line filter at this pixel size; the long one (by default 80 m up to 20 m pixels) where it is on."""
    width = spec.edge_width_px
    long_m = spec.long_edge_length_m
    if long_m is None:
        long_m = DEFAULT_LONG_EDGE_M if pixel_size_m <= 20 else 0.0
    long_px = edge_length_px(long_m, width, pixel_size_m, MAX_LONG_EDGE_LENGTH_PX) if long_m else 0.0
    return LineFilter(width, edge_length_px(spec.edge_length_m, width, pixel_size_m), long_px, spec.long_edge_gain)


@dataclass(frozen=True)
class MergeRule:
    """When two adjacent regions are one field: their boundary's ``quantile`` line strength is below ``edge_max``,
    or below ``similar_edge_max`` while their mean log colours differ by less than ``colour_max`` (RMS over bands)."""

    edge_max: float
    quantile: float
    similar_edge_max: float = 0.0
    colour_max: float = 0.0


def _merge_weak_boundaries(
    labels: np.ndarray, strength: np.ndarray, rule: MergeRule, colours: np.ndarray | None = None
) -> np.ndarray:
    """Join adjacent regions whose shared boundary is weak (:class:`MergeRule`; the strength across each
    4-neighbour step is the larger of its two pixels). A lane or hedge between two fields is strong along its whole
    length; a boundary through a streaky field passes calm stretches, and the field's parts share one colour."""
    n = int(labels.max()) + 1
    pairs, values = [], []
    for a, b, sa, sb in ((labels[:, :-1], labels[:, 1:], strength[:, :-1], strength[:, 1:]),
                         (labels[:-1], labels[1:], strength[:-1], strength[1:])):  # fmt: skip
        step = (a != b) & (a > 0) & (b > 0)
        pairs.append(np.minimum(a[step], b[step]).astype(np.int64) * n + np.maximum(a[step], b[step]))
        values.append(np.maximum(sa[step], sb[step]))
    keys, vals = np.concatenate(pairs), np.concatenate(values)
    if keys.size == 0:
        return labels
    order = np.lexsort((vals, keys))
    keys, vals = keys[order], vals[order]
    unique, start, count = np.unique(keys, return_index=True, return_counts=True)
    level = vals[start + np.floor(rule.quantile * (count - 1)).astype(np.int64)]
    weak = level < rule.edge_max
    if colours is not None and rule.similar_edge_max > 0:
        means = _region_means(labels, colours, n)
        distance = np.sqrt(np.mean((means[:, unique // n] - means[:, unique % n]) ** 2, axis=0))
        weak |= (level < rule.similar_edge_max) & (distance < rule.colour_max)
    weak_keys = unique[weak]
    graph = coo_matrix((np.ones(len(weak_keys)), (weak_keys // n, weak_keys % n)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    root = np.full(n, n, np.int64)
    np.minimum.at(root, component, np.arange(n))  # each component's smallest label stands for it
    return root[component][labels].astype(np.int32)


def _region_means(labels: np.ndarray, bands: np.ndarray, n: int) -> np.ndarray:
    """(C, n) mean of each band over each label's pixels."""
    counts = np.maximum(np.bincount(labels.ravel(), minlength=n), 1)
    return np.stack([np.bincount(labels.ravel(), weights=band.ravel(), minlength=n) / counts for band in bands])


def _drop_outer_strips(labels: np.ndarray, seeds: np.ndarray, grow_max_px: float) -> np.ndarray:
    """Regions without the parts that lie more than ``grow_max_px`` from every seed, touch land that is not a
    field and are strips (narrower than twice that, twice their area over their outline): a strip wider than a
    lane between a field's calm core and a pond is a wet-grass or cattail ring, along a road a verge. Parts
    enclosed by the field (a pale patch, a wet spot) and broad rough parts (a streaky crop) stay."""
    far = (labels > 0) & (ndimage.distance_transform_edt(seeds == 0) > grow_max_px)
    parts, count = ndimage.label(far, FOUR_CONNECTED)
    if count == 0:
        return labels
    outside = ndimage.binary_dilation(labels == 0, FOUR_CONNECTED)
    drop = np.zeros(count + 1, bool)
    drop[np.unique(parts[outside & far])] = True
    width = 2 * np.bincount(parts.ravel(), minlength=count + 1) / np.maximum(_outline_steps(parts, count + 1), 1)
    drop &= width < 2 * grow_max_px  # a strip, not a broad rough part of a field
    drop[0] = False
    return np.where(drop[parts], 0, labels)


def _local_variation(band: np.ndarray, valid: np.ndarray, size: int) -> np.ndarray:
    """Coefficient of variation (std / mean) over the valid pixels of a size x size window: texture that does not
    grow with brightness, so bright green crops read as smooth as bare soil; masked pixels (clouds, nodata, read
    as 0) are not texture, so a field beside a cloud stays field-like."""
    weight = ndimage.uniform_filter(valid.astype(np.float32), size)
    values = np.where(valid, band, 0).astype(np.float32)
    mean = ndimage.uniform_filter(values, size) / np.maximum(weight, 1e-6)
    square = ndimage.uniform_filter(values * values, size) / np.maximum(weight, 1e-6)
    std = np.sqrt(np.maximum(square - mean * mean, 0))
    return np.where(weight > 1e-6, std / np.maximum(mean, 0.01), 0).astype(np.float32)


def _normalized_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a - b) / np.maximum(a + b, 1e-6)


def _relabel(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Consecutive labels 1..count (0 stays background)."""
    present = np.unique(labels)
    present = present[present > 0]
    lut = np.zeros(int(labels.max()) + 1, np.int32)
    lut[present] = np.arange(1, len(present) + 1, dtype=np.int32)
    return lut[labels], len(present)


def build_field_delineator(spec: FieldDelineatorSpec, scene: SceneInfo, device: str) -> FieldDelineator:
    """Builder used by the model registry."""
    return FieldDelineator(spec, pixel_size_m=math.sqrt(scene.pixel_area_m2), scene=scene)
