"""catalog ingest on masks as users have them: the nodata rule (0 = background is a class by
default), its warnings, and mask content checks (band, dtype, value range, swapped pairs, new
classes) that stop before anything is written."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from smt_tools import catalog as cat
from smt_tools.catalog.parquet_io import read_tile_table
from smt_tools.cli.app import app
from smt_tools.pipelines.ingest import parse_nodata_class, run_ingest
from smt_tools.raster import PairSpec, inspect_pair, open_raster
from smt_tools.raster.maskcheck import (
    MAX_DISTINCT_VALUES,
    MaskValueError,
    mask_value_counts,
    sample_windows,
)
from smt_tools.raster.stats import mask_window_stats
from tests.catalog_data import write_pairs_csv
from tests.rasters import write_tif
from tests.real_masks_data import (
    BUILDING_PX,
    MASK_PX,
    building_mask,
    grey_image,
    grid_nodata_mask,
    write_one,
)

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str, str]:
    res = runner.invoke(app, list(args))
    return res.exit_code, res.stdout, res.stderr


def error_line(err: str) -> str:
    """The one error line (a progress bar may precede it on stderr)."""
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


def class_rows(stdout: str) -> dict[int, tuple[str, str]]:
    """class value -> (pixels, share) from the class-share table an ingest prints."""
    row = re.compile(r"^│\s+(\d+)(?: [^│]*?)?\s+│\s+([\d,]+) │\s+([\d.]+ %) │$", re.M)
    return {int(m[1]): (m[2], m[3]) for m in row.finditer(stdout)}


def warnings_of(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("warning: ")]


# ------------------------------------------------------------------ the nodata rule


def test_tagged_01_mask_defaults_give_exact_shares_with_background(tmp_path: Path) -> None:
    """A 0/1 building mask tagged nodata=0: defaults count 0 as a class (3.38 % buildings,
    not 100 %), and warning (a) names the tag, its share and the flag."""
    _, msk, pairs = write_one(tmp_path, "b", building_mask(), mask_nodata=0)
    out = tmp_path / "t.parquet"
    code, stdout, err = invoke(
        "catalog", "ingest", str(pairs), "--patch-size", "20", "--catalog", str(out)
    )
    assert code == 0, err
    table = read_tile_table(out)
    assert table.nodata_class is None
    assert table.class_values.tolist() == [0, 1]
    assert table.counts.sum(axis=0).tolist() == [MASK_PX - BUILDING_PX, BUILDING_PX]
    assert table.frame["nodata_ratio"].tolist() == [0.0] * 4
    assert not table.frame["has_mask_border_nodata"].any()
    assert "nodata: none (every mask value is a class)" in stdout
    assert "Class shares of the 4 tiles written:" in stdout
    assert class_rows(stdout) == {0: ("1,546", "96.62 %"), 1: ("54", "3.38 %")}
    assert all(len(ln) <= 80 for ln in stdout.splitlines() if not ln.startswith("Tiles written"))
    (warn,) = warnings_of(err)
    assert warn == (
        f"warning: 1 of 1 masks declare GeoTIFF nodata = 0 (e.g. {msk.as_posix()}) and value 0 "
        "is 96.62 % of their pixels; it is counted as a class (no --nodata-class given); if 0 "
        "marks missing data rather than a class, re-ingest with --nodata-class 0"
    )


def test_run_ingest_api_reports_numbers(tmp_path: Path) -> None:
    _, _, pairs = write_one(tmp_path, "b", building_mask(), mask_nodata=0)
    res = run_ingest(pairs, catalog=str(tmp_path / "t.parquet"), patch_size=20, workers=1)
    assert res.nodata_class is None
    s = res.scanned
    assert (s.tiles, s.mask_pixels, s.nodata_pixels, s.outside_pixels) == (4, MASK_PX, 0, 0)
    assert [(c.class_value, c.pixels) for c in s.classes] == [
        (0, MASK_PX - BUILDING_PX),
        (1, BUILDING_PX),
    ]
    assert s.classes[1].share == BUILDING_PX / MASK_PX
    assert len(res.warnings) == 1 and "--nodata-class 0" in res.warnings[0]


def test_building_0_255_mask_and_nodata_class_0_warns(tmp_path: Path) -> None:
    """0/255 masks: defaults give both classes; --nodata-class 0 (background) makes 96.62 % of
    the pixels nodata and warning (b) gives the way back."""
    _, _, pairs = write_one(tmp_path, "b", building_mask(255))
    out = tmp_path / "t.parquet"
    base = ("catalog", "ingest", str(pairs), "--patch-size", "20")
    code, stdout, err = invoke(*base, "--catalog", str(out))
    assert code == 0 and warnings_of(err) == [], err
    table = read_tile_table(out)
    assert table.class_values.tolist() == [0, 255]
    assert table.counts.sum(axis=0).tolist() == [MASK_PX - BUILDING_PX, BUILDING_PX]
    out0 = tmp_path / "t0.parquet"
    code, stdout, err = invoke(*base, "--nodata-class", "0", "--catalog", str(out0))
    assert code == 0, err
    assert "nodata: class 0 = 96.62 % of mask pixels" in stdout
    assert "Class shares of the 4 tiles written (nodata excluded):" in stdout
    assert class_rows(stdout) == {255: ("54", "100.00 %")}
    (warn,) = warnings_of(err)
    assert warn.startswith("warning: nodata class 0 is 96.62 % of the mask pixels and touches ")
    assert warn.endswith("if 0 is background, re-ingest with --nodata-class none")
    assert read_tile_table(out0).class_values.tolist() == [255]


def test_nodata_on_every_tile_border_warns(tmp_path: Path) -> None:
    """0 is only 23.44 % of the pixels, but on the ring of all 16 tiles: warning (b)."""
    _, _, pairs = write_one(tmp_path, "g", grid_nodata_mask())
    res = run_ingest(
        pairs, catalog=str(tmp_path / "t.parquet"), patch_size=8, nodata_class=0, workers=1
    )
    assert res.scanned.nodata_pixels == 15 * 16 and res.scanned.border_tiles == 16
    (warn,) = res.warnings
    assert warn == (
        "nodata class 0 is 23.44 % of the mask pixels and touches the border of 16 of 16 tiles "
        "(100 %; those get has_mask_border_nodata and are excluded by default); if 0 is "
        "background, re-ingest with --nodata-class none"
    )


def test_demo_with_nodata_0_and_with_none(demo_pairs: Path, tmp_path: Path) -> None:
    """The demo really uses 0 = nodata: with --nodata-class 0 no class 0 row and no warning;
    without it 0 is a class, the shares of the others shrink by exactly its share, and
    warning (a) says the masks tag 0 as nodata."""
    nd0 = run_ingest(
        demo_pairs, catalog=str(tmp_path / "a.parquet"), patch_size=128, nodata_class=0, workers=1
    )
    none = run_ingest(demo_pairs, catalog=str(tmp_path / "b.parquet"), patch_size=128, workers=1)
    assert nd0.warnings == []
    assert [c.class_value for c in nd0.scanned.classes] == [1, 2, 3, 4, 5, 6]
    assert [c.class_value for c in none.scanned.classes] == [0, 1, 2, 3, 4, 5, 6]
    zero = none.scanned.classes[0]
    assert zero.pixels == nd0.scanned.nodata_pixels > 0
    assert nd0.scanned.mask_pixels == none.scanned.mask_pixels == 64 * 128 * 128
    for a, b in zip(nd0.scanned.classes, none.scanned.classes[1:], strict=True):
        assert a.pixels == b.pixels
        assert b.share == pytest.approx(a.share * (1 - zero.share), rel=1e-12)
    (warn,) = none.warnings
    assert warn.startswith("4 of 4 masks declare GeoTIFF nodata = 0 (e.g. ")
    assert f"value 0 is {100 * zero.share:.2f} % of their pixels" in warn
    assert warn.endswith("re-ingest with --nodata-class 0")


@pytest.mark.parametrize(
    ("given", "expected"),
    [(None, None), ("none", None), ("NONE", None), ("-1", None), (-1, None), ("0", 0), (7, 7)],
)
def test_parse_nodata_class(given: object, expected: int | None) -> None:
    assert parse_nodata_class(given) == expected  # type: ignore[arg-type]


def test_bad_nodata_class_is_a_usage_error(tmp_path: Path) -> None:
    _, _, pairs = write_one(tmp_path, "b", building_mask())
    for bad in ("abc", "70000", "-2"):
        res = runner.invoke(
            app,
            [
                "catalog",
                "ingest",
                str(pairs),
                "--nodata-class",
                bad,
                "--catalog",
                str(tmp_path / "t.parquet"),
            ],
        )
        assert res.exit_code == 2, res.output
        flat = " ".join(res.output.replace("│", " ").split())  # Typer boxes and wraps it
        assert "--nodata-class must be none (every mask value is a class)" in flat
        assert f"got '{bad}'" in flat
    assert not (tmp_path / "t.parquet").exists()


# ------------------------------------------------------------------ mask content (A6)


def _refused(tmp_path: Path, pairs: Path, *extra: str) -> str:
    """Ingest ``pairs`` into a table holding one good pair; the table must stay unchanged."""
    out = tmp_path / "keep.parquet"
    if not out.exists():
        good = write_one(tmp_path, "good", building_mask(), x0=600_000.0)[2]
        assert (
            invoke("catalog", "ingest", str(good), "--patch-size", "20", "--catalog", str(out))[0]
            == 0
        )
    before = (out.read_bytes(), out.stat().st_mtime_ns)
    code, _, err = invoke(
        "catalog", "ingest", str(pairs), "--patch-size", "8", "--workers", "1", *extra,
        "--catalog", str(out),
    )  # fmt: skip
    assert code == 1, err
    assert (out.read_bytes(), out.stat().st_mtime_ns) == before
    assert sorted(p.name for p in tmp_path.glob("keep.parquet*")) in (
        ["keep.parquet"],
        ["keep.parquet", "keep.parquet.lock"],
    )
    return error_line(err)


def test_three_band_mask_needs_mask_band(tmp_path: Path) -> None:
    bands = np.stack(
        [
            np.full((16, 16), 1, np.uint8),
            building_mask()[:16, :16] + 2,
            np.full((16, 16), 9, np.uint8),
        ]
    )
    _, msk, pairs = write_one(tmp_path, "rgb", bands)
    line = _refused(tmp_path, pairs)
    assert line == (
        f"error: {msk.as_posix()}: mask has 3 bands; a mask is one band of class values: choose it "
        "with --mask-band N (1..3), or write a 1-band mask"
    )
    assert "--mask-band 4 but the mask has 3 band(s)" in _refused(
        tmp_path, pairs, "--mask-band", "4"
    )
    out = tmp_path / "t.parquet"
    args = ("catalog", "ingest", str(pairs), "--patch-size", "8", "--catalog", str(out))
    code, stdout, err = invoke(*args, "--mask-band", "2")
    assert code == 0, err
    t = read_tile_table(out, include_sources=True)
    assert t.class_values.tolist() == [2, 3]
    assert t.counts.sum(axis=0).tolist() == [256 - 36, 36]  # the 6x6 building block
    assert t.frame["mask_band"].tolist() == [2] * 4
    code, stdout, err = invoke(*args, "--mask-band", "2")
    assert code == 0 and "0 scanned (0 new, 0 changed), 1 unchanged skipped" in stdout, err
    # another band is another fingerprint: re-scanned (it replaces every tile of the table,
    # so its class 9 is not "new": nothing else is left)
    code, stdout, err = invoke(*args, "--mask-band", "3")
    assert code == 0 and "1 scanned (0 new, 1 changed)" in stdout, err
    t = read_tile_table(out, include_sources=True)
    assert t.class_values.tolist() == [9] and t.counts.sum(axis=0).tolist() == [256]
    assert t.frame["mask_band"].tolist() == [3] * 4


def test_swapped_pair_three_band_image_as_mask(tmp_path: Path) -> None:
    img = write_tif(tmp_path / "x_img.tif", grey_image((16, 16)))
    msk = write_tif(tmp_path / "x_mask.tif", building_mask()[:16, :16])
    pairs = write_pairs_csv(tmp_path / "swapped.csv", [(msk.name, img.name)])
    line = _refused(tmp_path, pairs)
    assert line.startswith(f"error: {img.as_posix()}: mask has 3 bands;")
    assert line.endswith(
        "if this file is the image, check that the pairs CSV's image and mask columns are not "
        "swapped (the image has 1 band)"
    )


def test_swapped_pair_grey_image_as_mask(tmp_path: Path) -> None:
    img = write_tif(tmp_path / "g_img.tif", grey_image((64, 64), bands=1))
    msk = write_tif(tmp_path / "g_mask.tif", building_mask(1)[:32, :32].repeat(2, 0).repeat(2, 1))
    pairs = write_pairs_csv(tmp_path / "swapped.csv", [(msk.name, img.name)])
    line = _refused(tmp_path, pairs)
    n_distinct = len(np.unique(grey_image((64, 64), bands=1)))
    assert line == (
        f"error: {img.as_posix()}: looks like an image, not a mask: {n_distinct} distinct values "
        f"in a 4096-px sample, against 2 in the same pixels of its image {msk.as_posix()}; are "
        "the pairs CSV's image and mask columns swapped?"
    )


def test_uint16_image_as_mask_exceeds_distinct_limit(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    fake = rng.permutation(np.arange(4096, dtype=np.uint16) + 1000).reshape(64, 64)
    _, msk, pairs = write_one(tmp_path, "u16", fake)
    line = _refused(tmp_path, pairs)
    assert line.startswith(
        f"error: {msk.as_posix()}: 4096 distinct mask values in a 4096-px sample, more than the "
        f"{MAX_DISTINCT_VALUES} classes an ingest accepts;"
    )
    assert "check that the pairs CSV's image and mask columns are not swapped" in line


def test_float_mask_refused(tmp_path: Path) -> None:
    _, msk, pairs = write_one(tmp_path, "f", building_mask().astype(np.float32))
    line = _refused(tmp_path, pairs)
    assert line == (
        f"error: {msk.as_posix()}: mask band 1 has data type float32; masks must hold integer "
        f"class values 0..65535: convert it, e.g. `gdal_translate -ot Byte {msk.as_posix()} "
        "mask_byte.tif` (-ot UInt16 for values above 255)"
    )


def _outside_sample(path: Path) -> tuple[int, int]:
    """A pixel that no pre-scan window covers (so only the full scan can see it)."""
    with open_raster(path) as ds:
        covered = np.zeros((ds.height, ds.width), bool)
        for w in sample_windows(ds, 1):
            covered[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] = True
    r, c = np.argwhere(~covered)[-1]
    return int(r), int(c)


@pytest.mark.parametrize(
    ("dtype", "bad", "fix"),
    [
        (
            np.int32,
            2**31 - 1,
            "remap it to an unused value in 0..65535 and pass --nodata-class <it>",
        ),
        (
            np.int16,
            -1,
            "remap -1 to an unused value in 0..65535 (e.g. 255 for a uint8 copy) and pass --nodata-class <it> if -1 marks missing data",
        ),
    ],
)
def test_out_of_range_values_in_sample_and_in_scan(
    tmp_path: Path, dtype: type, bad: int, fix: str
) -> None:
    mask = np.ones((192, 192), dtype)
    mask[90:100, 90:100] = bad  # the centre: inside the pre-scan sample
    _, msk, pairs = write_one(tmp_path, "s", mask)
    line = _refused(tmp_path, pairs)
    assert (
        line.startswith(f"error: {msk.as_posix()}: mask value {bad} (100 px in a ")
        and "-px sample of band 1) is outside the class range 0..65535; " in line
    )
    assert fix in line
    # one stray pixel the sample does not see: the scan stops before the write
    mask = np.ones((192, 192), dtype)
    write_tif(tmp_path / "s2_mask.tif", mask)  # same layout, to find an unsampled pixel
    r, c = _outside_sample(tmp_path / "s2_mask.tif")
    mask[r, c] = bad
    _, msk2, pairs2 = write_one(tmp_path, "s2", mask)
    line = _refused(tmp_path, pairs2)
    r0, c0 = r // 8 * 8, c // 8 * 8
    assert line.startswith(
        f"error: {msk2.as_posix()}: mask value {bad} (1 px in window row_off={r0} col_off={c0} "
        "size=8x8) is outside the class range 0..65535; "
    )
    assert fix in line


def test_mask_value_counts_never_sizes_by_the_maximum() -> None:
    v, c = mask_value_counts(np.array([[3, 3], [65535, 0]], np.int32))
    assert v.tolist() == [0, 3, 65535] and c.tolist() == [1, 2, 1]
    with pytest.raises(MaskValueError, match=r"mask value 2147483647 \(1 px\) is above 65535"):
        mask_value_counts(np.array([[1, 2**31 - 1]], np.int32))
    with pytest.raises(MaskValueError, match=r"mask value -1 \(2 px\) is negative"):
        mask_window_stats(np.array([[-1, 2], [-1, 1]], np.int16), 0)
    counts, nd, border = mask_window_stats(np.array([[0, 2], [2, 1]], np.uint32), 0)
    assert (counts.shape[0], counts[:3].tolist(), nd, border) == (256, [1, 1, 2], 1, True)


# ------------------------------------------------------------------ new classes


def test_new_classes_refused_then_accepted_parquet(tmp_path: Path) -> None:
    m1 = np.ones((16, 16), np.uint8)
    m1[:, 8:] = 2
    write_one(tmp_path, "a", m1)
    m2 = m1.copy()
    m2[:4, :4] = 7
    write_one(tmp_path, "b", m2, x0=500_016.0)
    out = tmp_path / "t.parquet"
    one = write_pairs_csv(tmp_path / "one.csv", [("a_img.tif", "a_mask.tif")])
    both = write_pairs_csv(
        tmp_path / "both.csv", [("a_img.tif", "a_mask.tif"), ("b_img.tif", "b_mask.tif")]
    )
    assert invoke("catalog", "ingest", str(one), "--patch-size", "8", "--catalog", str(out))[0] == 0
    before = (out.read_bytes(), out.stat().st_mtime_ns)
    code, _, err = invoke(
        "catalog", "ingest", str(both), "--patch-size", "8", "--catalog", str(out)
    )
    assert code == 1
    assert error_line(err) == (
        f"error: {out}: this ingest brings mask values that are not among the catalog's 2 "
        f"classes (1, 2): 7 (first in {(tmp_path / 'b_mask.tif').as_posix()}); nothing was "
        "written: if they are real new classes, re-run with --allow-new-classes; otherwise fix "
        "those masks (a wrong --mask-band or a swapped image/mask pair brings values like these)"
    )
    assert (out.read_bytes(), out.stat().st_mtime_ns) == before
    code, stdout, err = invoke(
        "catalog",
        "ingest",
        str(both),
        "--patch-size",
        "8",
        "--allow-new-classes",
        "--catalog",
        str(out),
    )
    assert code == 0 and "1 scanned (1 new, 0 changed), 1 unchanged skipped" in stdout, err
    t = read_tile_table(out)
    assert t.class_values.tolist() == [1, 2, 7]
    assert t.counts.sum(axis=0).tolist() == [128 + 128 - 16, 256, 16]


@pytest.mark.db
def test_new_classes_refused_then_accepted_postgis(fresh_database_url: str, tmp_path: Path) -> None:
    engine = cat.connect(fresh_database_url)
    try:
        cat.apply_migrations(engine)
        m1 = np.ones((16, 16), np.uint8)
        m1[:, 8:] = 2
        write_one(tmp_path, "a", m1)
        m2 = m1.copy()
        m2[:4, :4] = 7
        m2[12:, 12:] = 0
        write_one(tmp_path, "b", m2, x0=500_016.0)
        one = write_pairs_csv(tmp_path / "one.csv", [("a_img.tif", "a_mask.tif")])
        both = write_pairs_csv(
            tmp_path / "both.csv", [("a_img.tif", "a_mask.tif"), ("b_img.tif", "b_mask.tif")]
        )
        url = fresh_database_url
        assert invoke("catalog", "ingest", str(one), "--patch-size", "8", "--catalog", url)[0] == 0

        def classes() -> list[tuple[int, int]]:
            with engine.connect() as conn:
                return [
                    tuple(r)
                    for r in conn.execute(
                        text("select position, class_value from catalog_class order by 1")
                    )
                ]  # type: ignore[misc]

        def n_tiles() -> int:
            with engine.connect() as conn:
                return int(conn.execute(text("select count(*) from tile")).scalar_one())

        assert classes() == [(1, 1), (2, 2)] and n_tiles() == 4
        code, _, err = invoke("catalog", "ingest", str(both), "--patch-size", "8", "--catalog", url)
        assert code == 1
        line = error_line(err)
        b_mask = (tmp_path / "b_mask.tif").as_posix()
        assert (
            f"not among the catalog's 2 classes (1, 2): 0 (first in {b_mask}), 7 (first in {b_mask});"
            in line
        )
        assert classes() == [(1, 1), (2, 2)] and n_tiles() == 4  # catalog_class did not grow
        code, _, err = invoke(
            "catalog",
            "ingest",
            str(both),
            "--patch-size",
            "8",
            "--allow-new-classes",
            "--catalog",
            url,
        )
        assert code == 0, err
        assert classes() == [(1, 1), (2, 2), (3, 0), (4, 7)] and n_tiles() == 8
        with engine.connect() as conn:
            mb = conn.execute(text("select distinct mask_band from source_image")).all()
        assert mb == [(1,)]
        # re-ingesting every source with --nodata-class 0 replaces all tiles: the class list
        # starts again (sorted, nodata left out), no flag needed
        code, _, err = invoke(
            "catalog",
            "ingest",
            str(both),
            "--patch-size",
            "8",
            "--nodata-class",
            "0",
            "--catalog",
            url,
        )
        assert code == 0, err
        assert classes() == [(1, 1), (2, 2), (3, 7)] and n_tiles() == 8
        loaded = cat.load_tiles(engine)
        assert loaded.nodata_class == 0 and loaded.class_values.tolist() == [1, 2, 7]
        assert loaded.counts.sum(axis=0).tolist() == [128 + 128 - 16, 256 - 16, 16]
    finally:
        engine.dispose()


def test_inspect_pair_records_the_band(tmp_path: Path) -> None:
    bands = np.stack([np.full((8, 8), 1, np.uint8), np.full((8, 8), 4, np.uint8)])
    img, msk, _ = write_one(tmp_path, "two", bands)
    rec = inspect_pair(PairSpec(str(img), str(msk)), mask_band=2)
    assert rec.mask_band == 2


def test_class_table_keeps_the_largest_24_classes(tmp_path: Path) -> None:
    """30 classes: class k < 30 has 4k px, class 30 the rest; 6 smallest summed in one line."""
    flat = np.concatenate([np.full(4 * k, k, np.uint8) for k in range(1, 30)])
    flat = np.concatenate([flat, np.full(3600 - flat.size, 30, np.uint8)])
    _, _, pairs = write_one(tmp_path, "many", flat.reshape(60, 60))
    code, stdout, err = invoke(
        "catalog",
        "ingest",
        str(pairs),
        "--patch-size",
        "60",
        "--catalog",
        str(tmp_path / "t.parquet"),
    )
    assert code == 0, err
    rows = class_rows(stdout)
    assert sorted(rows) == list(range(7, 31))
    assert rows[7] == ("28", "0.78 %") and rows[30] == ("1,860", "51.67 %")
    assert "... and 6 smaller classes, 2.33 % together (`catalog stats` lists all)" in stdout
