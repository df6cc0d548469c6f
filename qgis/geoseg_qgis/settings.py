"""The provider's setting, read through the Processing plugin's ProcessingConfig when it is loaded."""

from __future__ import annotations

from typing import Any

EXECUTABLE_SETTING = "GEOSEG_EXECUTABLE"
"""Processing setting (Settings > Options > Processing > Providers > geoseg): the geoseg executable to run."""


def processing_config() -> tuple[Any, Any]:
    """``(ProcessingConfig, Setting)`` of the Processing plugin, or ``(None, None)`` where it is not loaded."""
    try:
        from processing.core.ProcessingConfig import ProcessingConfig, Setting
    except ImportError:  # the Processing plugin is off: the environment variable and PATH still work
        return None, None
    return ProcessingConfig, Setting


def executable_setting() -> str:
    """The geoseg executable set in the Processing options ('' where none is set)."""
    config, _ = processing_config()
    return str(config.getSetting(EXECUTABLE_SETTING) or "") if config else ""
