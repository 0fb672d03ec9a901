-- smt-tools tile catalog, version 1.
-- Tables and columns here are the public SQL interface (users write queries and QGIS layers
-- against them). Applied by `pytorch-smt-tools catalog init`, recorded in schema_migrations.

CREATE EXTENSION IF NOT EXISTS postgis;

-- ---------------------------------------------------------------- source_image
CREATE TABLE source_image (
    id               bigint PRIMARY KEY,
    image_path       text NOT NULL UNIQUE,
    mask_path        text NOT NULL,
    group_id         text NOT NULL,
    crs              text NOT NULL,
    transform        double precision[] NOT NULL CHECK (cardinality(transform) = 6),
    width            integer NOT NULL CHECK (width > 0),
    height           integer NOT NULL CHECK (height > 0),
    band_count       integer NOT NULL,
    dtype            text NOT NULL,
    nodata           double precision,
    mask_dtype       text NOT NULL,
    nodata_class     integer,
    patch_size       integer NOT NULL,
    stride           integer NOT NULL,
    edge_policy      text NOT NULL CHECK (edge_policy IN ('drop', 'shift', 'pad')),
    black_tolerance  double precision NOT NULL,
    image_size       bigint NOT NULL,
    image_mtime      double precision NOT NULL,
    mask_size        bigint NOT NULL,
    mask_mtime       double precision NOT NULL,
    tile_count       integer NOT NULL,
    footprint        geometry(Polygon, 4326) NOT NULL,
    ingested_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX source_image_footprint_gist ON source_image USING gist (footprint);
CREATE INDEX source_image_group_idx ON source_image (group_id);

COMMENT ON TABLE source_image IS 'One row per ingested image/mask pair (a row of the pairs CSV).';
COMMENT ON COLUMN source_image.id IS 'Stable 63-bit id: smt_tools.tiletable.source_image_key(absolute image path); the same in local tile tables.';
COMMENT ON COLUMN source_image.image_path IS 'Absolute path of the image raster.';
COMMENT ON COLUMN source_image.mask_path IS 'Absolute path of the mask raster used for the class counts.';
COMMENT ON COLUMN source_image.group_id IS 'Leakage group (pairs CSV column "group"; defaults to the image file stem).';
COMMENT ON COLUMN source_image.crs IS 'Native CRS of image and mask: "EPSG:xxxx" when it has an EPSG code, else WKT.';
COMMENT ON COLUMN source_image.transform IS 'Affine pixel-to-CRS transform (a, b, c, d, e, f) as in rasterio: x = a*col + b*row + c, y = d*col + e*row + f.';
COMMENT ON COLUMN source_image.width IS 'Raster width in pixels.';
COMMENT ON COLUMN source_image.height IS 'Raster height in pixels.';
COMMENT ON COLUMN source_image.band_count IS 'Number of bands of the image.';
COMMENT ON COLUMN source_image.dtype IS 'Data type of the image bands (e.g. uint8).';
COMMENT ON COLUMN source_image.nodata IS 'Declared nodata value of the image, NULL when none.';
COMMENT ON COLUMN source_image.mask_dtype IS 'Data type of the mask band.';
COMMENT ON COLUMN source_image.nodata_class IS 'Mask value treated as nodata at ingest (excluded from class_counts); NULL when none.';
COMMENT ON COLUMN source_image.patch_size IS 'Tile size in pixels used at ingest (--patch-size).';
COMMENT ON COLUMN source_image.stride IS 'Step between tiles in pixels used at ingest (--stride).';
COMMENT ON COLUMN source_image.edge_policy IS 'Edge policy used at ingest: drop, shift or pad.';
COMMENT ON COLUMN source_image.black_tolerance IS 'Image value at or below which a pixel (all bands) counts as black for has_image_black_border.';
COMMENT ON COLUMN source_image.image_size IS 'Image file size in bytes at ingest (incremental re-ingest compares it).';
COMMENT ON COLUMN source_image.image_mtime IS 'Image file modification time (seconds since epoch) at ingest.';
COMMENT ON COLUMN source_image.mask_size IS 'Mask file size in bytes at ingest.';
COMMENT ON COLUMN source_image.mask_mtime IS 'Mask file modification time (seconds since epoch) at ingest.';
COMMENT ON COLUMN source_image.tile_count IS 'Number of tile rows written for this source image.';
COMMENT ON COLUMN source_image.footprint IS 'Outline of the whole raster in lon/lat (EPSG:4326), reprojected from the native CRS.';
COMMENT ON COLUMN source_image.ingested_at IS 'When this source image was (re)ingested.';

-- ---------------------------------------------------------------- catalog_class
CREATE TABLE catalog_class (
    position     integer PRIMARY KEY CHECK (position >= 1),
    class_value  integer NOT NULL UNIQUE,
    name         text,
    colour       text
);
COMMENT ON TABLE catalog_class IS 'Mask classes of the catalog; position p is element p of tile.class_counts (1-based, as SQL arrays).';
COMMENT ON COLUMN catalog_class.position IS '1-based index of this class in tile.class_counts (append-only: new classes get the next position).';
COMMENT ON COLUMN catalog_class.class_value IS 'Pixel value of the class in the masks (the nodata class is never listed).';
COMMENT ON COLUMN catalog_class.name IS 'Human-readable class name (from --class-names CSV), NULL when unknown.';
COMMENT ON COLUMN catalog_class.colour IS 'Display colour, e.g. #1f77b4 (from --class-names CSV), NULL when unknown.';

-- ---------------------------------------------------------------- tile
CREATE TABLE tile (
    id                      bigint PRIMARY KEY,
    source_image_id         bigint NOT NULL REFERENCES source_image (id) ON DELETE CASCADE,
    row_off                 integer NOT NULL,
    col_off                 integer NOT NULL,
    height                  integer NOT NULL CHECK (height > 0),
    width                   integer NOT NULL CHECK (width > 0),
    footprint               geometry(Polygon, 4326) NOT NULL,
    class_counts            bigint[] NOT NULL,
    valid_pixels            bigint NOT NULL,
    nodata_ratio            double precision NOT NULL,
    class_entropy           double precision,
    has_mask_border_nodata  boolean NOT NULL,
    has_image_black_border  boolean NOT NULL,
    CONSTRAINT tile_window_unique UNIQUE (source_image_id, row_off, col_off, height, width)
);
CREATE INDEX tile_footprint_gist ON tile USING gist (footprint);

COMMENT ON TABLE tile IS 'One row per tile (pixel window) of a source image, with its mask statistics (ALGORITHMS.md section 1).';
COMMENT ON COLUMN tile.id IS 'Stable 63-bit id: smt_tools.tiletable.tile_key(absolute image path, window); the same in local tile tables and embedding caches.';
COMMENT ON COLUMN tile.source_image_id IS 'The source_image this window belongs to.';
COMMENT ON COLUMN tile.row_off IS 'Window top row in pixels.';
COMMENT ON COLUMN tile.col_off IS 'Window left column in pixels.';
COMMENT ON COLUMN tile.height IS 'Window height in pixels.';
COMMENT ON COLUMN tile.width IS 'Window width in pixels.';
COMMENT ON COLUMN tile.footprint IS 'Window outline in lon/lat (EPSG:4326), reprojected from the native CRS with densified edges.';
COMMENT ON COLUMN tile.class_counts IS 'Pixels per class; element p counts the class at catalog_class.position = p.';
COMMENT ON COLUMN tile.valid_pixels IS 'Pixels not equal to the nodata class (sum of class_counts).';
COMMENT ON COLUMN tile.nodata_ratio IS 'Nodata pixels / window pixels (pixels past the raster edge count as nodata).';
COMMENT ON COLUMN tile.class_entropy IS 'Shannon entropy (natural log) of the class proportions over valid pixels; NULL when valid_pixels = 0.';
COMMENT ON COLUMN tile.has_mask_border_nodata IS 'Some pixel of the 1-pixel outer ring of the mask window is nodata.';
COMMENT ON COLUMN tile.has_image_black_border IS 'Some pixel of the outer ring of the image window is black in every band (<= black_tolerance) or the image nodata value.';

-- ---------------------------------------------------------------- run
CREATE TABLE run (
    id            bigserial PRIMARY KEY,
    command       text NOT NULL,
    config        jsonb NOT NULL DEFAULT '{}'::jsonb,
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz NOT NULL,
    tool_version  text NOT NULL,
    summary       jsonb NOT NULL DEFAULT '{}'::jsonb
);
COMMENT ON TABLE run IS 'One row per command run that recorded per-tile results (build-balanced-dataset, select-coreset, split ...).';
COMMENT ON COLUMN run.id IS 'Run id (tile_result.run_id).';
COMMENT ON COLUMN run.command IS 'Command name, e.g. build-balanced-dataset.';
COMMENT ON COLUMN run.config IS 'The validated configuration of the run.';
COMMENT ON COLUMN run.started_at IS 'When the run started.';
COMMENT ON COLUMN run.finished_at IS 'When the run finished.';
COMMENT ON COLUMN run.tool_version IS 'smt-tools version that produced the run.';
COMMENT ON COLUMN run.summary IS 'Summary numbers printed at the end of the run.';

-- ---------------------------------------------------------------- tile_result
CREATE TABLE tile_result (
    run_id            bigint NOT NULL REFERENCES run (id) ON DELETE CASCADE,
    tile_id           bigint NOT NULL REFERENCES tile (id) ON DELETE CASCADE,
    sampler_weight    double precision,
    freq_cluster_id   integer,
    uniqueness_score  double precision,
    excluded          boolean,
    coreset_score     double precision,
    coreset_selected  boolean,
    fold              integer,
    PRIMARY KEY (run_id, tile_id)
);
CREATE INDEX tile_result_tile_idx ON tile_result (tile_id);

COMMENT ON TABLE tile_result IS 'Per-tile output of a run; NULL where the command does not produce the column. Rows disappear when their tile is re-ingested.';
COMMENT ON COLUMN tile_result.run_id IS 'The run that produced this row.';
COMMENT ON COLUMN tile_result.tile_id IS 'The tile (tile.id).';
COMMENT ON COLUMN tile_result.sampler_weight IS 'Sampling weight (0 for excluded tiles).';
COMMENT ON COLUMN tile_result.freq_cluster_id IS 'Composition cluster (CLR + KMeans); -1 when composition is not used.';
COMMENT ON COLUMN tile_result.uniqueness_score IS 'Mean cosine distance to the k nearest other included tiles (DINOv2 embeddings).';
COMMENT ON COLUMN tile_result.excluded IS 'Tile excluded by the exclusion rules (ALGORITHMS.md section 2).';
COMMENT ON COLUMN tile_result.coreset_score IS 'Score given by select-coreset.';
COMMENT ON COLUMN tile_result.coreset_selected IS 'Tile kept by select-coreset.';
COMMENT ON COLUMN tile_result.fold IS 'Cross-validation fold assigned by split.';

-- ---------------------------------------------------------------- tile_result_map
CREATE VIEW tile_result_map AS
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
    t.footprint
FROM tile_result tr
JOIN tile t ON t.id = tr.tile_id
JOIN run r ON r.id = tr.run_id
JOIN source_image s ON s.id = t.source_image_id;

COMMENT ON VIEW tile_result_map IS 'Run results joined to tile footprints: add it in QGIS (key: run_id, tile_id; filter run_id = N) to see any run on a map.';
COMMENT ON COLUMN tile_result_map.run_id IS 'The run (run.id).';
COMMENT ON COLUMN tile_result_map.command IS 'Command of the run.';
COMMENT ON COLUMN tile_result_map.tile_id IS 'The tile (tile.id).';
COMMENT ON COLUMN tile_result_map.source_image_id IS 'Source image of the tile.';
COMMENT ON COLUMN tile_result_map.group_id IS 'Leakage group of the source image.';
COMMENT ON COLUMN tile_result_map.image_path IS 'Image raster of the tile.';
COMMENT ON COLUMN tile_result_map.row_off IS 'Window top row in pixels.';
COMMENT ON COLUMN tile_result_map.col_off IS 'Window left column in pixels.';
COMMENT ON COLUMN tile_result_map.height IS 'Window height in pixels.';
COMMENT ON COLUMN tile_result_map.width IS 'Window width in pixels.';
COMMENT ON COLUMN tile_result_map.valid_pixels IS 'Pixels not equal to the nodata class.';
COMMENT ON COLUMN tile_result_map.nodata_ratio IS 'Nodata pixels / window pixels.';
COMMENT ON COLUMN tile_result_map.class_entropy IS 'Class entropy (natural log) over valid pixels.';
COMMENT ON COLUMN tile_result_map.has_mask_border_nodata IS 'Mask window ring touches nodata.';
COMMENT ON COLUMN tile_result_map.has_image_black_border IS 'Image window ring has a black pixel.';
COMMENT ON COLUMN tile_result_map.sampler_weight IS 'Sampling weight from the run.';
COMMENT ON COLUMN tile_result_map.freq_cluster_id IS 'Composition cluster from the run.';
COMMENT ON COLUMN tile_result_map.uniqueness_score IS 'Uniqueness score from the run.';
COMMENT ON COLUMN tile_result_map.excluded IS 'Excluded flag from the run.';
COMMENT ON COLUMN tile_result_map.coreset_score IS 'Coreset score from the run.';
COMMENT ON COLUMN tile_result_map.coreset_selected IS 'Coreset selection from the run.';
COMMENT ON COLUMN tile_result_map.fold IS 'Fold from the run.';
COMMENT ON COLUMN tile_result_map.footprint IS 'Tile outline in lon/lat (EPSG:4326).';
