"""Shared fixtures: synthetic GeoTIFFs and a real PostGIS database.

Database tests use ``SMT_TEST_DATABASE_URL`` (``make test`` provisions it). Without it they are
skipped locally, but under ``CI=true`` a missing database is a failure, never a skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from smt_tools.raster.demo_data import make_demo_data


def _require_db_url() -> str:
    url = os.environ.get("SMT_TEST_DATABASE_URL")
    if url:
        return url
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("CI=true but SMT_TEST_DATABASE_URL is not set: database tests must run in CI")
    pytest.skip("SMT_TEST_DATABASE_URL not set (run `make test` to provision a PostGIS database)")


@pytest.fixture(scope="session")
def test_database_url() -> str:
    """URL of the provisioned PostGIS test database (skip locally / fail in CI when absent)."""
    url = _require_db_url()
    import psycopg

    try:
        with psycopg.connect(_libpq(url), connect_timeout=5) as conn:
            conn.execute("select postgis_version()")
    except Exception as exc:  # pragma: no cover - environment problem
        pytest.fail(f"test database {url} unusable: {exc}")
    return url


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture
def fresh_database_url(test_database_url: str) -> Iterator[str]:
    """A brand-new empty database with PostGIS on the test server, dropped afterwards."""
    import psycopg
    from psycopg import sql

    base = _libpq(test_database_url)
    name = f"smt_t_{uuid.uuid4().hex[:10]}"
    admin = base.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    url = base.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create extension if not exists postgis")
    try:
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small demo data set (4 scenes of 512 px; scene 3 revisits scene 0). Do not modify."""
    out = tmp_path_factory.mktemp("demo")
    make_demo_data(out, scenes=4, size=512, seed=0)
    return out


@pytest.fixture(scope="session")
def demo_pairs(demo_dir: Path) -> Path:
    return demo_dir / "pairs.csv"
