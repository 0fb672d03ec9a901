-- smt-tools tile catalog, version 8: why a tile was excluded, per run (docs/algorithms.md §5).
-- Three nullable columns of tile_result (every partition gets them), added at the end of
-- tile_result_map so existing run views keep their columns. Runs recorded before this
-- version read NULL in them. Forward-only; applied by `pytorch-smt-tools catalog init` after 0007.

ALTER TABLE tile_result
    ADD COLUMN exclusion_reason text,
    ADD COLUMN has_low_entropy boolean,
    ADD COLUMN has_high_nodata boolean;

COMMENT ON COLUMN tile_result.exclusion_reason IS 'Why the tile was excluded: the codes of every exclusion rule it matched, ";"-joined, most important first (no_valid_pixel, high_nodata, border_nodata, black_border, low_entropy); empty for an included tile; NULL when the command does not record it (docs/algorithms.md §5).';
COMMENT ON COLUMN tile_result.has_low_entropy IS 'class_entropy < exclusion.min_entropy (false when min_entropy is not set) (docs/algorithms.md §5).';
COMMENT ON COLUMN tile_result.has_high_nodata IS 'nodata_ratio > exclusion.max_nodata_ratio (docs/algorithms.md §5).';

-- the view of 0007 with the three columns at the end (CREATE OR REPLACE may only append)
CREATE OR REPLACE VIEW tile_result_map AS
SELECT
    tr.run_id,
    r.command,
    tr.tile_id,
    t.source_image_id,
    s.group_id,
    s.image_path,
    t.row_off,
    t.col_off,
    t.height,
    t.width,
    t.valid_pixels,
    t.nodata_ratio,
    t.class_entropy,
    t.has_mask_border_nodata,
    t.has_image_black_border,
    tr.sampler_weight,
    tr.freq_cluster_id,
    tr.uniqueness_score,
    tr.excluded,
    tr.coreset_score,
    tr.coreset_selected,
    tr.fold,
    t.footprint,
    tr.buffer_excluded_folds,
    tr.exclusion_reason,
    tr.has_low_entropy,
    tr.has_high_nodata
FROM tile_result tr
JOIN tile t ON t.id = tr.tile_id
JOIN run r ON r.id = tr.run_id
JOIN source_image s ON s.id = t.source_image_id;

COMMENT ON COLUMN tile_result_map.exclusion_reason IS 'Why the tile was excluded (tile_result.exclusion_reason; empty when included).';
COMMENT ON COLUMN tile_result_map.has_low_entropy IS 'Low class entropy (tile_result.has_low_entropy).';
COMMENT ON COLUMN tile_result_map.has_high_nodata IS 'High nodata share (tile_result.has_high_nodata).';
