"""4. The plan: which tiles run, what the models need, every output path; the inputs checked once, up front."""

from geoseg.plan.job import JobPlan, describe, plan_job

__all__ = ["JobPlan", "describe", "plan_job"]
