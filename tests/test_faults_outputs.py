"""Issue 11 B7/B8/B9: no data lost to concurrent ingests, outputs never overwrite inputs, and
output-side OS errors (not writable, parent is a file, disk full) are one line before/without
a traceback, with no temporary files left behind. Real processes, real mounts, real files."""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from smt_tools import atomic
from smt_tools.atomic import atomic_path, clean_stale, file_lock, target_of
from smt_tools.catalog.parquet_io import read_tile_table, tile_table_lock
from smt_tools.cli.app import app
from smt_tools.errors import ConfigError, OutputError
from smt_tools.export.preflight import check_outputs
from smt_tools.pipelines.ingest import run_ingest
from tests.fault_helpers import (
    CLI,
    cli_env,
    dead_pid,
    is_root,
    scenes,
    tmpfs,
    wait_until,
    write_yaml,
)

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str, str]:
    res = runner.invoke(app, list(args))
    return res.exit_code, res.stdout, res.stderr


def one_line_error(code: int, err: str) -> str:
    """The single ``error:`` line of a failed run (warnings and progress lines aside)."""
    assert code == 1, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def images_in(path: Path) -> list[str]:
    frame = read_tile_table(path).frame
    return sorted(Path(p).name for p in frame["image_path"].unique())


def leftovers(folder: Path) -> list[str]:
    """Temporary, staging or lock files in ``folder`` (recursively)."""
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if re.search(r"\.(part|staging|lock)(\.|$)", p.name) or p.name.startswith(".smt-probe")
    )


@pytest.fixture(scope="module")
def tiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local tile table of 4 scenes (64 tiles of 16 px)."""
    folder = tmp_path_factory.mktemp("h3tiles")
    pairs = scenes(folder, ["s0", "s1", "s2", "s3"], size=64)
    out = folder / "tiles.parquet"
    run_ingest(pairs, catalog=str(out), patch_size=16, workers=1, nodata_class=None)
    return out


def balanced_yaml(folder: Path, tiles: Path, **output: object) -> Path:
    out = {"csv_path": str(folder / "out" / "b.csv"), **output}
    data = {
        "balanced_dataset": {
            "input": {"tiles": str(tiles)},
            "clustering": {"k_selection": "fixed", "k": 2},
            "exclusion": {"exclude_border_nodata": False, "exclude_black_border": False},
            "output": out,
        }
    }
    return write_yaml(folder / "b.yaml", data)


# ------------------------------------------------------------------------------------ B7


def test_ingest_waits_for_the_lock_then_merges_onto_the_other_result(tmp_path: Path) -> None:
    """The lock is held from BEFORE the existing table is read: an ingest that starts while
    another holds it merges onto that other's result (the old code read the table first and
    dropped the rows written meanwhile)."""
    data = tmp_path / "data"
    x = scenes(data, ["x1", "x2"], seed=1)
    y = scenes(data, ["y1"], seed=2)
    z = scenes(data, ["z1"], seed=3)
    table = tmp_path / "t.parquet"
    run_ingest(x, catalog=str(table), patch_size=16, workers=1, nodata_class=None)
    other = tmp_path / "xz.parquet"  # what a concurrent ingest of z would have produced
    run_ingest(x, catalog=str(other), patch_size=16, workers=1, nodata_class=None)
    run_ingest(z, catalog=str(other), patch_size=16, workers=1, nodata_class=None)
    errlog = tmp_path / "stderr.txt"
    with tile_table_lock(table, "test holds"):
        with errlog.open("w") as fh:
            proc = subprocess.Popen(
                [*CLI, "catalog", "ingest", str(y), "--patch-size", "16", "--nodata-class", "-1",
                 "--workers", "1", "--catalog", str(table)],
                stdout=subprocess.PIPE, stderr=fh, text=True, env=cli_env(),
            )  # fmt: skip
        assert wait_until(lambda: "waiting for the lock" in errlog.read_text(), 60), (
            errlog.read_text()
        )
        note = errlog.read_text()
        assert f"{table}.lock held by pid {os.getpid()}" in note, note
        assert proc.poll() is None  # still waiting, has not read the table
        tmp = tmp_path / "copy.parquet"
        shutil.copyfile(other, tmp)
        os.replace(tmp, table)  # the other ingest's atomic replace
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, errlog.read_text()
    assert "now holds 16 tiles of 4 source images" in out
    assert images_in(table) == ["x1_img.tif", "x2_img.tif", "y1_img.tif", "z1_img.tif"]
    assert leftovers(tmp_path) == []


def test_two_concurrent_ingests_into_one_parquet_keep_both(tmp_path: Path) -> None:
    data = tmp_path / "data"
    a = scenes(data, ["a1", "a2", "a3"], size=128, seed=4)
    b = scenes(data, ["b1", "b2", "b3"], size=128, seed=5)
    table = tmp_path / "shared.parquet"
    procs = [
        subprocess.Popen(
            [
                *CLI,
                "catalog",
                "ingest",
                str(p),
                "--patch-size",
                "8",
                "--nodata-class",
                "-1",
                "--workers",
                "1",
                "--catalog",
                str(table),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(),
        )
        for p in (a, b)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert images_in(table) == [f"{s}_img.tif" for s in ("a1", "a2", "a3", "b1", "b2", "b3")]
    assert len(read_tile_table(table)) == 6 * 256
    assert leftovers(tmp_path) == []


def test_lock_timeout_is_one_clear_error(tmp_path: Path) -> None:
    target = tmp_path / "t.parquet"
    with file_lock(target, "test holds"):
        proc = subprocess.run(
            [sys.executable, "-c",
             "import sys\nfrom smt_tools.atomic import file_lock\nfrom smt_tools.errors "
             "import OutputError\ntry:\n    with file_lock(sys.argv[1], 'x', timeout_s=0.5):\n"
             "        pass\nexcept OutputError as e:\n    print(e)\n", str(target)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert f"still locked by pid {os.getpid()}" in proc.stdout, proc.stdout + proc.stderr
    assert "after 0.5 s" in proc.stdout
    assert not (tmp_path / "t.parquet.lock").exists()  # removed by its holder on release


def test_embedding_cache_compaction_keeps_chunks_written_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    from smt_tools.embeddings import cache

    path = tmp_path / "emb.parquet"
    cache.parts_dir(path).mkdir()
    killed = (
        cache.parts_dir(path)
        / f".part-000000-dead.parquet.{dead_pid()}.{atomic._HOST}0bad.part.tmp"
    )
    killed.write_bytes(b"half a chunk of a killed run")
    cache.write_chunk(path, np.array([1, 2]), np.ones((2, 4), np.float32), "m", "h")
    assert not killed.exists()  # chunk names never repeat: stale temps of any chunk go
    real = cache._write_atomic
    late: list[Path] = []

    def write_and_race(table: object, target: Path) -> None:
        # another run appends a chunk after this compaction listed the files
        chunk = cache.parts_dir(path) / "part-000009-late.parquet"
        real(cache.make_table(np.array([3]), np.full((1, 4), 3, np.float32), "m", "h"), chunk)
        late.append(chunk)
        real(table, target)  # type: ignore[arg-type]

    monkeypatch.setattr(cache, "_write_atomic", write_and_race)
    assert cache.compact(path) == 2
    monkeypatch.setattr(cache, "_write_atomic", real)
    assert late[0].is_file()  # the old code removed the whole .parts folder: tile 3 was lost
    emb, found = cache.read_embeddings(path, np.array([1, 2, 3]))
    assert found.tolist() == [True, True, True] and emb[2].tolist() == [3, 3, 3, 3]
    assert cache.compact(path) == 3 and not cache.parts_dir(path).exists()


# ------------------------------------------------------------------------------------ B8


def test_balanced_output_equal_to_an_input_is_refused_before_work(
    tiles: Path, tmp_path: Path
) -> None:
    before = tiles.read_bytes()
    alias = tiles.parent / "sub" / ".." / tiles.name  # same file, spelled differently
    conf = balanced_yaml(tmp_path, tiles, csv_path=str(alias))
    line = one_line_error(*invoke("build-balanced-dataset", str(conf))[::2])
    assert f"output.csv_path {alias} is the input input.tiles" in line
    assert "choose another output path" in line
    assert tiles.read_bytes() == before
    # the config file itself
    conf = balanced_yaml(tmp_path, tiles, csv_path=str(tmp_path / "b.yaml"))
    text = conf.read_text()
    code, out, err = invoke("build-balanced-dataset", str(conf))
    assert "is the input the config file" in one_line_error(code, err)
    assert out == "" and conf.read_text() == text
    # the GeoJSON's QGIS style would overwrite the tile table's sibling? no: geojson = tiles
    conf = balanced_yaml(tmp_path, tiles, geojson_path=str(tiles))
    assert "output.geojson_path" in one_line_error(
        *invoke("build-balanced-dataset", str(conf))[::2]
    )


def test_coreset_split_and_leakage_refuse_to_overwrite_their_input(
    tiles: Path, tmp_path: Path
) -> None:
    conf = balanced_yaml(tmp_path, tiles)
    assert invoke("build-balanced-dataset", str(conf))[0] == 0
    csv = tmp_path / "out" / "b.csv"
    link = tmp_path / "hardlink.csv"
    os.link(csv, link)  # another name of the same file (samefile)
    before = csv.read_bytes()
    core = write_yaml(
        tmp_path / "c.yaml",
        {
            "coreset": {
                "method": "lc",
                "input_csv_path": str(csv),
                "output": {"csv_path": str(link)},
            }
        },
    )
    line = one_line_error(*invoke("select-coreset", str(core))[::2])
    assert f"output.csv_path {link} is the input input_csv_path ({csv})" in line
    split = write_yaml(
        tmp_path / "s.yaml",
        {"split": {"input_csv_path": str(csv), "n_splits": 2, "output": {"csv_path": str(csv)}}},
    )
    assert "is the input input_csv_path" in one_line_error(*invoke("split", str(split))[::2])
    code, _, err = invoke("check-leakage", "--folds", str(csv), "--report", str(link))
    assert "--report" in one_line_error(code, err) and "is the input --folds" in err
    assert csv.read_bytes() == before


def test_embed_cache_equal_to_the_tile_table_is_refused(tiles: Path, tmp_path: Path) -> None:
    before = tiles.read_bytes()
    conf = write_yaml(
        tmp_path / "e.yaml",
        {
            "balanced_dataset": {
                "mode": "embeddings",
                "input": {"tiles": str(tiles)},
                "embeddings": {"parquet_path": str(tiles), "dino_model": str(tmp_path / "none")},
                "output": {"csv_path": str(tmp_path / "b.csv")},
            }
        },
    )
    for command in ("embed", "build-balanced-dataset"):
        line = one_line_error(*invoke(command, str(conf))[::2])
        assert f"embeddings.parquet_path {tiles} is the input input.tiles" in line, command
    assert tiles.read_bytes() == before


def test_check_outputs_rules(tmp_path: Path) -> None:
    a = tmp_path / "a.csv"
    a.write_text("x")
    with pytest.raises(ConfigError, match="are the same file"):
        check_outputs([("one", tmp_path / "o.csv"), ("two", tmp_path / "." / "o.csv")])
    with pytest.raises(ConfigError, match="is the input in"):
        check_outputs([("out", tmp_path / "x" / ".." / "a.csv")], [("in", a)])
    os.symlink(a, tmp_path / "link.csv")
    with pytest.raises(ConfigError, match="is the input in"):
        check_outputs([("out", tmp_path / "link.csv")], [("in", a)])
    check_outputs([("out", tmp_path / "new" / "deeper" / "o.csv")], [("in", a)], [("d", None)])
    assert not (tmp_path / "new").exists()  # the check creates nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "link.csv"]


# ------------------------------------------------------------------------------------ B9


def test_parent_is_a_file_or_output_is_a_folder(tiles: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("keep")
    conf = balanced_yaml(tmp_path, tiles, csv_path=str(blocker / "sub" / "b.csv"))
    code, out, err = invoke("build-balanced-dataset", str(conf))
    line = one_line_error(code, err)
    assert f"output.csv_path: cannot write {blocker}/sub/b.csv: {blocker} is a file" in line
    assert out == ""  # refused before any work (no summary)
    (tmp_path / "adir").mkdir()
    conf = balanced_yaml(tmp_path, tiles, csv_path=str(tmp_path / "adir"))
    assert "is a folder; give a file path" in one_line_error(
        *invoke("build-balanced-dataset", str(conf))[::2]
    )
    conf = balanced_yaml(tmp_path, tiles, report_dir=str(blocker))
    assert "output.report_dir" in one_line_error(*invoke("build-balanced-dataset", str(conf))[::2])
    assert blocker.read_text() == "keep"


@pytest.fixture
def readonly_dir(tmp_path: Path) -> object:
    """A folder nobody (not even root) can write into: a read-only tmpfs as root, else 0o555."""
    target = tmp_path / "ro"
    if is_root():
        with tmpfs(target, "64k", readonly=True) as mnt:
            if mnt is None:
                pytest.skip("cannot mount a read-only tmpfs here")
            yield mnt
    else:
        target.mkdir()
        target.chmod(0o555)
        yield target
        target.chmod(0o755)


def test_not_writable_folder_refused_before_work(
    tiles: Path, tmp_path: Path, readonly_dir: Path
) -> None:
    conf = balanced_yaml(tmp_path, tiles, csv_path=str(readonly_dir / "b.csv"))
    code, out, err = invoke("build-balanced-dataset", str(conf))
    line = one_line_error(code, err)
    assert (
        f"output.csv_path: cannot write {readonly_dir}/b.csv: folder {readonly_dir} is not writable"
        in line
    )
    assert out == ""
    # a folder that does not exist and cannot be created
    conf = balanced_yaml(tmp_path, tiles, csv_path=str(readonly_dir / "new" / "b.csv"))
    line = one_line_error(*invoke("build-balanced-dataset", str(conf))[::2])
    assert f"folder {readonly_dir} is not writable" in line
    # the ingest target too
    pairs = scenes(tmp_path / "d", ["r1"])
    code, out, err = invoke(
        "catalog", "ingest", str(pairs), "--catalog", str(readonly_dir / "t.parquet")
    )
    assert "--catalog: cannot write" in one_line_error(code, err) and out == ""


def test_disk_full_is_one_line_and_keeps_the_previous_output(tiles: Path, tmp_path: Path) -> None:
    mnt_dir = tmp_path / "small"
    with tmpfs(mnt_dir, "16k") as mnt:
        if mnt is None:
            pytest.skip("needs root to mount a 16 KiB tmpfs (the RLIMIT_FSIZE test covers others)")
        previous = b"tile_id,sampler_weight\n1,0.5\n"
        (mnt / "b.csv").write_bytes(previous)
        conf = balanced_yaml(
            tmp_path, tiles, csv_path=str(mnt / "b.csv"), geojson_path=str(mnt / "b.geojson")
        )
        code, _, err = invoke("build-balanced-dataset", str(conf))
        line = one_line_error(code, err)
        assert re.search(
            rf"cannot write {mnt}/b\.(csv|geojson|qml): No space left on device \(the disk is full",
            line,
        ), line
        assert (mnt / "b.csv").read_bytes() == previous
        assert sorted(p.name for p in mnt.iterdir()) == ["b.csv"]  # no .part / .staging left


def test_file_size_limit_is_one_line_and_keeps_the_previous_output(
    tiles: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    previous = b"previous\n"
    (out / "b.csv").write_bytes(previous)
    conf = balanced_yaml(tmp_path, tiles, csv_path=str(out / "b.csv"))
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "from smt_tools.cli.app import main\n"
        "main(sys.argv[1:])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "build-balanced-dataset", str(conf)],
        capture_output=True, text=True, timeout=300, env=cli_env(PYTHONDONTWRITEBYTECODE="1"),
    )  # fmt: skip
    line = one_line_error(proc.returncode, proc.stderr)
    assert f"cannot write {out}/b.csv: File too large" in line, line
    assert (out / "b.csv").read_bytes() == previous
    assert sorted(p.name for p in out.iterdir()) == ["b.csv"]


def test_stale_temp_files_of_killed_runs_are_removed(tiles: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    dead = dead_pid()
    host = atomic._HOST
    stale = [
        out / f".b.csv.{dead}.{host}beef.staging",
        out / f".b.csv.{dead}.{host}cafe.part.csv",
        out / f"..b.csv.{dead}.{host}beef.staging.{dead}.{host}0001.part.csv",
    ]
    keep = [
        out / f".b.csv.{os.getpid()}.{host}beef.staging",  # a live run (this process)
        out / f".b.csv.{dead}.{'0000' if host != '0000' else '1111'}beef.staging",  # other host
        out / f".other.csv.{dead}.{host}beef.staging",  # another target
    ]
    for p in stale + keep:
        p.write_text("x")
    stale_dir = out / f".report.{dead}.{host}d00d.staging"
    stale_dir.mkdir()
    (stale_dir / "class_share.png").write_text("x")
    conf = balanced_yaml(tmp_path, tiles, report_dir=str(out / "report"))
    code, _, err = invoke("build-balanced-dataset", str(conf))
    assert code == 0, err
    assert all(not p.exists() for p in [*stale, stale_dir])
    assert all(p.exists() for p in keep)
    assert target_of(stale[2]) == out / "b.csv"
    assert clean_stale(out / "b.csv") == []


def test_atomic_path_fsyncs_before_replace_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: object, dst: object) -> None:
        events.append(("replace", str(src)))
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "t.csv"
    with atomic_path(target, suffix=".csv") as tmp:
        assert re.fullmatch(rf"\.t\.csv\.{os.getpid()}\.[0-9a-f]{{8}}\.part\.csv", tmp.name)
        tmp.write_text("new")
    assert [e[0] for e in events] == ["fsync", "replace", "fsync"]
    assert events[0][1] == events[1][1] == str(tmp)  # the temp file, before the rename
    assert events[2][1] == str(tmp_path)  # then the folder
    monkeypatch.setattr(os, "fsync", real_fsync)
    monkeypatch.setattr(os, "replace", real_replace)
    # a failed write: one OutputError line, the earlier file untouched, no temp left
    with pytest.raises(OutputError, match=rf"cannot write {target}: No space left on device"):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
    with pytest.raises(KeyError):
        with atomic_path(target) as tmp:
            raise KeyError("not an OS error: passes through")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]


def test_written_outputs_are_complete_and_table_unchanged(tiles: Path, tmp_path: Path) -> None:
    """The happy path still works after the pre-flight (and leaves nothing behind)."""
    conf = balanced_yaml(tmp_path, tiles, geojson_path=str(tmp_path / "out" / "b.geojson"))
    code, _, err = invoke("build-balanced-dataset", str(conf))
    assert code == 0, err
    frame = pd.read_csv(tmp_path / "out" / "b.csv")
    assert len(frame) == 64 and frame["sampler_weight"].max() == 1.0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["b.csv", "b.geojson", "b.qml", "b.run.json"]
