-- smt-tools tile catalog, version 3: rasters without a CRS (slide scans, photos) in pixel space.
-- Forward-only; applied by `pytorch-smt-tools catalog init` after 0002_mask_band.sql.
-- Such a raster has no lon/lat outline: its source_image and tile rows keep crs = '' and a NULL
-- footprint; the window (row_off, col_off, height, width) and source_image.transform still give
-- the tile's bounds in the raster's own pixel coordinates.

ALTER TABLE source_image ALTER COLUMN footprint DROP NOT NULL;
ALTER TABLE tile ALTER COLUMN footprint DROP NOT NULL;

COMMENT ON COLUMN source_image.crs IS 'Native CRS of image and mask: "EPSG:xxxx" when it has an EPSG code, else WKT; empty when the raster has no CRS (pixel space).';
COMMENT ON COLUMN source_image.footprint IS 'Outline of the whole raster in lon/lat (EPSG:4326), reprojected from the native CRS; NULL when the raster has no CRS (pixel space).';
COMMENT ON COLUMN tile.footprint IS 'Window outline in lon/lat (EPSG:4326), reprojected from the native CRS with densified edges; NULL when the source raster has no CRS (pixel space: see source_image.transform and the window).';
COMMENT ON COLUMN tile_result_map.footprint IS 'Tile outline in lon/lat (EPSG:4326); NULL for tiles of rasters without a CRS.';
