"""Rasters where users keep them (issue 12, part 7): Cloud-Optimised GeoTIFFs read over HTTP.

The COGs are written by the test and served from their folder by a small threaded HTTP server
that honours ``Range`` requests (Python's ``SimpleHTTPRequestHandler`` does not) and logs each
request, so the tests can check GDAL read them by byte ranges. ``catalog ingest`` of
``/vsicurl/http://127.0.0.1:PORT/...`` paths must give exactly the tiles of the same files
ingested from disk, in a Parquet table and in PostGIS; the balanced CSV, ``split`` and the
training dataset carry and read the URLs as written.
"""

from __future__ import annotations

import email.utils
import http.server
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml
from rasterio.transform import from_origin
from typer.testing import CliRunner

from smt_tools.catalog.parquet_io import read_tile_table
from smt_tools.cli.app import app
from smt_tools.errors import InputDataError, OutputError
from smt_tools.export.preflight import check_outputs, same_file
from smt_tools.pipelines._inputs import read_patch_records_csv
from smt_tools.pipelines.ingest import read_pairs_csv, run_ingest
from smt_tools.raster.paths import (
    clear_remote_cache,
    file_fingerprint,
    is_gdal_path,
    normalize_path,
    path_identity,
    path_stem,
    redact,
    resolve_path,
)
from smt_tools.tiletable import TileTable, canonical_path, source_image_key, tile_keys
from smt_tools.train._table import _resolve_paths

runner = CliRunner()

H, W, PATCH = 256, 320, 64  # 4 x 5 tiles of 64 px per scene
SCENES = ("north", "south")


# --- a Range-capable HTTP server -----------------------------------------------------------


@dataclass
class Served:
    """One request the server answered."""

    method: str
    path: str
    range: str | None
    status: int
    bytes: int


@dataclass
class Server:
    root: Path
    port: int
    log: list[Served] = field(default_factory=list)

    def url(self, name: str, auth: str = "") -> str:
        return f"/vsicurl/http://{auth}127.0.0.1:{self.port}/{name}"

    def gets(self, name: str) -> list[Served]:
        return [r for r in self.log if r.method == "GET" and r.path.split("?")[0] == "/" + name]


def _handler(server: Server) -> type[http.server.BaseHTTPRequestHandler]:
    class RangeHandler(http.server.BaseHTTPRequestHandler):
        """GET/HEAD of files under ``server.root``; ``Range: bytes=a-b`` answered with 206."""

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            name = self.path.split("?", 1)[0].lstrip("/")
            file = server.root / name
            rng = self.headers.get("Range")
            if not name or not file.is_file():
                server.log.append(Served(self.command, self.path, rng, 404, 0))
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = file.read_bytes()
            st = file.stat()
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "")
            if m is not None and body:
                start = int(m[1])
                end = min(int(m[2]) if m[2] else len(data) - 1, len(data) - 1)
                chunk, status = data[start : end + 1], 206
            else:
                chunk, status = data, 200
            server.log.append(Served(self.command, self.path, rng, status, len(chunk) * body))
            self.send_response(status)
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            self.send_header("Content-Length", str(len(chunk)))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
            self.end_headers()
            if body:
                self.wfile.write(chunk)

    return RangeHandler


def _write_cogs(folder: Path) -> None:
    """Two scenes of 3-band uint8 images and 4-class masks as COGs (128 px blocks, overviews)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(12)
    for k, name in enumerate(SCENES):
        transform = from_origin(500_000.0 + k * 10_000, 5_000_000.0, 1.0, 1.0)
        image = rng.integers(0, 256, (3, H, W), dtype=np.uint8)
        mask = np.zeros((H, W), np.uint8)
        mask[: H // 2, : W // 2] = 1 + k  # one class block per scene, the rest noisy
        mask[H // 2 :, :] = rng.integers(0, 4, (H - H // 2, W), dtype=np.uint8)
        for arr, suffix in ((image, "img"), (mask[None], "mask")):
            with rasterio.open(
                folder / f"{name}_{suffix}.tif",
                "w",
                driver="COG",
                width=W,
                height=H,
                count=arr.shape[0],
                dtype="uint8",
                crs="EPSG:32631",
                transform=transform,
                blocksize=128,
                overview_resampling="nearest",
            ) as ds:
                ds.write(arr)
    with rasterio.open(folder / f"{SCENES[0]}_img.tif") as ds:
        assert ds.overviews(1), "the COG has overviews"


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """COGs in ``tmp_path/www`` served on 127.0.0.1; GDAL set for a local, flaky-free server."""
    root = tmp_path / "www"
    _write_cogs(root)
    # test-only GDAL settings: no retries, no folder listing / sidecar probes, no proxy
    for key, value in {
        "GDAL_HTTP_MAX_RETRY": "0",
        "GDAL_HTTP_TIMEOUT": "20",
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        "CPL_VSIL_CURL_USE_HEAD": "YES",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }.items():
        monkeypatch.setenv(key, value)
    for key in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "GDAL_HTTP_PROXY"):
        monkeypatch.delenv(key, raising=False)
    state = Server(root, 0)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.port = int(httpd.server_address[1])
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    clear_remote_cache()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        clear_remote_cache()


def _pairs(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("image,mask\n" + "".join(f"{i},{m}\n" for i, m in rows))
    return path


def _remote_pairs(server: Server, folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    rows = [(server.url(f"{n}_img.tif"), server.url(f"{n}_mask.tif")) for n in SCENES]
    return _pairs(folder / "remote_pairs.csv", rows)


def _local_pairs(server: Server) -> Path:
    rows = [(f"{n}_img.tif", f"{n}_mask.tif") for n in SCENES]  # relative to the CSV
    return _pairs(server.root / "local_pairs.csv", rows)


def _by_window(table: TileTable) -> tuple[pd.DataFrame, np.ndarray]:
    order = np.lexsort(
        (
            table.frame["col_off"].to_numpy(),
            table.frame["row_off"].to_numpy(),
            table.frame["group_id"].to_numpy(),
        )
    )
    return table.frame.iloc[order].reset_index(drop=True), table.counts[order]


def _assert_same_tiles(remote: TileTable, local: TileTable) -> None:
    assert remote.class_values.tolist() == local.class_values.tolist() == [0, 1, 2, 3]
    rf, rc = _by_window(remote)
    lf, lc = _by_window(local)
    assert len(rf) == len(lf) == 2 * (H // PATCH) * (W // PATCH)
    np.testing.assert_array_equal(rc, lc)  # class counts: exactly equal
    assert int(rc.sum()) == 2 * H * W
    stats = ["group_id", "row_off", "col_off", "height", "width", "valid_pixels"]
    stats += ["nodata_ratio", "class_entropy", "minx", "miny", "maxx", "maxy", "crs"]
    pd.testing.assert_frame_equal(rf[stats], lf[stats])


# --- paths: pure rules -------------------------------------------------------------------


def test_gdal_paths_are_kept_as_written_and_identified_without_credentials() -> None:
    for p in ("s3://bucket/a.tif", "/vsicurl/https://h/a.tif", "https://h/a.tif", "/vsis3/b/k",
              "/vsigs/b/k.tif", "/vsiaz/c/k.tif", "/vsizip//data/a.zip/x.tif", "gs://b/x.tif",
              "zip+https://h/a.zip!x.tif"):  # fmt: skip
        assert is_gdal_path(p)
        assert normalize_path(p) == p == canonical_path(p)
        assert resolve_path(p, "/some/csv/folder") == p  # never joined to the CSV's folder
    assert normalize_path("  S3://bucket/a.tif ") == "s3://bucket/a.tif"
    for local in ("a/b.tif", "/data/b.tif", "C_drive/x.tif", "s3_copy/x.tif"):
        assert not is_gdal_path(local)
    assert resolve_path("x/a.tif", "/data") == "/data/x/a.tif"
    assert normalize_path("file:///data/a.tif") == "/data/a.tif"
    signed = "https://alice:pw@h/k/a.tif?X-Amz-Signature=abc&X-Amz-Credential=AKIA1&v=2"
    resigned = "https://h/k/a.tif?X-Amz-Signature=zzz&X-Amz-Credential=AKIA2&v=2"
    assert path_identity(signed) == path_identity(resigned) == "https://h/k/a.tif?v=2"
    assert tile_keys(signed, *(np.array([0]),) * 2, *(np.array([64]),) * 2).tolist() == (
        tile_keys(resigned, *(np.array([0]),) * 2, *(np.array([64]),) * 2).tolist()
    )
    assert source_image_key("s3://b/a.tif") == source_image_key(" s3://b/a.tif")
    assert source_image_key("s3://b/a.tif") != source_image_key("s3://b/b.tif")
    assert redact(f"error: {signed}: 404") == (
        "error: https://alice:***@h/k/a.tif?X-Amz-Signature=***&X-Amz-Credential=***&v=2: 404"
    )
    assert redact("postgresql://user@host/db") == "postgresql://user@host/db"  # no password
    assert redact("postgresql://u:***@h/db") == "postgresql://u:***@h/db"  # idempotent
    assert path_stem("https://h/k/a.tif?sig=1") == "a" == path_stem("/data/a.tif")


def test_csv_readers_keep_urls_and_resolve_only_local_paths(tmp_path: Path) -> None:
    url = "/vsicurl/https://example.org/cogs/a.tif"
    records = tmp_path / "records.csv"
    records.write_text(
        "image_path,mask_path,row_off,col_off,patch_size\n"
        f"{url},s3://bucket/a_mask.tif,0,0,64\nrel.tif,rel_mask.tif,0,0,64\n"
    )
    got = read_patch_records_csv(records)
    assert got["image_path"].tolist() == [url, str(tmp_path / "rel.tif")]
    assert got["mask_path"].tolist() == ["s3://bucket/a_mask.tif", str(tmp_path / "rel_mask.tif")]
    pairs = _pairs(tmp_path / "p.csv", [(url, "s3://bucket/a_mask.tif")])
    (pair,) = read_pairs_csv(pairs, check_exists=False)
    assert (pair.image_path, pair.mask_path) == (url, "s3://bucket/a_mask.tif")
    dup = _pairs(tmp_path / "d.csv", [(url, "m1.tif"), (url, "m2.tif")])
    with pytest.raises(InputDataError, match="already listed on line 2"):
        read_pairs_csv(dup, check_exists=False)
    series = pd.Series([url, "s3://b/x.tif", "rel.tif"])
    assert _resolve_paths(series, tmp_path) == [url, "s3://b/x.tif", str(tmp_path / "rel.tif")]


def test_preflight_never_takes_a_url_for_a_local_file(tmp_path: Path) -> None:
    assert not same_file("s3://bucket/out.csv", tmp_path / "out.csv")
    assert same_file("https://u:p@h/a.csv?sig=1", "https://h/a.csv?sig=2")
    check_outputs([("output.csv_path", tmp_path / "b.csv")], [("input", "s3://b/b.csv")])
    with pytest.raises(OutputError, match=r"output\.csv_path: s3://b/o\.csv is a remote path"):
        check_outputs([("output.csv_path", "s3://b/o.csv")])


# --- over HTTP -------------------------------------------------------------------------------


def test_fingerprint_from_http_headers(server: Server) -> None:
    local = server.root / "north_img.tif"
    size, mtime = file_fingerprint(server.url("north_img.tif"))
    assert size == local.stat().st_size
    assert mtime == float(int(local.stat().st_mtime))  # Last-Modified: whole seconds
    assert file_fingerprint(local) == (local.stat().st_size, local.stat().st_mtime)
    assert file_fingerprint("/vsimem/nothing.tif") == (-1, -1.0)  # unknown: always re-scanned


def test_ingest_over_http_equals_local_and_is_incremental(server: Server, tmp_path: Path) -> None:
    remote_pairs = _remote_pairs(server, tmp_path / "job")
    remote_out = tmp_path / "remote.parquet"
    args = ["catalog", "ingest", str(remote_pairs), "--patch-size", str(PATCH)]
    res = runner.invoke(app, [*args, "--catalog", str(remote_out), "--workers", "2"])
    assert res.exit_code == 0, res.stderr
    assert "Images: 2 listed, 2 scanned (2 new, 0 changed), 0 unchanged skipped" in res.stdout
    # GDAL read by byte ranges: every GET of a COG had a Range header, and there were several
    for name in (f"{n}_{s}.tif" for n in SCENES for s in ("img", "mask")):
        gets = server.gets(name)
        assert gets and all(g.range is not None and g.status == 206 for g in gets), gets
    assert sum(len(server.gets(f"{n}_img.tif")) for n in SCENES) >= 2
    local_out = tmp_path / "local.parquet"
    run_ingest(_local_pairs(server), catalog=str(local_out), patch_size=PATCH, workers=1)
    remote, local = read_tile_table(remote_out), read_tile_table(local_out)
    _assert_same_tiles(remote, local)
    urls = {server.url(f"{n}_img.tif") for n in SCENES}
    assert set(remote.frame["image_path"]) == urls  # kept as written
    assert set(remote.frame["group_id"]) == {f"{n}_img" for n in SCENES}  # the stem
    first = remote.frame.iloc[0]
    assert int(first["tile_id"]) == int(
        tile_keys(
            first["image_path"],
            *[np.array([first[c]]) for c in ("row_off", "col_off", "height", "width")],
        )[0]
    )
    full = read_tile_table(remote_out, include_sources=True).frame
    north = full[full["group_id"] == "north_img"].iloc[0]
    st = (server.root / "north_mask.tif").stat()
    assert (int(north["mask_size"]), float(north["mask_mtime"])) == (st.st_size, int(st.st_mtime))
    # unchanged objects (same Content-Length and Last-Modified): nothing re-read
    before = len(server.log)
    res = runner.invoke(app, [*args, "--catalog", str(remote_out)])
    assert res.exit_code == 0, res.stderr
    assert "0 scanned (0 new, 0 changed), 2 unchanged skipped" in res.stdout
    assert not [r for r in server.log[before:] if r.method == "GET" and r.bytes > 64 * 1024]
    # a rewritten object (new Last-Modified): only that source is scanned again
    south = server.root / "south_mask.tif"
    later = south.stat().st_mtime + 10
    os.utime(south, (later, later))
    res = runner.invoke(app, [*args, "--catalog", str(remote_out)])
    assert res.exit_code == 0, res.stderr
    assert "1 scanned (0 new, 1 changed), 1 unchanged skipped" in res.stdout
    _assert_same_tiles(read_tile_table(remote_out), local)


@pytest.mark.db
def test_ingest_over_http_into_postgis_equals_local(
    server: Server, tmp_path: Path, fresh_database_url: str
) -> None:
    from smt_tools import catalog
    from smt_tools.pipelines.catalog_init import run_catalog_init

    run_catalog_init(fresh_database_url)
    remote_pairs = _remote_pairs(server, tmp_path / "job")
    res = runner.invoke(
        app,
        ["catalog", "ingest", str(remote_pairs), "--patch-size", str(PATCH),
         "--catalog", fresh_database_url, "--workers", "2"],
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    run_ingest(_local_pairs(server), catalog=fresh_database_url, patch_size=PATCH, workers=1)
    engine = catalog.connect(fresh_database_url)
    try:
        tiles = catalog.load_tiles(engine)
        sizes = catalog.source_fingerprints(engine)
    finally:
        engine.dispose()
    is_url = tiles.frame["image_path"].map(is_gdal_path).to_numpy()
    assert int(is_url.sum()) == int((~is_url).sum()) == 40
    remote = tiles.take(np.flatnonzero(is_url))
    _assert_same_tiles(remote, tiles.take(np.flatnonzero(~is_url)))
    assert set(remote.frame["image_path"]) == {server.url(f"{n}_img.tif") for n in SCENES}
    parquet = tmp_path / "remote.parquet"
    run_ingest(remote_pairs, catalog=str(parquet), patch_size=PATCH, workers=1)
    pq = read_tile_table(parquet)
    assert sorted(pq.frame["tile_id"]) == sorted(remote.frame["tile_id"])  # same ids in both
    url_rows = sizes[sizes["image_path"].map(is_gdal_path)]
    assert sorted(url_rows["image_size"].astype(int)) == sorted(
        (server.root / f"{n}_img.tif").stat().st_size for n in SCENES
    )


def test_balanced_split_and_training_read_the_urls(server: Server, tmp_path: Path) -> None:
    remote_pairs = _remote_pairs(server, tmp_path / "job")
    tiles = tmp_path / "remote.parquet"
    run_ingest(remote_pairs, catalog=str(tiles), patch_size=PATCH, workers=1)
    conf = tmp_path / "balanced.yaml"
    balanced_csv = tmp_path / "out" / "balanced.csv"
    conf.write_text(
        yaml.safe_dump(
            {
                "balanced_dataset": {
                    "input": {"tiles": str(tiles)},
                    "clustering": {"k_min": 1, "k_max": 2},
                    "output": {"csv_path": str(balanced_csv)},
                }
            }
        )
    )
    res = runner.invoke(app, ["build-balanced-dataset", str(conf)])
    assert res.exit_code == 0, res.stderr
    balanced = pd.read_csv(balanced_csv)
    urls = {server.url(f"{n}_img.tif") for n in SCENES}
    assert set(balanced["image_path"]) == urls
    # split carries the paths untouched
    split_conf = tmp_path / "split.yaml"
    folds_csv = tmp_path / "out" / "folds.csv"
    split_conf.write_text(
        yaml.safe_dump(
            {
                "split": {
                    "input_csv_path": str(balanced_csv),
                    "n_splits": 2,
                    "strategy": "group",
                    "output": {"csv_path": str(folds_csv)},
                }
            }
        )
    )
    res = runner.invoke(app, ["split", str(split_conf)])
    assert res.exit_code == 0, res.stderr
    folds = pd.read_csv(folds_csv)
    assert set(folds["image_path"]) == urls and set(folds["mask_path"]) == {
        server.url(f"{n}_mask.tif") for n in SCENES
    }
    assert folds.groupby("image_path")["fold"].nunique().max() == 1  # one fold per image
    res = runner.invoke(app, ["check-leakage", "--folds", str(folds_csv)])
    assert res.exit_code == 0, res.output  # the two scenes are 10 km apart, one fold each
    train, val = folds[folds["fold"] == 0], folds[folds["fold"] == 1]
    leaky = tmp_path / "val_leaky.csv"
    pd.concat([val, train.iloc[:1]]).to_csv(leaky, index=False)
    train.to_csv(tmp_path / "train.csv", index=False)
    from smt_tools.pipelines.leakage import run_check_leakage

    audit = run_check_leakage(train=tmp_path / "train.csv", val=leaky)
    shared = audit.summary()["checks"]["source_image"]
    assert (shared["status"], shared["items"]) == ("leak", 1)  # one image in both splits
    assert set(audit.frame["image_path"]) == urls  # carried as written
    # the training dataset reads a window over HTTP: the same tensors as from the local file,
    # fetching only byte ranges (far less than the file)
    from smt_tools.train.datasets import CSVWindowedSegmentationDataset

    local_csv = tmp_path / "local_balanced.csv"
    local = balanced.copy()
    for col in ("image_path", "mask_path"):
        local[col] = [str(server.root / Path(v.split("/")[-1])) for v in local[col]]
    local.to_csv(local_csv, index=False)
    kwargs = {"n_classes": 4, "class_values": [0, 1, 2, 3], "seed": 0}
    clear_remote_cache()
    before = len(server.log)
    remote_ds = CSVWindowedSegmentationDataset(balanced_csv, **kwargs)  # type: ignore[arg-type]
    local_ds = CSVWindowedSegmentationDataset(local_csv, **kwargs)  # type: ignore[arg-type]
    try:
        assert remote_ds.window(0)[0] in urls
        got, want = remote_ds[0], local_ds[0]
        for key in ("image", "mask"):
            assert got[key].shape == want[key].shape
            assert bool((got[key] == want[key]).all()), key
    finally:
        remote_ds.close()
        local_ds.close()
    image = Path(remote_ds.window(0)[0].split("/")[-1])
    served = [r for r in server.log[before:] if r.path == "/" + image.name and r.method == "GET"]
    assert served and all(r.status == 206 for r in served)
    assert sum(r.bytes for r in served) < (server.root / image).stat().st_size / 2


def test_patch_records_and_embedding_inputs_over_http(server: Server, tmp_path: Path) -> None:
    from smt_tools.embeddings.dataset import resolve_scale

    img, msk = server.url("north_img.tif"), server.url("north_mask.tif")
    records = tmp_path / "records.csv"
    records.write_text(
        "image_path,mask_path,row_off,col_off,patch_size\n"
        f"{img},{msk},0,0,64\n{img},{msk},128,64,64\n"
    )
    out = tmp_path / "out" / "b.csv"
    data = {"input": {"patch_records_csv": str(records)}, "output": {"csv_path": str(out)}}
    data["clustering"] = {"k_min": 1, "k_max": 2}
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump({"balanced_dataset": data}))
    res = runner.invoke(app, ["build-balanced-dataset", str(conf)])
    assert res.exit_code == 0, res.stderr
    got = pd.read_csv(out).sort_values("row_off").reset_index(drop=True)
    assert got["image_path"].tolist() == [img, img] and got["mask_path"].tolist() == [msk, msk]
    ids = tile_keys(img, np.array([0, 128]), np.array([0, 64]), *(np.array([64, 64]),) * 2)
    assert got["tile_id"].tolist() == ids.tolist()
    assert resolve_scale([img], [1, 2, 3], None) == (0.0, 255.0)  # embeddings open the URL
    gone = server.url("gone_img.tif")
    records.write_text(
        "image_path,mask_path,row_off,col_off,patch_size\n"
        f"{img},{msk},0,0,64\n{gone},{msk},0,0,64\n"
    )
    res = runner.invoke(app, ["build-balanced-dataset", str(conf)])
    assert res.exit_code == 1
    assert res.stderr.strip().splitlines() == [
        f"error: {records}[1].image_path: {gone}: cannot open the raster (GDAL: HTTP response "
        "code: 404); check the URL, that the object exists and your access to it (AWS_* / "
        "GDAL_HTTP_* settings: README 'Your own data')"
    ]


def test_missing_url_one_line_exit_1_nothing_written(server: Server, tmp_path: Path) -> None:
    job = tmp_path / "job"
    job.mkdir()
    missing = server.url("gone_img.tif")
    pairs = _pairs(job / "pairs.csv", [(missing, server.url("north_mask.tif"))])
    out = tmp_path / "t.parquet"
    res = runner.invoke(app, ["catalog", "ingest", str(pairs), "--catalog", str(out)])
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert f"pairs.csv: line 2: image {missing}: cannot open the raster" in lines[0]
    assert "HTTP response code: 404" in lines[0]
    assert "Traceback" not in res.output
    assert not out.exists()
    assert [r.status for r in server.log if r.path == "/gone_img.tif"][:1] == [404]


def test_url_credentials_are_never_printed(server: Server, tmp_path: Path) -> None:
    secret = server.url("gone.tif", auth="alice:s3cr3t-pw@")
    secret += "?X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature=deadbeef0123&v=1"
    job = tmp_path / "job"
    job.mkdir()
    pairs = _pairs(job / "pairs.csv", [(secret, secret)])
    res = runner.invoke(app, ["catalog", "ingest", str(pairs), "--catalog", str(tmp_path / "t.parquet")])  # fmt: skip
    assert res.exit_code == 1
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    for leaked in ("s3cr3t", "AKIAEXAMPLE", "deadbeef0123"):
        assert leaked not in res.output
    assert f"http://alice:***@127.0.0.1:{server.port}/gone.tif?X-Amz-Credential=***" in res.stderr
    assert "X-Amz-Signature=***&v=1" in res.stderr
