"""The field delineator (no weights): line strength, calm seeds, regions, the field rule, splits."""
