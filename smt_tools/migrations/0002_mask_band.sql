-- smt-tools tile catalog, version 2: the mask band read for class values, and the nodata rule.
-- Forward-only; applied by `pytorch-smt-tools catalog init` after 0001_catalog.sql.

ALTER TABLE source_image
    ADD COLUMN mask_band integer NOT NULL DEFAULT 1 CHECK (mask_band >= 1);

COMMENT ON COLUMN source_image.mask_band IS '1-based band of the mask file read for the class counts (catalog ingest --mask-band; 1 for one-band masks). Part of the incremental fingerprint: another band re-scans the source.';
COMMENT ON COLUMN source_image.nodata_class IS 'Mask value treated as nodata at ingest (excluded from class_counts); NULL when none, the default: every mask value is a class. Pixels outside the raster (--edge pad) are always nodata.';
