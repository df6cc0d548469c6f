"""*Map fields* (raster layers -> a field job -> styled layers) and *Run job spec* (a YAML file -> its outputs)."""

from __future__ import annotations

import os
import re
import tempfile
from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingOutputMultipleLayers,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsRasterLayer,
)

from .base import GeosegAlgorithm
from .fieldjob import FieldJob, FieldJobError, RasterInput, choose_bands, spec_yaml


def _resume_overwrite(algorithm: GeosegAlgorithm) -> None:
    algorithm.addParameter(QgsProcessingParameterBoolean("OVERWRITE", "Overwrite existing outputs", defaultValue=False))
    algorithm.addParameter(
        QgsProcessingParameterBoolean(
            "RESUME", "Resume: keep tiles finished by an earlier (canceled) run of the same job", defaultValue=False
        )
    )


def _flags(algorithm: GeosegAlgorithm, parameters: dict[str, Any], context: QgsProcessingContext) -> list[str]:
    flags = []
    if algorithm.parameterAsBoolean(parameters, "OVERWRITE", context):
        flags.append("--overwrite")
    if algorithm.parameterAsBoolean(parameters, "RESUME", context):
        flags.append("--resume")
    return flags


def _raster_input(layer: QgsRasterLayer) -> RasterInput:
    """The layer's file and band descriptions (GDAL's, as geoseg will read them)."""
    from osgeo import gdal

    path = layer.dataProvider().dataSourceUri().split("|")[0]
    dataset = gdal.OpenEx(path, gdal.OF_RASTER)
    if dataset is None or layer.providerType() != "gdal":
        raise QgsProcessingException(f"layer {layer.name()!r} is not a raster file that GDAL opens ({path})")
    descriptions = tuple(dataset.GetRasterBand(i).GetDescription() for i in range(1, dataset.RasterCount + 1))
    is_float = gdal.GetDataTypeName(dataset.GetRasterBand(1).DataType).startswith("Float")
    return RasterInput(path, layer.name(), descriptions, is_float)


class MapFields(GeosegAlgorithm):
    """Field boundaries and crop health from raster layers: writes a field job spec, runs it, loads its layers."""

    def name(self) -> str:
        return "mapfields"

    def displayName(self) -> str:
        return "Map fields"

    def shortHelpString(self) -> str:
        return (
            "Field boundaries (field delineator) and crop health (NDVI, plus NDRE with red edge and NDMI with SWIR) "
            "from one multi-band raster layer or one layer per band. Bands are recognised by their descriptions "
            "(or a one-band layer's name: B04, red, SR_B4, ...); otherwise list the roles, one per band in layer "
            "order: blue, green, red, nir, rededge, swir16, or - to skip a band. green, red and nir are required. "
            "The job spec is written to a temporary folder and run by the geoseg command set in the Processing "
            "options; Cancel stops it cleanly and Resume later redoes only the missing tiles."
        )

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        self.addParameter(
            QgsProcessingParameterMultipleLayers(
                "INPUT", "Raster layers (one multi-band layer, or one layer per band)", QgsProcessing.TypeRaster
            )
        )
        self.addParameter(
            QgsProcessingParameterString(
                "BAND_ROLES", "Band roles, one per band in layer order (empty: from band descriptions)", optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                "AOI", "Area of interest", [QgsProcessing.TypeVectorPolygon], optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterString(
                "DATETIME", "Acquisition date and time (e.g. 2024-06-01T10:30:00Z)", optional=True
            )
        )
        scale = QgsProcessingParameterNumber(
            "SCALE",
            "Reflectance scale (empty: 0.0001 for integer rasters, 1 for float)",
            QgsProcessingParameterNumber.Double,
            optional=True,
        )
        nodata = QgsProcessingParameterNumber(
            "NODATA", "Nodata value (empty: each file's own)", QgsProcessingParameterNumber.Double, optional=True
        )
        tile = QgsProcessingParameterNumber(
            "TILE_SIZE", "Tile size (px)", QgsProcessingParameterNumber.Integer, 512, minValue=64
        )
        for advanced in (scale, nodata, tile):
            advanced.setFlags(advanced.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(advanced)
        _resume_overwrite(self)
        self.addParameter(QgsProcessingParameterFileDestination("OUTPUT", "Fields", "GeoPackage (*.gpkg)"))
        self.addOutput(QgsProcessingOutputVectorLayer("FIELDS", "Fields", QgsProcessing.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputVectorLayer("CROP_HEALTH", "Crop health", QgsProcessing.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputVectorLayer("TILES", "Tiles", QgsProcessing.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputMultipleLayers("LAYERS", "All layers"))
        self.addOutput(QgsProcessingOutputFile("SPEC", "Job spec"))

    def processAlgorithm(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        layers = self.parameterAsLayerList(parameters, "INPUT", context)
        inputs = [_raster_input(layer) for layer in layers]
        try:
            bands = choose_bands(inputs, self.parameterAsString(parameters, "BAND_ROLES", context))
        except FieldJobError as err:
            raise QgsProcessingException(str(err)) from None
        feedback.pushInfo("bands: " + ", ".join(f"{b.role} = band {b.band} of {b.path}" for b in bands))
        folder = tempfile.mkdtemp(prefix="geoseg_qgis_")
        output = os.path.abspath(self.parameterAsFileOutput(parameters, "OUTPUT", context))
        job = FieldJob(
            name=re.sub(r"[^A-Za-z0-9_-]+", "-", os.path.splitext(os.path.basename(output))[0]) or "fields",
            output=output,
            scale=self._scale(parameters, context, inputs),
            nodata=self._optional_number(parameters, "NODATA", context),
            aoi=self._aoi(parameters, context, feedback),
            datetime=self.parameterAsString(parameters, "DATETIME", context).strip() or None,
            tile_size=self.parameterAsInt(parameters, "TILE_SIZE", context),
        )
        spec = os.path.join(folder, "map_fields.yaml")
        with open(spec, "w", encoding="utf-8") as file:
            file.write(spec_yaml(job, bands))
        feedback.pushInfo(f"job spec: {spec}")
        outcome = self.run_geoseg(["run", spec, "--progress", "lines", *_flags(self, parameters, context)], feedback)
        return {**self.load_layers(outcome, context, feedback), "SPEC": spec}

    def _optional_number(self, parameters: dict[str, Any], name: str, context: QgsProcessingContext) -> float | None:
        value = parameters.get(name)
        return None if value in (None, "") else self.parameterAsDouble(parameters, name, context)

    def _scale(self, parameters: dict[str, Any], context: QgsProcessingContext, inputs: list[RasterInput]) -> float:
        given = self._optional_number(parameters, "SCALE", context)
        if given is not None:
            return given
        return 1.0 if all(i.is_float for i in inputs) else 0.0001

    def _aoi(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> str | None:
        if not parameters.get("AOI"):
            return None
        path, layer = self.parameterAsCompatibleSourceLayerPathAndLayerName(
            parameters, "AOI", context, ["gpkg", "geojson", "shp"], "gpkg", feedback
        )
        if layer:  # a layer of a multi-layer file: copy it alone (geoseg reads one layer per file by default)
            path = self.parameterAsCompatibleSourceLayerPath(
                parameters, "AOI", context, ["geojson"], "geojson", feedback
            )
        return path


class RunJobSpec(GeosegAlgorithm):
    """Run any geoseg job spec (YAML) and load the layers of its GeoPackage."""

    def name(self) -> str:
        return "runjobspec"

    def displayName(self) -> str:
        return "Run job spec"

    def shortHelpString(self) -> str:
        return (
            "Runs a geoseg job spec (YAML, see geoseg's README) with the geoseg command set in the Processing "
            "options, on an embedded Ray (or the spec's cluster address), and loads the layers it writes with "
            "their stored styles. Cancel stops it cleanly; Resume later redoes only the missing tiles."
        )

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        self.addParameter(
            QgsProcessingParameterFile("SPEC", "Job spec (YAML)", extension="yaml", fileFilter="YAML (*.yaml *.yml)")
        )
        _resume_overwrite(self)
        self.addOutput(QgsProcessingOutputFile("OUTPUT", "GeoPackage"))
        self.addOutput(QgsProcessingOutputMultipleLayers("LAYERS", "Layers"))

    def processAlgorithm(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        spec = self.parameterAsFile(parameters, "SPEC", context)
        outcome = self.run_geoseg(["run", spec, "--progress", "lines", *_flags(self, parameters, context)], feedback)
        return self.load_layers(outcome, context, feedback)
