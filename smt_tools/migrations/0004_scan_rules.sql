-- smt-tools tile catalog, version 4: the version of the per-tile statistics rules, and the
-- column comments of the flags whose rules changed in it.
-- Forward-only; applied by `pytorch-smt-tools catalog init` after 0003.

-- Sources already catalogued were scanned under rules 1; the next ingest re-scans them.
ALTER TABLE source_image
    ADD COLUMN scan_rules integer NOT NULL DEFAULT 1 CHECK (scan_rules >= 1);

COMMENT ON COLUMN source_image.scan_rules IS 'Version of the per-tile statistics rules the tiles of this source were computed with (docs/algorithms.md). Part of the incremental fingerprint: a source scanned under older rules is re-scanned by the next ingest. 1: nodata class 0 by default, any black ring pixel, padded windows flagged; 2: no nodata class by default, black runs along an edge, padding never a border.';
COMMENT ON COLUMN tile.has_mask_border_nodata IS 'Some pixel of the 1-pixel outer ring of the mask window, inside the raster, holds the nodata class (the part of a padded window outside the raster never sets it).';
COMMENT ON COLUMN tile.has_image_black_border IS 'An edge of the image window carries a run of at least max(8, ceil(0.02 x edge length)) consecutive black pixels (every band <= black_tolerance, or equal to the image nodata value); pixels outside the raster never count.';
COMMENT ON COLUMN tile.nodata_ratio IS '(Nodata-class pixels + pixels of the window outside the raster) / window pixels.';
