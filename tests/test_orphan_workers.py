"""Issue 11 B10: ``kill -9`` of a ``--workers N`` ingest leaves no orphaned worker and no idle
database session behind. Real processes, /proc, and a real PostGIS server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from smt_tools.raster.demo_data import make_demo_data
from tests.fault_helpers import CLI, alive, children, cli_env, wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


@pytest.fixture(scope="module")
def big_pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 scenes of 1024 px: with 4 px tiles a scan takes many seconds (262k windows)."""
    return make_demo_data(tmp_path_factory.mktemp("orphans"), scenes=4, size=1024, seed=1)


def _start_ingest(pairs: Path, catalog: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, "catalog", "ingest", str(pairs), "--patch-size", "4", "--workers", "2",
         "--nodata-class", "-1", "--catalog", catalog],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=cli_env(),
    )  # fmt: skip


def _kill_mid_scan(proc: subprocess.Popen[str]) -> list[int]:
    """SIGKILL ``proc`` once its 2 scan workers run; return the workers' pids."""
    assert wait_until(lambda: len(children(proc.pid)) >= 2 or proc.poll() is not None, 120)
    workers = children(proc.pid)
    assert proc.poll() is None and len(workers) >= 2, "the scan ended before it could be killed"
    time.sleep(0.5)  # mid-scan: the workers are reading windows
    assert all(alive(w) for w in workers)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    return workers


def test_killed_parquet_ingest_leaves_no_worker(big_pairs: Path, tmp_path: Path) -> None:
    proc = _start_ingest(big_pairs, str(tmp_path / "t.parquet"))
    workers = _kill_mid_scan(proc)
    assert wait_until(lambda: not any(alive(w) for w in workers), 5), [
        w for w in workers if alive(w)
    ]
    assert not (tmp_path / "t.parquet").exists()  # nothing half-written


@pytest.mark.db
def test_killed_postgis_ingest_leaves_no_worker_and_no_session(
    big_pairs: Path, fresh_database_url: str
) -> None:
    import psycopg

    assert subprocess.run(
        [*CLI, "catalog", "init", "--catalog", fresh_database_url],
        capture_output=True, env=cli_env(), timeout=120,
    ).returncode == 0  # fmt: skip
    dbname = fresh_database_url.rsplit("/", 1)[1]

    def sessions() -> int:
        with psycopg.connect(fresh_database_url, autocommit=True) as conn:
            row = conn.execute(
                "select count(*) from pg_stat_activity where datname = %s and "
                "application_name = 'smt-tools'",
                (dbname,),
            ).fetchone()
            assert row is not None
            return int(row[0])

    proc = _start_ingest(big_pairs, fresh_database_url)
    workers = _kill_mid_scan(proc)
    assert wait_until(lambda: not any(alive(w) for w in workers), 5)
    # the parent's session (and copies a forked worker would have held) are gone with them
    assert wait_until(lambda: sessions() == 0, 10), sessions()
    with psycopg.connect(fresh_database_url) as conn:
        assert conn.execute("select count(*) from tile").fetchone() == (0,)  # one transaction


def test_workers_fallback_without_prctl_polls_the_parent(tmp_path: Path) -> None:
    """Where prctl is unavailable, a daemon thread notices the parent is gone."""
    script = textwrap.dedent(
        """
        import os, sys, time
        from smt_tools import workers
        pid = os.fork()
        if pid == 0:
            workers._prctl_pdeathsig = lambda sig: False  # as on a system without prctl
            workers.die_with_parent(os.getppid(), poll_interval_s=0.1)
            time.sleep(60)
            os._exit(0)
        print(pid, flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=cli_env()
    )
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    assert alive(child)
    time.sleep(0.3)
    assert alive(child)  # the watcher does not fire while the parent lives
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert wait_until(lambda: not alive(child), 5)


def test_forked_child_does_not_hold_the_parent_connection(test_database_url: str) -> None:
    """After a fork the child closes its copy of the catalog socket and gets an empty pool;
    the parent's session keeps working."""
    from sqlalchemy import text

    from smt_tools.catalog import connect

    engine = connect(test_database_url)
    try:
        with engine.connect() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            fd = raw.pgconn.socket
            backend = conn.execute(text("select pg_backend_pid()")).scalar_one()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: the inherited socket must be closed
            os.close(r)
            try:
                os.fstat(fd)
                verdict = b"open"
            except OSError:
                verdict = b"closed"
            os.write(w, verdict)
            os._exit(0)
        os.close(w)
        got = os.read(r, 16)
        os.close(r)
        os.waitpid(pid, 0)
        assert got == b"closed"
        with engine.connect() as conn:  # the parent's pooled session still works
            assert conn.execute(text("select pg_backend_pid()")).scalar_one() == backend
    finally:
        engine.dispose()
