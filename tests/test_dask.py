"""Ingest on a Dask cluster (``--scheduler``): the same tiles as the local pool, retried when a
worker dies, bad input named as locally. A real ``LocalCluster`` of two worker processes."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

distributed = pytest.importorskip("distributed")

from smt_tools.catalog.store import open_store  # noqa: E402
from smt_tools.catalog.store_types import TileQuery  # noqa: E402
from smt_tools.errors import ConfigError, InputDataError  # noqa: E402
from smt_tools.pipelines.ingest import run_ingest  # noqa: E402
from smt_tools.raster import scan_dask  # noqa: E402
from smt_tools.raster.scan_dask import row_bands  # noqa: E402
from smt_tools.raster.tiling import tile_windows  # noqa: E402
from tests.catalog_data import write_pairs_csv  # noqa: E402
from tests.rasters import write_pair  # noqa: E402


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """Two worker processes (each behind a nanny that restarts it when it dies)."""
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as c:
        yield c


@pytest.fixture
def catalog_url(fresh_database_url: str) -> str:
    """A fresh database with the catalog schema applied."""
    from smt_tools import catalog as cat

    engine = cat.connect(fresh_database_url)
    try:
        cat.apply_migrations(engine)
    finally:
        engine.dispose()
    return fresh_database_url


def _ingest(pairs: Path, catalog: str, scheduler: str | None = None, **kw: Any) -> Any:
    return run_ingest(
        pairs, catalog=catalog, patch_size=64, nodata_class=0, workers=1, scheduler=scheduler, **kw
    )


def _tiles(ref: str) -> pd.DataFrame:
    """Every tile of a store as a frame sorted by tile id, with its histogram by class value."""
    with open_store(ref) as store:
        table = store.read_tiles(TileQuery())
    frame = table.frame.sort_values("tile_id").reset_index(drop=True)
    counts = table.counts[table.frame["tile_id"].argsort(kind="stable").to_numpy()]
    for j, v in enumerate(table.class_values):
        frame[f"class_{int(v)}"] = counts[:, j]
    return frame


def test_row_bands_cut_between_rows_only() -> None:
    win = tile_windows(2560, 1280, 256)  # 5 rows of 10 windows
    assert row_bands(win, 25) == [slice(0, 20), slice(20, 40), slice(40, 50)]
    assert row_bands(win, 50) == [slice(0, 50)]
    assert row_bands(win, 4) == [slice(i, i + 10) for i in range(0, 50, 10)]  # a row is whole


def test_distributed_ingest_writes_what_a_local_ingest_writes(
    cluster: Any,
    demo_pairs: Path,
    tmp_path: Path,
    catalog_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(scan_dask, "BAND_TILES", 24)  # 512 px scenes, 64 px tiles: 3 bands each
    local = _ingest(demo_pairs, str(tmp_path / "local.parquet"))
    on_dask = _ingest(demo_pairs, str(tmp_path / "dask.parquet"), cluster.scheduler_address)
    assert on_dask.scanned_on == f"dask {cluster.scheduler_address} (2 workers)"
    assert local.scanned_on == "local"
    assert on_dask.tiles_written == local.tiles_written == 4 * 64
    a = pd.read_parquet(tmp_path / "local.parquet")
    b = pd.read_parquet(tmp_path / "dask.parquet")
    pd.testing.assert_frame_equal(a, b)  # same ids, windows, histograms, flags, row order
    # into PostGIS: the same tiles as the local Parquet table, class by class
    pg = _ingest(demo_pairs, catalog_url, cluster.scheduler_address)
    assert pg.tiles_written == 4 * 64
    want, got = _tiles(str(tmp_path / "local.parquet")), _tiles(catalog_url)
    cols = ["tile_id", "row_off", "col_off", "valid_pixels", "has_mask_border_nodata"]
    cols += [c for c in want.columns if c.startswith("class_")]
    pd.testing.assert_frame_equal(want[cols], got[cols], check_dtype=False)
    # incremental: nothing changed, nothing scanned
    again = _ingest(demo_pairs, catalog_url, cluster.scheduler_address)
    assert (again.images_skipped, again.tiles_written) == (4, 0)


class _KillOnce(distributed.WorkerPlugin):  # type: ignore[misc]
    """Ends the worker process the first time a scan task starts on it (a marker file makes
    it once per test, across the restarted workers)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if finish == "executing" and str(key).startswith("smt-scan-"):
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            os.write(fd, str(key).encode())
            os.close(fd)
            os._exit(1)  # the worker dies mid-ingest, holding a task


def test_worker_killed_mid_ingest_is_retried_nothing_lost_or_doubled(
    cluster: Any, demo_pairs: Path, tmp_path: Path
) -> None:
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    marker = tmp_path / "killed"
    with distributed.Client(cluster) as client:
        client.register_plugin(_KillOnce(str(marker)), name="kill-once")
        try:
            r = _ingest(demo_pairs, str(tmp_path / "dask.parquet"), cluster.scheduler_address)
        finally:
            client.unregister_worker_plugin("kill-once")
        client.wait_for_workers(2, timeout=60)  # the nanny restarted the dead worker
    assert marker.read_text().startswith("smt-scan-")  # a worker really died holding a task
    _ingest(demo_pairs, str(tmp_path / "local.parquet"))
    a = pd.read_parquet(tmp_path / "local.parquet")
    b = pd.read_parquet(tmp_path / "dask.parquet")
    assert r.tiles_written == len(b) == 4 * 64 and b["tile_id"].is_unique
    pd.testing.assert_frame_equal(a, b)


def test_bad_mask_on_a_worker_is_named_and_nothing_is_written(cluster: Any, tmp_path: Path) -> None:
    ok = write_pair(tmp_path, "ok", np.ones((128, 128), np.uint8))
    mask = np.ones((512, 512), np.int32)
    mask[0, 0] = 70_000  # outside the inspection's pixel sample: only the scan meets it
    bad = write_pair(tmp_path, "bad", mask, origin=(600_000.0, 5_000_000.0))
    pairs = write_pairs_csv(
        tmp_path / "pairs.csv", [(ok[0].name, ok[1].name), (bad[0].name, bad[1].name)]
    )
    target = tmp_path / "t.parquet"
    with pytest.raises(InputDataError, match=r"bad_mask\.tif: .*70000"):
        _ingest(pairs, str(target), cluster.scheduler_address)
    assert not target.exists()


def test_scheduler_from_environment_and_bad_addresses(
    demo_pairs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMT_DASK_SCHEDULER", "local:0")
    with pytest.raises(ConfigError, match=r"^--scheduler local:0: expected local or local:N"):
        _ingest(demo_pairs, str(tmp_path / "t.parquet"))
    monkeypatch.setenv("SMT_DASK_SCHEDULER", "")  # empty: the local pool
    assert _ingest(demo_pairs, str(tmp_path / "t.parquet")).scanned_on == "local"


def test_distributed_embeddings_equal_local_cache(
    cluster: Any, demo_pairs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("transformers")
    import pyarrow.parquet as pq

    from smt_tools.config.balanced import EmbeddingsConfig
    from smt_tools.embeddings import dask_embed
    from smt_tools.embeddings.cache import parts_dir
    from smt_tools.pipelines.embed import ensure_embeddings
    from tests.test_embeddings import save_tiny_dinov2

    model = save_tiny_dinov2(tmp_path / "tiny")
    _ingest(demo_pairs, str(tmp_path / "t.parquet"))
    frame = pd.read_parquet(tmp_path / "t.parquet")

    def ecfg(cache: Path) -> EmbeddingsConfig:
        return EmbeddingsConfig.model_validate(
            {
                "dino_model": str(model),
                "batch_size": 16,
                "num_workers": 0,
                "parquet_path": str(cache),
            }
        )

    emb_local, r_local = ensure_embeddings(frame, ecfg(tmp_path / "local.parquet"))
    monkeypatch.setattr(dask_embed, "PARTITION_ROWS", 50)  # 256 tiles: 6 tasks, 6 cache parts
    parts: list[int] = []
    real_compact = __import__("smt_tools.embeddings.cache", fromlist=["compact"]).compact

    def count_parts_then_compact(path: Any) -> int:
        parts.append(len(list(parts_dir(path).glob("part-*.parquet"))))
        return int(real_compact(path))

    monkeypatch.setattr("smt_tools.embeddings.cache.compact", count_parts_then_compact)
    emb_dask, r_dask = ensure_embeddings(
        frame, ecfg(tmp_path / "dask.parquet"), scheduler=cluster.scheduler_address
    )
    assert parts == [6]  # the workers wrote one part per task; the driver merged them
    assert r_dask.device == f"dask 2 workers: cpu ({cluster.scheduler_address})"
    assert (r_dask.n_computed, r_dask.cache_rows) == (256, 256) == (r_local.n_computed, 256)
    np.testing.assert_allclose(emb_dask, emb_local, rtol=1e-5, atol=1e-5)
    a = pq.read_table(tmp_path / "local.parquet").to_pandas()
    b = pq.read_table(tmp_path / "dask.parquet").to_pandas()
    assert a["tile_id"].tolist() == b["tile_id"].tolist()  # sorted by tile id, each once
    assert (a["preprocess_hash"] == b["preprocess_hash"]).all()
    np.testing.assert_allclose(
        np.stack(a["embedding"].to_numpy()), np.stack(b["embedding"].to_numpy()), atol=1e-5
    )
    # everything cached now: a second cluster run computes nothing
    _, again = ensure_embeddings(
        frame, ecfg(tmp_path / "dask.parquet"), scheduler=cluster.scheduler_address
    )
    assert (again.n_cached, again.n_computed) == (256, 0)


def test_compose_dask_profile_is_opt_in_and_mounts_data_at_the_same_path() -> None:
    import yaml

    root = Path(__file__).parents[1]
    services = yaml.safe_load((root / "docker-compose.yml").read_text())["services"]
    assert "profiles" not in services["postgis"]  # `docker compose up` alone: PostGIS only
    sched, worker = services["dask-scheduler"], services["dask-worker"]
    assert sched["profiles"] == worker["profiles"] == ["dask"]
    assert sched["build"] == "." and worker["image"] == sched["image"]
    assert "127.0.0.1:8786:8786" in sched["ports"]
    assert worker["command"][:3] == ["dask", "worker", "tcp://dask-scheduler:8786"]
    same = "${SMT_DATA_DIR:-/srv/smt-data}"
    assert worker["volumes"] == [f"{same}:{same}"]  # the workers resolve the driver's paths
    dockerfile = (root / "Dockerfile").read_text()
    assert 'pip install --no-cache-dir ".[${SMT_EXTRAS}]"' in dockerfile
    assert "ARG SMT_EXTRAS=dask" in dockerfile


def test_scheduler_without_dask_installed_is_one_line(tmp_path: Path) -> None:
    import subprocess

    code = (
        "import sys; sys.modules['distributed'] = None\n"
        "from smt_tools.cli.app import main\n"
        f"sys.exit(main(['catalog', 'ingest', r'{tmp_path / 'p.csv'}', '--catalog', "
        f"r'{tmp_path / 't.parquet'}', '--scheduler', 'local:2']))\n"
    )
    (tmp_path / "p.csv").write_text("image,mask\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        "error: --scheduler needs the optional package 'dask[distributed]', which is not "
        'installed; install it with: pip install "smt-tools[dask]"'
    )


def test_cli_ingest_on_the_cluster_says_where_it_ran(
    cluster: Any, demo_pairs: Path, tmp_path: Path
) -> None:
    from tests.test_ingest import invoke

    table = tmp_path / "t.parquet"
    addr = cluster.scheduler_address
    code, out, err = invoke(
        "catalog", "ingest", str(demo_pairs), "--patch-size", "128", "--catalog", str(table),
        "--scheduler", addr,
    )  # fmt: skip
    assert code == 0, err
    assert f"on dask {addr} (2 workers)" in out
    assert len(pd.read_parquet(table)) == 4 * 16


def test_embed_dry_run_names_where_it_would_run(
    demo_pairs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan says where the embeddings would be computed: the cluster named by --scheduler
    (else $SMT_DASK_SCHEDULER), or this machine; nothing connects to it."""
    import yaml

    from tests.test_ingest import invoke

    _ingest(demo_pairs, str(tmp_path / "t.parquet"))
    cfg = tmp_path / "c.yaml"
    body = {
        "balanced_dataset": {
            "mode": "embeddings",
            "input": {"tiles": str(tmp_path / "t.parquet")},
            "embeddings": {"dino_model": str(tmp_path), "parquet_path": str(tmp_path / "e.pq")},
            "output": {"csv_path": str(tmp_path / "b.csv")},
        }
    }
    cfg.write_text(yaml.safe_dump(body))
    monkeypatch.delenv("SMT_DASK_SCHEDULER", raising=False)
    code, out, err = invoke("embed", str(cfg), "--dry-run")
    assert code == 0, err
    assert "  setting  run on: this machine (no --scheduler)" in out.splitlines()
    code, out, err = invoke("embed", str(cfg), "--dry-run", "--scheduler", "tcp://10.0.0.9:8786")
    assert code == 0, err
    assert "  setting  run on: the Dask cluster tcp://10.0.0.9:8786" in out.splitlines()
    monkeypatch.setenv("SMT_DASK_SCHEDULER", "tcp://10.0.0.7:8786")
    code, out, err = invoke("embed", str(cfg), "--dry-run")
    assert code == 0, err
    assert "  setting  run on: the Dask cluster tcp://10.0.0.7:8786" in out.splitlines()
