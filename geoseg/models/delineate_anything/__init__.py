"""Delineate Anything: the published YOLO instance-segmentation field models (``type: delineate_anything``)."""
