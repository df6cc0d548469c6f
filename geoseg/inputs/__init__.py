"""2. The inputs: the scene from many files on one grid, windowed reads, quality masks, STAC Items, the tiles."""
