"""5. Stitching: what a tile owns, fragments across tile edges merged into whole objects, their statistics."""
