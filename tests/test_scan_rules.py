"""Sources scanned under older statistics rules are re-scanned, never kept with old flags.

A tile table or catalog built before the black-run rule (one black ring pixel flagged a tile)
must not keep that flag after an upgrade: the rules version is part of the source fingerprint.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import text

from smt_tools import catalog as cat
from smt_tools.catalog import parquet_io as tio
from smt_tools.pipelines.ingest import run_ingest
from smt_tools.raster import SCAN_RULES
from tests.rasters import write_pair


def _shadow_pair(folder: Path) -> Path:
    """One 64 px pair: a single black 'shadow' pixel on the top edge of the only tile."""
    mask = np.ones((64, 64), np.uint8)
    mask[40:, :] = 2
    image = np.full((3, 64, 64), 120, np.uint8)
    image[:, 0, 10] = 0  # one pure-black pixel on the ring: not a border under rules 2
    write_pair(folder, "s", mask, image)
    pairs = folder / "pairs.csv"
    pairs.write_text("image,mask\ns_img.tif,s_mask.tif\n")
    return pairs


def _age_parquet(path: Path, black_border: bool) -> None:
    """Rewrite a tile table as round 1 wrote it: no ``scan_rules`` column, old flag value."""
    meta = pq.read_schema(path).metadata
    table = pq.read_table(path).drop_columns(["scan_rules"])
    flags = pa.array([black_border] * table.num_rows, pa.bool_())
    table = table.set_column(
        table.column_names.index("has_image_black_border"), "has_image_black_border", flags
    )
    pq.write_table(table.replace_schema_metadata(meta), path)


def test_parquet_table_from_older_rules_is_rescanned(tmp_path: Path) -> None:
    pairs = _shadow_pair(tmp_path)
    out = tmp_path / "t.parquet"
    first = run_ingest(pairs, catalog=str(out), patch_size=64, workers=1)
    assert (first.images_new, first.tiles_written) == (1, 1)
    table = tio.read_tile_table(out, include_sources=True)
    assert table.frame["scan_rules"].tolist() == [SCAN_RULES]
    assert table.frame["has_image_black_border"].tolist() == [False]

    again = run_ingest(pairs, catalog=str(out), patch_size=64, workers=1)
    assert (again.images_skipped, again.images_replaced) == (1, 0)  # same rules: unchanged

    _age_parquet(out, black_border=True)
    old = tio.read_tile_table(out, include_sources=True)
    assert tio.source_fingerprints(old)["scan_rules"].tolist() == [1]
    upgraded = run_ingest(pairs, catalog=str(out), patch_size=64, workers=1)
    assert (upgraded.images_skipped, upgraded.images_replaced) == (0, 1)
    table = tio.read_tile_table(out, include_sources=True)
    assert table.frame["has_image_black_border"].tolist() == [False]
    assert table.frame["scan_rules"].tolist() == [SCAN_RULES]


def test_catalog_sources_from_older_rules_are_rescanned(
    fresh_database_url: str, tmp_path: Path
) -> None:
    engine = cat.connect(fresh_database_url)
    try:
        cat.apply_migrations(engine)
        pairs = _shadow_pair(tmp_path)
        first = run_ingest(pairs, catalog=fresh_database_url, patch_size=64, workers=1)
        assert first.tiles_written == 1
        with engine.begin() as conn:
            stored = conn.execute(text("select scan_rules from source_image")).scalar_one()
            assert stored == SCAN_RULES
            # what a catalog ingested before this version holds after `catalog init`
            conn.execute(text("update source_image set scan_rules = 1"))
            conn.execute(text("update tile set has_image_black_border = true"))
        upgraded = run_ingest(pairs, catalog=fresh_database_url, patch_size=64, workers=1)
        assert (upgraded.images_skipped, upgraded.images_replaced) == (0, 1)
        with engine.connect() as conn:
            row = conn.execute(
                text(
                    "select s.scan_rules, t.has_image_black_border "
                    "from tile t join source_image s on s.id = t.source_image_id"
                )
            ).one()
        assert tuple(row) == (SCAN_RULES, False)
    finally:
        engine.dispose()
