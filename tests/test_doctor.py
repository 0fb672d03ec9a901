"""``pytorch-smt-tools doctor``: real versions, a real PostGIS, exit 0 / 1 with the failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import psycopg
import pyproj
import pytest
import rasterio
from typer.testing import CliRunner

from smt_tools import __version__
from smt_tools.cli.app import app

runner = CliRunner()


def _doctor(*args: str) -> tuple[int, str, str]:
    res = runner.invoke(app, ["doctor", *args])
    return res.exit_code, res.stdout, res.stderr


def _line(out: str, name: str) -> str:
    return next(ln for ln in out.splitlines() if ln[5:].startswith(name + " "))


def test_versions_and_no_catalog(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SMT_DATABASE_URL", raising=False)
    code, out, err = _doctor("--json", str(tmp_path / "d.json"))
    assert code == 0, out + err
    assert _line(out, "smt-tools").split()[-1] == __version__
    assert _line(out, "GDAL").split()[2] == rasterio.__gdal_version__
    assert _line(out, "PROJ").split()[2] == pyproj.proj_version_str
    assert _line(out, "numpy").split()[-1] == np.__version__
    assert _line(out, "kNN backend hnsw (default)").startswith("ok ")
    assert "not configured" in _line(out, "catalog")
    assert out.rstrip().endswith("Everything needed is there.")
    rec = json.loads((tmp_path / "d.json").read_text())
    s = rec["summary"]
    assert rec["command"] == "doctor" and rec["exit_code"] == 0
    assert s["ok"] is True and s["failed"] == []
    assert s["checks"]["GDAL"]["value"].startswith(rasterio.__gdal_version__)
    import torch  # installed in this environment (extras "all")

    assert s["checks"]["torch"] == {
        "ok": True, "value": torch.__version__, "required": False, "fix": ""
    }  # fmt: skip
    assert s["checks"]["CUDA"]["ok"] is torch.cuda.is_available()


def test_catalog_unmigrated_then_migrated(fresh_database_url: str) -> None:
    url = fresh_database_url
    code, out, err = _doctor("--catalog", url)
    assert code == 1
    assert _line(out, "catalog").startswith("ok ") and "reachable" in out
    assert _line(out, "catalog schema").startswith("FAIL")
    assert err.splitlines()[-1] == "1 check(s) failed"
    assert "error: catalog schema: Catalog schema missing" in err
    assert runner.invoke(app, ["catalog", "init", "--catalog", url]).exit_code == 0
    code, out, err = _doctor("--catalog", url)
    assert code == 0, out + err
    with psycopg.connect(url) as conn:
        postgis = conn.execute(
            "select extversion from pg_extension where extname = 'postgis'"
        ).fetchone()
    assert postgis is not None
    assert _line(out, "PostGIS").split()[-1] == postgis[0]
    assert "migrated (" in _line(out, "catalog schema")


def test_unreachable_catalog_fails_without_password() -> None:
    code, out, err = _doctor("--catalog", "postgresql://u:s3cret@127.0.0.1:1/x")
    assert code == 1
    assert _line(out, "catalog").startswith("FAIL") and "cannot connect" in out
    assert "s3cret" not in out + err


def _with_shadow(tmp_path: Path, module: str) -> subprocess.CompletedProcess[str]:
    """Run ``doctor`` in a fresh interpreter where ``module`` is a broken install."""
    shadow = tmp_path / "shadow"
    shadow.mkdir(exist_ok=True)
    (shadow / f"{module}.py").write_text(f"raise ImportError('{module} is broken here')\n")
    env = {k: v for k, v in os.environ.items() if k != "SMT_DATABASE_URL"}
    env["PYTHONPATH"] = os.pathsep.join([str(shadow), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "smt_tools", "doctor"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_broken_hnswlib_falls_back_to_the_next_default_backend(tmp_path: Path) -> None:
    """backend auto on CPU: hnsw when hnswlib imports, else faiss (then sklearn)."""
    res = _with_shadow(tmp_path, "hnswlib")
    assert res.returncode == 0, res.stdout + res.stderr
    assert _line(res.stdout, "kNN backend faiss (default)").startswith("ok")


def test_broken_torch_is_reported_not_failed(tmp_path: Path) -> None:
    res = _with_shadow(tmp_path, "torch")
    assert res.returncode == 0, res.stdout + res.stderr
    assert _line(res.stdout, "torch").startswith("--")
    assert "not importable (ImportError: torch is broken here)" in res.stdout
