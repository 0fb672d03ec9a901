#!/usr/bin/env python
"""Hash the outputs of every example config on the demo data: "behaviour unchanged" in a file.

Runs each YAML of smt_tools/examples/ through the CLI (`python -m smt_tools`) the way the example
tests do (4 demo scenes of 512 px, seed 0; training: 1 epoch of 2 steps; embeddings: a tiny
random DINOv2 saved locally; balanced_postgres.yaml: a fresh PostGIS database when a server is
given), then writes the SHA-256 of every output file:

    python scripts/demo_outputs.py --save before.json --repo /tmp/base   # the old code
    python scripts/demo_outputs.py --check before.json                   # this checkout

`--repo PATH` runs the code (and the example configs) of another checkout, e.g. one made with
`git worktree add /tmp/base HEAD`, by putting PATH first on PYTHONPATH. The demo is written to
a fixed folder (--workdir; tile ids hash the absolute raster paths, so the folder must be the
same for both runs); a lock file serialises concurrent runs. Exit 1 when --check finds a
difference (the files are listed) or a command fails.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

#: files never hashed, and why
EXCLUDED = {
    "*.run.json / run.json": "run records: start/finish times, durations, absolute paths, mtimes",
    "*.pt (all but the weights)": "checkpoints pickle the temp file name, epoch seconds and the "
    "(unseeded, unused) Python RNG state: only model_state, epoch and miou are hashed",
    "tiny_dinov2/": "the random test model itself (an input, written by this script)",
    "conf/": "the example configs as run (inputs)",
    "report.html (its time stamp)": "the report says when it was made: the stamp is blanked",
    "metrics.csv (column seconds)": "epoch wall-clock time: the column is dropped",
    "runs on a tile table (*.runs/run-*.parquet)": "the run's times and config are in the file's "
    "metadata: only its command and its per-tile rows are hashed",
    "catalog rows (demo/catalog_dump/)": "dumped without source_image.ingested_at and run "
    "started_at, finished_at, config, summary (times, the database URL)",
}

#: CSV columns dropped before hashing (wall-clock times: train's metrics.csv)
TIME_COLUMNS = {"seconds"}

#: a date and time (the HTML report's "made at")
STAMP = re.compile(rb"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?")
DEMO = ["--scenes", "4", "--size", "512", "--seed", "0"]  # the tests' demo_dir fixture
INGEST = ["--patch-size", "256", "--nodata-class", "0", "--class-names", "demo/classes.csv"]
DEMO_MTIME_NS = 1_700_000_000 * 10**9  # the demo rasters' mtime (tile tables record it)
TRAIN = ["--epochs", "1", "--steps-per-epoch", "2", "--set", "val_steps=1"]  # tests' "a couple"


class Runner:
    """Runs `python -m smt_tools ...` in the work folder with the chosen code on PYTHONPATH."""

    def __init__(self, work: Path, repo: Path | None, env: dict[str, str]) -> None:
        self.work = work
        self.env = dict(os.environ)
        self.env.update(env)
        if repo is not None:
            self.env["PYTHONPATH"] = os.pathsep.join(
                [str(repo), *filter(None, [os.environ.get("PYTHONPATH")])]
            )

    def check_code_is(self, repo: Path) -> None:
        """Refuse to go on when `python -m smt_tools` would import another checkout's code."""
        code = "import smt_tools; print(smt_tools.__file__)"
        res = subprocess.run(
            [sys.executable, "-c", code],
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
        )
        found = Path(res.stdout.strip()).resolve()
        if res.returncode != 0 or not found.is_relative_to(repo / "smt_tools"):
            raise SystemExit(f"demo_outputs: smt_tools imports from {found}, not from {repo}")

    def cli(
        self, *args: str, ok: tuple[int, ...] = (0,), env: dict[str, str] | None = None
    ) -> None:
        full_env = dict(self.env, **(env or {}))
        cmd = [sys.executable, "-m", "smt_tools", *args]
        res = subprocess.run(cmd, cwd=self.work, env=full_env, capture_output=True, text=True)
        if res.returncode not in ok:
            tail = (res.stdout + res.stderr)[-3000:]
            raise SystemExit(f"demo_outputs: `{' '.join(args)}` exited {res.returncode}:\n{tail}")


def _copy_example(
    examples: Path, name: str, conf: Path, edit: Callable[[dict], None] | None = None
) -> str:
    import yaml

    data = yaml.safe_load((examples / name).read_text(encoding="utf-8"))
    if edit is not None:
        edit(data)
    target = conf / name
    target.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return str(target.relative_to(conf.parent))


def _save_tiny_dinov2(folder: Path) -> None:
    """The tests' tiny model (tests/test_embeddings.py save_tiny_dinov2), seeded."""
    import torch
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    cfg = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=14,
        image_size=28,
    )
    Dinov2Model(cfg).save_pretrained(folder)
    BitImageProcessor(
        size={"shortest_edge": 32},
        crop_size={"height": 28, "width": 28},
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(folder)


@contextlib.contextmanager
def _fresh_database(server_url: str, name: str) -> Iterator[str]:
    import psycopg
    from psycopg import sql

    base = server_url.replace("postgresql+psycopg://", "postgresql://")
    admin = base.rsplit("/", 1)[0] + "/postgres"
    drop = sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(drop)
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    url = base.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create extension if not exists postgis")
    try:
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(drop)


#: the catalog rows an example writes, without ingest times and file mtimes
DB_DUMPS = {
    "catalog_class": "select * from catalog_class order by position",
    "source_image": "select id, image_path, mask_path, group_id, crs, transform, width, height, "
    "tile_count, nodata_class, mask_band, scan_rules, st_astext(footprint) from source_image "
    "order by id",
    "source_image_times": "select id, image_size, image_mtime, mask_size, mask_mtime from "
    "source_image order by id",
    "tile": "select id, source_image_id, row_off, col_off, height, width, class_counts, "
    "valid_pixels, nodata_ratio, class_entropy, has_mask_border_nodata, "
    "has_image_black_border, st_astext(footprint) from tile order by id",
    "run": "select id, command, map_view from run order by id",
    "tile_result": "select * from tile_result order by run_id, tile_id",
}


def _dump_database(url: str, out: Path) -> None:
    import psycopg

    out.mkdir(parents=True, exist_ok=True)
    with psycopg.connect(url) as conn:
        for name, query in DB_DUMPS.items():
            cur = conn.execute(query)
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")
            writer.writerow([d.name for d in cur.description or []])
            writer.writerows(cur.fetchall())
            (out / f"{name}.csv").write_text(buf.getvalue(), encoding="utf-8")


def run_examples(run: Runner, examples: Path, database: str | None) -> list[str]:
    """Every example, in dependency order; returns the names run. Unknown examples fail."""
    work = run.work
    conf = work / "conf"
    conf.mkdir()
    run.cli("make-demo-data", "demo", *DEMO)
    for raster in sorted((work / "demo").glob("*/*.tif")):  # ingest records mtimes: pin them
        os.utime(raster, ns=(DEMO_MTIME_NS, DEMO_MTIME_NS))
    local = ["--catalog", "demo/tiles.parquet", "--workers", "1"]
    run.cli("catalog", "ingest", "demo/pairs.csv", *INGEST, *local)

    def example(name: str, edit: Callable[[dict], None] | None = None) -> str:
        return _copy_example(examples, name, conf, edit)

    def tiny_model(data: dict) -> None:
        data["balanced_dataset"]["embeddings"]["dino_model"] = "tiny_dinov2"

    def split() -> None:
        run.cli("split", example("split_kfold.yaml"))
        folds = ["--folds", "demo/balanced_with_folds.csv", "--buffer-m", "50"]
        run.cli("check-leakage", *folds, "--report", "demo/leakage.geojson", ok=(0, 3))

    def embeddings() -> None:
        _save_tiny_dinov2(work / "tiny_dinov2")
        run.cli("embed", example("balanced_embeddings.yaml", tiny_model))
        run.cli("build-balanced-dataset", example("balanced_embeddings.yaml", tiny_model))

    def postgres() -> None:
        assert database is not None
        with _fresh_database(database, "smt_demo_outputs") as url:
            env = {"SMT_DATABASE_URL": url}
            run.cli("catalog", "init", env=env)
            run.cli("catalog", "ingest", "demo/pairs.csv", *INGEST, "--workers", "1", env=env)
            run.cli("build-balanced-dataset", example("balanced_postgres.yaml"), env=env)
            _dump_database(url, work / "demo" / "catalog_dump")

    # in this order: balanced_train.csv is the input of coreset, split and the weighted sampler
    recipes: dict[str, Callable[[], None]] = {
        "balanced_train.yaml": lambda: run.cli(
            "build-balanced-dataset", example("balanced_train.yaml")
        ),
        "balanced_patch_records.yaml": lambda: run.cli(
            "build-balanced-dataset", example("balanced_patch_records.yaml")
        ),
        "coreset_local.yaml": lambda: run.cli("select-coreset", example("coreset_local.yaml")),
        "split_kfold.yaml": split,
        "check_leakage.yaml": lambda: run.cli(  # the same audit as the flags above
            "check-leakage", example("check_leakage.yaml"), ok=(0, 3)
        ),
        "balanced_embeddings.yaml": embeddings,
        "weighted_sampler_segmentation.yaml": lambda: run.cli(
            "train", example("weighted_sampler_segmentation.yaml"), *TRAIN
        ),
        "random_crop_segmentation.yaml": lambda: run.cli(
            "train", example("random_crop_segmentation.yaml"), *TRAIN
        ),
        "balanced_postgres.yaml": postgres,
    }
    names = {p.name for p in examples.glob("*.yaml")}
    unknown = sorted(names - set(recipes))
    if unknown:
        raise SystemExit(f"demo_outputs: no recipe for {', '.join(unknown)}: add one to {__file__}")
    done = []
    for name, recipe in recipes.items():
        if name not in names:
            continue
        if name == "balanced_postgres.yaml" and database is None:
            print(f"demo_outputs: no --database-url / SMT_TEST_DATABASE_URL: {name} skipped")
            continue
        recipe()
        done.append(name)
    return done


def _skipped(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return (
        name == "run.json"
        or name.endswith(".run.json")
        or rel.startswith(("tiny_dinov2/", "conf/"))
    )


def _normalised(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".csv":
        rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
        if rows and TIME_COLUMNS & set(rows[0]):
            keep = [i for i, c in enumerate(rows[0]) if c not in TIME_COLUMNS]
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerows([[r[i] for i in keep] for r in rows])
            return buf.getvalue().encode("utf-8")
    if path.suffix == ".pt":
        return _checkpoint_weights(path)
    if path.suffix == ".parquet" and path.parent.name.endswith(".runs"):
        return _run_rows(path)
    if path.suffix == ".html":  # the report names the time it was made
        return STAMP.sub(b"<time>", data)
    return data


def _run_rows(path: Path) -> bytes:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    command = json.loads((table.schema.metadata or {}).get(b"smt_tools.run", b"{}")).get("command")
    return f"{command}\n".encode() + table.to_pandas().to_csv(index=False).encode()


def _checkpoint_weights(path: Path) -> bytes:
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    h = hashlib.sha256(repr((ckpt.get("epoch"), ckpt.get("miou"))).encode())
    for key, tensor in sorted(ckpt["model_state"].items()):
        h.update(key.encode())
        h.update(tensor.detach().contiguous().numpy().tobytes())
    return h.digest()


def hash_outputs(work: Path) -> dict[str, str]:
    out = {}
    for path in sorted(work.rglob("*")):
        rel = path.relative_to(work).as_posix()
        if path.is_file() and not _skipped(rel):
            out[rel] = hashlib.sha256(_normalised(path)).hexdigest()
    return out


def compare(before: dict[str, str], after: dict[str, str]) -> list[str]:
    lines = []
    for rel in sorted(set(before) | set(after)):
        if rel not in after:
            lines.append(f"missing  {rel}")
        elif rel not in before:
            lines.append(f"new      {rel}")
        elif before[rel] != after[rel]:
            lines.append(f"differs  {rel}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--save", type=Path, help="write the hashes to this JSON file")
    mode.add_argument("--check", type=Path, help="compare with this JSON file (exit 1 on change)")
    ap.add_argument("--repo", type=Path, help="run the code and examples of this checkout")
    ap.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "smt-demo-outputs",
        help="fixed folder the demo is written to (emptied first; default: %(default)s)",
    )
    ap.add_argument(
        "--database-url",
        default=os.environ.get("SMT_TEST_DATABASE_URL"),
        help="PostGIS server for balanced_postgres.yaml (a database smt_demo_outputs is "
        "created and dropped; default: $SMT_TEST_DATABASE_URL; absent: that example is skipped)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the work folder afterwards")
    args = ap.parse_args(argv)

    repo = (args.repo or Path(__file__).resolve().parents[1]).resolve()
    if not (repo / "smt_tools" / "__main__.py").is_file():
        ap.error(f"--repo {repo}: no smt_tools/__main__.py there (give a checkout of this project)")
    work = args.workdir.resolve()
    work.parent.mkdir(parents=True, exist_ok=True)
    with open(str(work) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one run at a time per work folder
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        env = {
            "CUDA_VISIBLE_DEVICES": "",  # device: auto -> cpu, the same on every machine
            "PYTHONHASHSEED": "0",
            "MPLBACKEND": "Agg",
            "TZ": "UTC",
            "SMT_DATABASE_URL": "",
        }
        runner = Runner(work, repo, env)
        runner.check_code_is(repo)
        examples = repo / "smt_tools" / "examples"
        try:
            done = run_examples(runner, examples, args.database_url)
            hashes = hash_outputs(work)
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
    result = {"repo": str(repo), "examples": done, "excluded": EXCLUDED, "files": hashes}
    print(f"demo_outputs: {len(done)} examples, {len(hashes)} output files hashed")
    if args.save:
        args.save.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        print(f"demo_outputs: wrote {args.save}")
    if args.check:
        before = json.loads(args.check.read_text(encoding="utf-8"))
        diff = compare(before["files"], hashes)
        skipped = sorted(set(before["examples"]) - set(done))
        diff += [f"not run  {name}" for name in skipped]
        if diff:
            print(f"demo_outputs: {len(diff)} difference(s) against {args.check}:")
            print("\n".join("  " + line for line in diff))
            return 1
        print(f"demo_outputs: identical to {args.check}")
    if not args.save and not args.check:
        print(json.dumps(hashes, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
