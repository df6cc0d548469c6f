"""Crop health from vegetation indices: formulas, classes, the torch and numpy models."""
