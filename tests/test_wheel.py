"""The wheel works on its own: built from the sources, installed (not editable) into a fresh venv.

The venv uses ``--system-site-packages`` so the dependencies come from this machine (no network),
but ``smt_tools`` itself must be imported from the wheel installed in the venv, never from this
checkout. Every command runs with a temporary working directory outside the repository, so
nothing can be found through the current directory either.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "smt_tools"
MIGRATIONS = sorted(p.name for p in (PACKAGE / "migrations").glob("*.sql"))
EXAMPLES = sorted(p.name for p in (PACKAGE / "examples").glob("*.yaml"))


def _run(args: list[str | Path], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a command; fail the test with its output unless it exits 0. Returns stdout."""
    res = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env if env is not None else _env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, f"{args} exited {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res.stdout


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "SMT_DATABASE_URL"}}
    env.update({"COLUMNS": "100", "NO_COLOR": "1", **extra})
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of what a source distribution needs (no build isolation)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(PACKAGE, src / "smt_tools", ignore=shutil.ignore_patterns("__pycache__"))
    out = root / "dist"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            out,
            src,
        ],
        cwd=root,
    )
    (whl,) = out.glob("smt_tools-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed; returns its ``bin`` folder."""
    root = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", "env"], root)
    bin_dir = root / "env" / "bin"
    # pip from the base interpreter (visible through --system-site-packages) installs into the
    # venv; --ignore-installed: the editable install of this checkout must not satisfy it
    _run(
        [
            bin_dir / "python",
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            "--ignore-installed",
            wheel,
        ],
        cwd=root,
    )
    return bin_dir


def test_wheel_carries_migrations_and_examples(wheel: Path) -> None:
    assert MIGRATIONS[:4] == [
        "0001_catalog.sql",
        "0002_mask_band.sql",
        "0003_pixel_space_footprints.sql",
        "0004_scan_rules.sql",
    ]
    assert {"balanced_train.yaml", "balanced_postgres.yaml"} <= set(EXAMPLES)
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for sub, files in (("migrations", MIGRATIONS), ("examples", EXAMPLES)):
            shipped = sorted(n.split("/")[-1] for n in names if n.startswith(f"smt_tools/{sub}/"))
            assert shipped == files
            for f in files:  # the same bytes as the one copy in the source tree
                assert zf.read(f"smt_tools/{sub}/{f}") == (PACKAGE / sub / f).read_bytes()
        assert "smt_tools/py.typed" in names
        assert not any(n.startswith(("tests/", "conf/", "migrations/")) for n in names)
    # conf/examples in the source tree is a link to the packaged files, not a second copy
    conf = REPO / "conf" / "examples"
    assert conf.is_symlink() and conf.resolve() == (PACKAGE / "examples").resolve()


@pytest.mark.db
def test_wheel_install_runs_catalog_init_ingest_and_an_example(
    venv: Path, fresh_database_url: str, tmp_path: Path
) -> None:
    import psycopg

    work = tmp_path / "work"  # cwd outside the repository
    work.mkdir()
    python, cli = venv / "python", venv / "pytorch-smt-tools"
    site = _run(
        [
            python,
            "-c",
            "import json, smt_tools, smt_tools.resources as r; from importlib import metadata; "
            "d = metadata.distribution('smt-tools'); "
            "print(json.dumps([smt_tools.__file__, str(r.examples_dir()), "
            "str(r.migrations_dir()), d.read_text('direct_url.json')]))",
        ],
        cwd=work,
    )
    module_file, examples, migrations, direct_url = json.loads(site)
    venv_root = venv.parent.resolve()
    pkg = Path(module_file).resolve().parent
    assert pkg.is_relative_to(venv_root) and not pkg.is_relative_to(REPO)
    assert Path(examples) == pkg / "examples" and Path(migrations) == pkg / "migrations"
    assert "editable" not in json.loads(direct_url).get("dir_info", {})
    assert json.loads(direct_url)["url"].endswith(".whl")
    assert cli.read_text().splitlines()[0] == f"#!{venv / 'python'}"

    out = _run([cli, "catalog", "init", "--catalog", fresh_database_url], cwd=work)
    for name in MIGRATIONS:
        assert f"applied          {name}" in out
    assert f"{len(MIGRATIONS)} migration(s) applied" in out

    out = _run([cli, "make-demo-data", "demo", "--scenes", "4", "--size", "512"], cwd=work)
    assert "Wrote 4 scenes of 512x512 px" in out
    out = _run(
        [
            cli,
            "catalog",
            "ingest",
            "demo/pairs.csv",
            "--patch-size",
            "256",
            "--nodata-class",
            "0",
            "--class-names",
            "demo/classes.csv",
            "--catalog",
            fresh_database_url,
        ],
        cwd=work,
    )
    assert "Images: 4 listed, 4 scanned (4 new, 0 changed)" in out
    assert "now holds 16 tiles of 4 source images" in out

    # the packaged example, as shipped, by the path the installed package exposes
    out = _run(
        [cli, "build-balanced-dataset", Path(examples) / "balanced_postgres.yaml"],
        cwd=work,
        env=_env(SMT_DATABASE_URL=fresh_database_url),
    )
    assert "Tiles: 14 in, 2 excluded (image_black_border 2), 12 weighted" in out
    assert "Recorded catalog run 1 (14 tile results)" in out
    csv = pd.read_csv(work / "demo" / "balanced_postgres.csv")
    assert len(csv) == 14 and int(csv["excluded"].sum()) == 2
    assert csv["sampler_weight"].max() == pytest.approx(1.0)
    assert (csv.loc[csv["excluded"], "sampler_weight"] == 0).all()
    assert (work / "demo" / "balanced_postgres.geojson").is_file()
    assert (work / "demo" / "balanced_postgres.qml").is_file()

    with psycopg.connect(fresh_database_url) as conn:
        applied = [r[0] for r in conn.execute("select filename from schema_migrations order by 1")]
        tiles = conn.execute("select count(*) from tile").fetchone()
        kept = conn.execute("select count(*) from tile where nodata_ratio < 0.05").fetchone()
        results = conn.execute("select count(*) from tile_result").fetchone()
    assert applied == MIGRATIONS
    assert tiles == (16,) and kept == (14,) and results == (14,)


def test_make_demo_reinstalls_only_when_pyproject_changed(tmp_path: Path) -> None:
    make = shutil.which("make")
    if make is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but `make` is not installed")
        pytest.skip("make not installed")
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(REPO / name, tmp_path / name)
    stamp, pyproject = tmp_path / ".install.stamp", tmp_path / "pyproject.toml"

    def planned() -> str:  # what `make demo` would run (-n: print, run nothing)
        return _run([make, "-n", "demo"], cwd=tmp_path)

    install = "pip install -e"
    assert install in planned()  # never installed
    os.utime(pyproject, (1_000_000, 1_000_000))
    stamp.touch()
    out = planned()
    assert install not in out and "pip install" not in out
    assert "pytorch-smt-tools make-demo-data demo/" in out
    assert "build-balanced-dataset conf/examples/balanced_train.yaml" in out
    os.utime(stamp, (500_000, 500_000))  # pyproject.toml edited after the last install
    assert install in planned()
    # `make install` always installs, whatever the stamp says
    stamp.touch()
    assert install in _run([make, "-n", "install"], cwd=tmp_path)
    assert (REPO / ".gitignore").read_text().splitlines().count("/.install.stamp") == 1


def test_torch_extras_have_no_upper_cap() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    from packaging.requirements import Requirement
    from packaging.version import Version

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    torch = [Requirement(r) for group in extras.values() for r in group if r.startswith("torch")]
    assert len(torch) == 2
    for req in torch:
        assert Version("2.13.0") in req.specifier and Version("3.0") in req.specifier
        assert not req.specifier.contains("2.0.1")


def test_migrations_are_read_through_importlib_resources(tmp_path: Path) -> None:
    from smt_tools.catalog import MIGRATIONS_DIR, migration_files
    from smt_tools.errors import CatalogError
    from smt_tools.resources import example_names, migrations_dir

    assert str(MIGRATIONS_DIR) == str(migrations_dir()) == str(PACKAGE / "migrations")
    assert [m.filename for m in migration_files()] == MIGRATIONS
    assert example_names() == EXAMPLES
    # an explicit folder: NNNN_name.sql only, in name order
    (tmp_path / "0002_b.sql").write_text("select 2;")
    (tmp_path / "0001_a.sql").write_text("select 1;")
    (tmp_path / "notes.sql").write_text("-- not a migration")
    assert [(m.filename, m.sql) for m in migration_files(tmp_path)] == [
        ("0001_a.sql", "select 1;"),
        ("0002_b.sql", "select 2;"),
    ]
    with pytest.raises(CatalogError, match=r"migrations folder .*nope not found: .*reinstall"):
        migration_files(tmp_path / "nope")
