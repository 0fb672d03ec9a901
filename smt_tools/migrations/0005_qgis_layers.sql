-- smt-tools tile catalog, version 5: runs that open styled in QGIS.
-- Every run recorded from this version on gets a view run_<id>_<kind> (one row per tile of the
-- run, first column tile_id: the single unique key QGIS's browser picks) and its default QGIS
-- style in layer_styles, so adding the view in QGIS needs no key and no style typed.
-- Forward-only; applied by `pytorch-smt-tools catalog init` after 0004.

-- QGIS's own style table, with the layout QGIS 3.22 creates (QgsPostgresProviderMetadata::
-- saveStyle); QGIS reads the default style of a layer from it when the layer is added.
CREATE TABLE IF NOT EXISTS layer_styles (
    id                 serial PRIMARY KEY,
    f_table_catalog    varchar,
    f_table_schema     varchar,
    f_table_name       varchar,
    f_geometry_column  varchar,
    stylename          text,
    styleqml           xml,
    stylesld           xml,
    useasdefault       boolean,
    description        text,
    owner              varchar(63) DEFAULT CURRENT_USER,
    ui                 xml,
    update_time        timestamp DEFAULT CURRENT_TIMESTAMP,
    type               varchar
);
-- a table made by an older QGIS lacks the geometry type column QGIS 3.22 adds the same way
ALTER TABLE layer_styles ADD COLUMN IF NOT EXISTS type varchar;
COMMENT ON TABLE layer_styles IS 'QGIS layer styles (the table QGIS itself creates and reads): smt-tools stores the default style of each run view (run.map_view) here.';

ALTER TABLE tile_result ADD COLUMN buffer_excluded_folds text;
COMMENT ON COLUMN tile_result.buffer_excluded_folds IS 'split: ";"-separated folds (-1 = holdout test) whose training set must not use this tile because it lies within buffer_m of a tile evaluated there; empty when none.';

ALTER TABLE run ADD COLUMN map_view text;
COMMENT ON COLUMN run.map_view IS 'View with this run''s tiles on a map (run_<id>_<kind>; key tile_id; default QGIS style in layer_styles); NULL for runs recorded before catalog version 5.';

-- same columns as before, buffer_excluded_folds added at the end
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
    tr.buffer_excluded_folds
FROM tile_result tr
JOIN tile t ON t.id = tr.tile_id
JOIN run r ON r.id = tr.run_id
JOIN source_image s ON s.id = t.source_image_id;

COMMENT ON VIEW tile_result_map IS 'Run results joined to tile footprints, all runs (key: run_id, tile_id). For one run on a map open its view run.map_view (run_<id>_<kind>): key and style come with it.';
COMMENT ON COLUMN tile_result_map.buffer_excluded_folds IS 'split: folds whose training set drops this tile (buffer); empty when none.';

-- deleting a run removes its view and its styles
CREATE FUNCTION smt_drop_run_view() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.map_view IS NOT NULL THEN
        EXECUTE 'DROP VIEW IF EXISTS ' || quote_ident(OLD.map_view);
        DELETE FROM layer_styles
        WHERE f_table_catalog = current_database()
          AND f_table_schema = current_schema()
          AND f_table_name = OLD.map_view;
    END IF;
    RETURN OLD;
END
$$;
COMMENT ON FUNCTION smt_drop_run_view() IS 'Trigger: drop the view and QGIS styles of a deleted run.';
CREATE TRIGGER run_drop_view AFTER DELETE ON run FOR EACH ROW EXECUTE FUNCTION smt_drop_run_view();
