"""Fields of The World (FTW): the published field-boundary U-Nets as a geoseg model type (``type: ftw``)."""
