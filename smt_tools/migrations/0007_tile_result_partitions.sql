-- smt-tools tile catalog, version 7: tile_result LIST-partitioned by run_id (catalogs of 10M tiles).
-- Each run's rows live in their own partition tile_result_run_<id>: recording a run builds it
-- (COPY, then ATTACH PARTITION: indexes built once, foreign keys checked in one query) and
-- `catalog runs delete` drops it, in seconds at millions of rows. Rows inserted with plain SQL
-- for a run that has no partition land in tile_result_default.
-- Queries, the FKs (ON DELETE CASCADE to run and tile), tile_result_map and the run views see
-- the same rows as before. Forward-only; applied by `pytorch-smt-tools catalog init` after 0006.

ALTER TABLE tile_result RENAME TO tile_result_0006;
ALTER TABLE tile_result_0006 RENAME CONSTRAINT tile_result_pkey TO tile_result_0006_pkey;
ALTER INDEX tile_result_tile_idx RENAME TO tile_result_0006_tile_idx;
ALTER TABLE tile_result_0006 RENAME CONSTRAINT tile_result_run_id_fkey TO tile_result_0006_run_id_fkey;
ALTER TABLE tile_result_0006 RENAME CONSTRAINT tile_result_tile_id_fkey TO tile_result_0006_tile_id_fkey;

-- the columns of version 6, in the same order
CREATE TABLE tile_result (
    run_id                 bigint NOT NULL
        CONSTRAINT tile_result_run_id_fkey REFERENCES run (id) ON DELETE CASCADE,
    tile_id                bigint NOT NULL
        CONSTRAINT tile_result_tile_id_fkey REFERENCES tile (id) ON DELETE CASCADE,
    sampler_weight         double precision,
    freq_cluster_id        integer,
    uniqueness_score       double precision,
    excluded               boolean,
    coreset_score          double precision,
    coreset_selected       boolean,
    fold                   integer,
    buffer_excluded_folds  text,
    PRIMARY KEY (run_id, tile_id)
) PARTITION BY LIST (run_id);
CREATE INDEX tile_result_tile_idx ON tile_result (tile_id);
CREATE TABLE tile_result_default PARTITION OF tile_result DEFAULT;

-- one partition per existing run, with its rows; the column comments carried over
DO $$
DECLARE
    r bigint;
    part text;
    c record;
    cols text := 'run_id, tile_id, sampler_weight, freq_cluster_id, uniqueness_score, excluded, '
        'coreset_score, coreset_selected, fold, buffer_excluded_folds';
BEGIN
    FOR r IN SELECT id FROM run ORDER BY id LOOP
        part := quote_ident('tile_result_run_' || r);
        EXECUTE 'CREATE TABLE ' || part || ' (LIKE tile_result INCLUDING DEFAULTS)';
        EXECUTE 'INSERT INTO ' || part || ' (' || cols || ') SELECT ' || cols
            || ' FROM tile_result_0006 WHERE run_id = ' || r;
        EXECUTE 'ALTER TABLE tile_result ATTACH PARTITION ' || part || ' FOR VALUES IN (' || r || ')';
        EXECUTE 'COMMENT ON TABLE ' || part || ' IS '
            || quote_literal('Rows of run ' || r || ' (dropped with it).');
    END LOOP;
    FOR c IN
        SELECT a.attname, col_description(a.attrelid, a.attnum) AS doc
        FROM pg_attribute a
        WHERE a.attrelid = 'tile_result_0006'::regclass AND a.attnum > 0 AND NOT a.attisdropped
    LOOP
        EXECUTE 'COMMENT ON COLUMN tile_result.' || quote_ident(c.attname) || ' IS '
            || quote_nullable(c.doc);
    END LOOP;
END
$$;

-- the view of 0005 (same columns) now reads the partitioned table; its comments are kept
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

DROP TABLE tile_result_0006;

COMMENT ON TABLE tile_result IS 'Per-tile output of a run; NULL where the command does not produce the column. Rows disappear when their tile is re-ingested. LIST-partitioned by run_id: partition tile_result_run_<id> holds one run (dropped with it); tile_result_default holds rows of runs written without one.';
COMMENT ON TABLE tile_result_default IS 'Partition of tile_result for rows of runs without their own partition (rows inserted with plain SQL).';

-- deleting a run also drops its partition (catalog runs delete drops it first: no row-by-row delete)
CREATE OR REPLACE FUNCTION smt_drop_run_view() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    part text := 'tile_result_run_' || OLD.id;
BEGIN
    IF OLD.map_view IS NOT NULL THEN
        EXECUTE 'DROP VIEW IF EXISTS ' || quote_ident(OLD.map_view);
        DELETE FROM layer_styles
        WHERE f_table_catalog = current_database()
          AND f_table_schema = current_schema()
          AND f_table_name = OLD.map_view;
    END IF;
    IF EXISTS (
        SELECT 1 FROM pg_inherits i
        WHERE i.inhparent = 'tile_result'::regclass AND i.inhrelid = to_regclass(quote_ident(part))
    ) THEN
        EXECUTE 'DROP TABLE ' || quote_ident(part);
    END IF;
    RETURN OLD;
END
$$;
COMMENT ON FUNCTION smt_drop_run_view() IS 'Trigger: drop the view, QGIS styles and tile_result partition of a deleted run.';
