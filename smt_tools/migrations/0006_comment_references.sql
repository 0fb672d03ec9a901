-- smt-tools tile catalog, version 6: column comments cite the contract that ships with the code.
-- Applied migrations are never edited (catalog init checks their SHA-256), so the two comments of
-- version 1 that named a design note outside the repository are replaced here.
-- Forward-only; applied by `pytorch-smt-tools catalog init` after 0005.

COMMENT ON TABLE tile IS 'One row per tile (pixel window) of a source image, with its mask statistics (docs/algorithms.md §3).';
COMMENT ON COLUMN tile_result.excluded IS 'Tile excluded by the exclusion rules (docs/algorithms.md §5).';
