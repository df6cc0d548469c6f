"""Helpers for geoseg's tests, shipped with the package so downstream code can test against the same fixtures."""
