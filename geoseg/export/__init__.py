"""7. Export: stitched objects to polygons and layers, the GeoPackage, mask COGs, fiboa, the quicklook."""
