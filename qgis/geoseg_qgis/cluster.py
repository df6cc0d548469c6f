"""*Submit job to cluster* (spec -> job id) and *Cluster job status* (job id -> state and tiles done)."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFile,
    QgsProcessingParameterString,
)

from . import runner
from .base import GeosegAlgorithm

_ADDRESS_HELP = "Ray head's dashboard, e.g. http://HEAD:8265 (empty: $RAY_API_SERVER_ADDRESS / $RAY_ADDRESS)"


def _address_args(algorithm: GeosegAlgorithm, parameters: dict[str, Any], context: QgsProcessingContext) -> list[str]:
    address = algorithm.parameterAsString(parameters, "ADDRESS", context).strip()
    return ["--address", address] if address else []


class SubmitJob(GeosegAlgorithm):
    """``geoseg submit``: a job spec to a Ray cluster; returns the job id."""

    def name(self) -> str:
        return "submitjob"

    def displayName(self) -> str:
        return "Submit job to cluster"

    def shortHelpString(self) -> str:
        return (
            "Submits a job spec to a Ray cluster (Ray Jobs API, the head's dashboard address). Every path in the "
            "spec must be absolute or a URI, the same on every node. Returns the job id for Cluster job status."
        )

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        self.addParameter(
            QgsProcessingParameterFile("SPEC", "Job spec (YAML)", extension="yaml", fileFilter="YAML (*.yaml *.yml)")
        )
        self.addParameter(QgsProcessingParameterString("ADDRESS", _ADDRESS_HELP, optional=True))
        self.addParameter(QgsProcessingParameterBoolean("OVERWRITE", "Overwrite existing outputs", False))
        self.addParameter(QgsProcessingParameterBoolean("RESUME", "Resume from finished tiles", False))
        self.addOutput(QgsProcessingOutputString("JOB_ID", "Job id"))

    def processAlgorithm(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        args = ["submit", self.parameterAsFile(parameters, "SPEC", context), *_address_args(self, parameters, context)]
        args += [
            f
            for f, key in (("--overwrite", "OVERWRITE"), ("--resume", "RESUME"))
            if self.parameterAsBoolean(parameters, key, context)
        ]
        outcome = self.run_geoseg(args, feedback)
        ids = [line.strip() for line in outcome.stdout if line.strip()]
        if not ids:
            raise QgsProcessingException("geoseg submit printed no job id")
        feedback.pushInfo(f"submitted: {ids[-1]}")
        return {"JOB_ID": ids[-1]}


class JobStatus(GeosegAlgorithm):
    """``geoseg status``: a cluster job's state and tiles done / total."""

    def name(self) -> str:
        return "jobstatus"

    def displayName(self) -> str:
        return "Cluster job status"

    def shortHelpString(self) -> str:
        return "The state of a submitted job (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED) and its tiles done."

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        self.addParameter(QgsProcessingParameterString("JOB_ID", "Job id (from Submit job to cluster)"))
        self.addParameter(QgsProcessingParameterString("ADDRESS", _ADDRESS_HELP, optional=True))
        self.addOutput(QgsProcessingOutputString("STATE", "State"))
        self.addOutput(QgsProcessingOutputNumber("TILES_DONE", "Tiles done"))
        self.addOutput(QgsProcessingOutputNumber("TILES_TOTAL", "Tiles in all"))
        self.addOutput(QgsProcessingOutputNumber("TILES_FAILED", "Tiles failed"))
        self.addOutput(QgsProcessingOutputString("SUMMARY", "Summary"))

    def processAlgorithm(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        job_id = self.parameterAsString(parameters, "JOB_ID", context).strip()
        executable = self.geoseg(feedback)
        args = ["status", job_id, *_address_args(self, parameters, context)]
        outcome = runner.run(executable, args, lambda stream, line: None, lambda: False)
        status = runner.parse_status(outcome.stdout)
        if status is None:  # exit 1 with a summary is a FAILED or STOPPED job, not an error
            raise QgsProcessingException(outcome.error())
        feedback.pushInfo(str(status["SUMMARY"]))
        done, total = int(status["TILES_DONE"]), int(status["TILES_TOTAL"])
        if total:
            feedback.setProgress(100.0 * done / total)
        return status
