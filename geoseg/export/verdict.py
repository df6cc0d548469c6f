"""A verdict per field from its merged crop-health statistics: healthy / watch / stressed / bare / not_observed.

The rules (thresholds in the crop-health model's ``verdict:``, :class:`geoseg.spec.job.VerdictRules`), first match wins:

1. ``not_observed`` — the image could not see the field: ``share_masked >= max_masked`` (its own pixels masked by
   clouds or nodata), or ``share_edge_masked >= max_edge_masked`` (that share of its outline borders masked
   pixels, so it may run on under a cloud), or none of its pixels was observed;
2. ``bare`` — ``share_non_vegetation >= bare``;
3. ``stressed`` — ``share_stressed >= stressed``;
4. ``watch`` — ``share_stressed + share_moderate >= watch``;
5. ``healthy`` otherwise.

Class shares are over the field's observed pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from geoseg.spec.job import VerdictRules
from geoseg.stitch.stitcher import StitchedObject

Verdict = Literal["healthy", "watch", "stressed", "bare", "not_observed"]
VERDICTS: tuple[Verdict, ...] = ("healthy", "watch", "stressed", "bare", "not_observed")
VERDICT_COLORS: dict[Verdict, tuple[int, int, int, int]] = {
    "healthy": (26, 152, 80, 255),
    "watch": (254, 224, 80, 255),
    "stressed": (215, 48, 39, 255),
    "bare": (166, 110, 60, 255),
    "not_observed": (70, 70, 70, 255),
}
"""Outline colours of the verdicts (QGIS style and quicklook)."""


@dataclass(frozen=True)
class FieldObservation:
    """How much of a field the image saw, and its health-class shares over what it saw."""

    share_masked: float
    share_edge_masked: float
    shares: dict[str, float]
    """Class name -> share of observed pixels (empty when nothing was observed)."""


def observe(obj: StitchedObject, class_names: dict[int, str]) -> FieldObservation:
    """A stitched object's observation summary (class counts indexed by class value, 0 = not observed)."""
    counts = obj.class_counts if obj.class_counts is not None else np.zeros(1, np.int64)
    observed = int(counts[1:].sum())
    shares = {name: float(counts[value]) / observed for value, name in class_names.items()} if observed else {}
    return FieldObservation(
        share_masked=obj.masked_pixels / obj.pixels if obj.pixels else 1.0,
        share_edge_masked=obj.edge_sides_masked / obj.edge_sides if obj.edge_sides else 0.0,
        shares=shares,
    )


def verdict(seen: FieldObservation, rules: VerdictRules) -> Verdict:
    """The first rule that holds (module docstring)."""
    if not seen.shares or seen.share_masked >= rules.max_masked or seen.share_edge_masked >= rules.max_edge_masked:
        return "not_observed"
    if seen.shares.get("non_vegetation", 0.0) >= rules.bare:
        return "bare"
    stressed = seen.shares.get("stressed", 0.0)
    if stressed >= rules.stressed:
        return "stressed"
    if stressed + seen.shares.get("moderate", 0.0) >= rules.watch:
        return "watch"
    return "healthy"


def verdict_columns(
    objects: Sequence[StitchedObject], class_names: dict[int, str], rules: VerdictRules
) -> dict[str, list]:
    """Columns ``share_masked``, ``share_edge_masked`` and ``verdict`` for a layer's objects."""
    seen = [observe(o, class_names) for o in objects]
    return {
        "share_masked": [round(s.share_masked, 4) for s in seen],
        "share_edge_masked": [round(s.share_edge_masked, 4) for s in seen],
        "verdict": [verdict(s, rules) for s in seen],
    }
