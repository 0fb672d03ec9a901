-- smt-tools tile catalog, version 9: which step of a hybrid coreset selection picked a tile
-- (select-coreset with method: hybrid, docs/algorithms.md §10). One nullable column of
-- tile_result (every partition gets it), added at the end of tile_result_map so existing run
-- views keep their columns. Forward-only; applied by `pytorch-smt-tools catalog init` after 0008.

ALTER TABLE tile_result ADD COLUMN coreset_step text;

COMMENT ON COLUMN tile_result.coreset_step IS 'select-coreset with method: hybrid: the name of the step (coreset.hybrid.steps) that picked the tile, empty for a tile not selected; NULL for every other run (docs/algorithms.md §10).';

-- the view of 0008 with the column at the end (CREATE OR REPLACE may only append)
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
    tr.has_high_nodata,
    tr.coreset_step
FROM tile_result tr
JOIN tile t ON t.id = tr.tile_id
JOIN run r ON r.id = tr.run_id
JOIN source_image s ON s.id = t.source_image_id;

COMMENT ON COLUMN tile_result_map.coreset_step IS 'Hybrid coreset step that picked the tile (tile_result.coreset_step).';
