"""Split + spatial buffer (shapely and PostGIS) and the leakage audit at scale.

Data: ``--n`` tile footprints (256 px tiles at 0.5 m = 128 m, EPSG:32631) from ``--images``
source images laid out on a square grid 150 m apart; every 8th image is a second acquisition
overlapping its neighbour by a third of an image (different source id), so the buffer has real
work. Class pixel counts are drawn from a per-image Dirichlet mix (64 Ki pixels per tile).

Timed, each end to end through the real command code (``run_split`` / ``run_check_leakage``):
1. ``split`` on a balanced CSV (shapely STRtree buffer): read, fold, buffer, write CSV;
2. ``split`` on the catalog (PostGIS ST_DWithin buffer): load tiles, fold, buffer, record run
   (the synthetic tiles are ingested first, untimed, into a scratch database
   ``smt_bench_splits`` on the server of ``--database-url``, dropped afterwards); the folds and
   exclusions must equal the shapely run's;
3. ``check-leakage --train --val`` on ``--n`` train tiles and ``--val-n`` val tiles from other
   images, some of which overlap training images (no embeddings).

    python benchmarks/bench_splits.py                              # 155,000 tiles, appends
    python benchmarks/bench_splits.py --n 5000 --val-n 1500 --no-append   # quick check
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import _machine  # benchmarks/_machine.py (scripts run with benchmarks/ on sys.path)
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smt_tools.ingest_params import IngestParams  # noqa: E402
from smt_tools.tiletable import TILE_COLUMNS, TileTable, source_image_key, tile_keys  # noqa: E402

TILE_PX = 256
PIXEL_M = 0.5
COLS = 50  # tiles per image row
CRS = "EPSG:32631"


def make_tiles(
    n: int, images: int, seed: int, prefix: str, origin: tuple[float, float], overlap_of: int = 0
) -> tuple[TileTable, list[tuple[str, float, float, int, int]]]:
    """``n`` tiles from ``images`` images; returns the table and per-image
    ``(path, x0, y0, width_px, height_px)``. Every 8th image (``overlap_of`` > 0: the first
    ``overlap_of`` images) overlaps another image by a third of its width."""
    rng = np.random.default_rng(seed)
    per = np.full(images, n // images)
    per[: n % images] += 1
    rows_per = -(-per // COLS)
    img_w = COLS * TILE_PX * PIXEL_M
    img_h = int(rows_per.max()) * TILE_PX * PIXEL_M
    side = int(np.ceil(np.sqrt(images)))
    frames, counts, specs = [], [], []
    for i in range(images):
        path = f"/bench/{prefix}/image_{i:03d}.tif"
        slot = i
        shift = 0.0
        if (overlap_of and i < overlap_of) or (not overlap_of and i % 8 == 7 and i > 0):
            slot = i - 1 if not overlap_of else i
            shift = img_w / 3
        x0 = origin[0] + (slot % side) * (img_w + 150.0) + shift
        y0 = origin[1] - (slot // side) * (img_h + 150.0) - shift / 2
        m = int(per[i])
        k = np.arange(m)
        r, c = k // COLS, k % COLS
        row_off, col_off = r * TILE_PX, c * TILE_PX
        h = np.full(m, TILE_PX)
        ids = tile_keys(path, row_off, col_off, h, h)
        mix = rng.dirichlet([8, 3, 3, 2, 1, 0.3])
        cnt = rng.multinomial(TILE_PX * TILE_PX, mix, size=m).astype(np.int64)
        frames.append(
            pd.DataFrame(
                {
                    "tile_id": ids,
                    "source_image_id": source_image_key(path),
                    "group_id": f"{prefix}_{i:03d}",
                    "image_path": path,
                    "mask_path": path.replace(".tif", "_mask.tif"),
                    "row_off": row_off,
                    "col_off": col_off,
                    "height": TILE_PX,
                    "width": TILE_PX,
                    "minx": x0 + col_off * PIXEL_M,
                    "miny": y0 - (row_off + TILE_PX) * PIXEL_M,
                    "maxx": x0 + (col_off + TILE_PX) * PIXEL_M,
                    "maxy": y0 - row_off * PIXEL_M,
                    "crs": CRS,
                    "valid_pixels": TILE_PX * TILE_PX,
                    "nodata_ratio": 0.0,
                    "class_entropy": 1.0,
                    "has_mask_border_nodata": False,
                    "has_image_black_border": False,
                }
            )
        )
        counts.append(cnt)
        specs.append((path, x0, y0, COLS * TILE_PX, int(rows_per[i]) * TILE_PX))
    frame = pd.concat(frames, ignore_index=True)[list(TILE_COLUMNS)]
    return TileTable(frame, np.concatenate(counts), np.arange(1, 7)), specs


def balanced_csv(table: TileTable, path: Path) -> None:
    frame = table.frame.copy()
    frame["patch_size"] = TILE_PX
    frame["class_counts_json"] = [
        json.dumps({str(v): int(x) for v, x in zip(table.class_values, row, strict=True)})
        for row in table.counts.tolist()
    ]
    frame["sampler_weight"] = 1.0
    frame.to_csv(path, index=False)


def ingest(url: str, table: TileTable, specs: list[tuple[str, float, float, int, int]]) -> None:
    from smt_tools.catalog import apply_migrations, connect, write_ingest
    from smt_tools.raster.info import RasterInfo
    from smt_tools.raster.scan import SourceRecord

    engine = connect(url)
    apply_migrations(engine)
    sources = []
    for path, x0, y0, w, h in specs:
        info = RasterInfo(
            path=path,
            width=w,
            height=h,
            band_count=3,
            dtype="uint8",
            crs=CRS,
            transform=(PIXEL_M, 0.0, x0, 0.0, -PIXEL_M, y0),
            nodata=None,
            file_size=1,
            file_mtime=0.0,
        )
        mask = RasterInfo(**{**info.__dict__, "path": path.replace(".tif", "_mask.tif")})
        sources.append(SourceRecord(source_image_key(path), info, mask, Path(path).stem))
    params = IngestParams(patch_size=TILE_PX, stride=TILE_PX, edge_policy="drop", nodata_class=0)
    write_ingest(engine, table, sources, params)
    engine.dispose()


def scratch_db(base_url: str, name: str, drop_only: bool = False) -> str:
    import psycopg
    from psycopg import sql

    base = base_url.replace("postgresql+psycopg://", "postgresql://")
    admin = base.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
        )
        if not drop_only:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    url = base.rsplit("/", 1)[0] + "/" + name
    if not drop_only:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("create extension if not exists postgis")
    return url


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=155_000, help="training tiles (default 155,000)")
    ap.add_argument("--images", type=int, default=64, help="source images of the training set")
    ap.add_argument("--val-n", type=int, default=40_000, help="validation tiles for the audit")
    ap.add_argument("--val-images", type=int, default=16, help="source images of the val set")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--buffer-m", type=float, default=100.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--database-url",
        default=os.environ.get("SMT_DATABASE_URL") or os.environ.get("SMT_TEST_DATABASE_URL"),
        help="PostGIS server for the catalog run (a scratch database is created there)",
    )
    ap.add_argument("--skip-postgis", action="store_true", help="time the shapely path only")
    ap.add_argument(
        "--no-append", action="store_true", help="print only, do not touch BENCHMARKS.md"
    )
    args = ap.parse_args()

    from smt_tools.config.split import SplitConfig
    from smt_tools.pipelines.leakage import run_check_leakage
    from smt_tools.pipelines.split import run_split

    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory(prefix="bench_splits_") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        train, specs = make_tiles(args.n, args.images, args.seed, "train", (500_000.0, 5_000_000.0))
        val, _ = make_tiles(
            args.val_n,
            args.val_images,
            args.seed + 1,
            "val",
            (500_000.0, 4_000_000.0),  # 1,000 km south of the training images ...
            overlap_of=2,
        )
        # ... except the first two, moved onto training images 0 and 1 (shifted a third)
        moved = val.frame["group_id"].isin(["val_000", "val_001"]).to_numpy()
        val.frame.loc[moved, ["miny", "maxy"]] += 1_000_000.0
        balanced_csv(train, work / "train.csv")
        balanced_csv(val, work / "val.csv")
        print(f"data: {len(train)} + {len(val)} tiles in {time.perf_counter() - t0:.1f} s")

        cfg = SplitConfig.model_validate(
            {
                "input_csv_path": str(work / "train.csv"),
                "n_splits": args.folds,
                "strategy": "stratified_group",
                "buffer_m": args.buffer_m,
                "random_state": args.seed,
                "output": {"csv_path": str(work / "folds.csv")},
            }
        )
        t0 = time.perf_counter()
        res = run_split(cfg)
        secs = time.perf_counter() - t0
        dropped = sum(f.buffer_dropped for f in res.folds)
        note = f"{dropped} train-tile exclusions; max class-share deviation {res.max_deviation:.4f}"
        rows.append(("split + buffer, CSV input (shapely STRtree)", secs, note))
        print(f"split shapely: {secs:.2f} s ({note})")

        if not args.skip_postgis:
            if not args.database_url:
                raise SystemExit("no --database-url / SMT_DATABASE_URL: use --skip-postgis")
            url = scratch_db(args.database_url, "smt_bench_splits")
            try:
                t0 = time.perf_counter()
                ingest(url, train, specs)
                print(f"ingest (untimed setup): {time.perf_counter() - t0:.1f} s")
                cfg_db = SplitConfig.model_validate(
                    {
                        "catalog": {"url": url},
                        "n_splits": args.folds,
                        "strategy": "stratified_group",
                        "buffer_m": args.buffer_m,
                        "random_state": args.seed,
                    }
                )
                t0 = time.perf_counter()
                res_db = run_split(cfg_db)
                secs = time.perf_counter() - t0
                o1, o2 = np.argsort(res.tile_ids), np.argsort(res_db.tile_ids)
                same_fold = np.array_equal(res.fold[o1], res_db.fold[o2])
                same_ex = np.array_equal(res.exclusions[o1], res_db.exclusions[o2])
                if not (same_fold and same_ex):
                    raise SystemExit("PostGIS and shapely results differ")
                note = f"run {res_db.run_id}; identical folds and exclusions to the shapely run"
                rows.append(("split + buffer, catalog input (PostGIS ST_DWithin)", secs, note))
                print(f"split postgis: {secs:.2f} s ({note})")
            finally:
                scratch_db(args.database_url, "smt_bench_splits", drop_only=True)

        t0 = time.perf_counter()
        audit = run_check_leakage(
            train=work / "train.csv", val=work / "val.csv", buffer_m=args.buffer_m
        )
        secs = time.perf_counter() - t0
        found = {f.check: f.n_items for f in audit.audit.findings}
        note = f"spatial pairs {found.get('spatial', 0)}, shared groups {found['source_image']}"
        rows.append((f"check-leakage {len(train)}/{len(val)} train/val, no embeddings", secs, note))
        print(f"audit: {secs:.2f} s ({note})")

    today = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = (
        f"\n## Splits and leakage audit — {today}\n\n"
        f"Machine: {_machine.machine()}.\n"
        f"Data: {args.n:,} tiles from {args.images} source images (every 8th overlaps a "
        f"neighbour), {args.folds} folds, stratified_group, buffer {args.buffer_m:g} m; audit "
        f"val set {args.val_n:,} tiles from {args.val_images} images (2 overlap training "
        "images). Command: `python benchmarks/bench_splits.py`.\n\n"
        "| step | seconds | notes |\n|---|---:|---|\n"
        + "".join(f"| {name} | {secs:.2f} | {note} |\n" for name, secs, note in rows)
    )
    print(text)
    if not args.no_append:
        with open(ROOT / "BENCHMARKS.md", "a", encoding="utf-8") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
