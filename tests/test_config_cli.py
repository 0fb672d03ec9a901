"""``config init | show | schema``, ``--set KEY=VALUE`` and ``--dry-run`` (issue 12, part 3)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from smt_tools.cli.app import app
from smt_tools.config import load_config
from smt_tools.config.balanced import BalancedFile
from smt_tools.config.coreset import CoresetFile
from smt_tools.config.split import SplitFile
from smt_tools.config.template import CONFIG_COMMANDS, command_for, json_schema
from smt_tools.config.train import TrainConfig, load_train_config
from smt_tools.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parents[1] / "conf" / "examples"
COMMANDS = ["build-balanced-dataset", "embed", "select-coreset", "split", "check-leakage", "train"]

#: --set items that fill the REQUIRED keys of each template, and the same config written out
FILL: dict[str, tuple[list[str], dict[str, Any]]] = {
    "build-balanced-dataset": (
        ["input.tiles=t.parquet", "output.csv_path=out.csv"],
        {"balanced_dataset": {"input": {"tiles": "t.parquet"}, "output": {"csv_path": "out.csv"}}},
    ),
    "select-coreset": (
        ["input_csv_path=in.csv", "output.csv_path=out.csv"],
        {"coreset": {"input_csv_path": "in.csv", "output": {"csv_path": "out.csv"}}},
    ),
    "split": (
        ["input_csv_path=in.csv", "output.csv_path=out.csv"],
        {"split": {"input_csv_path": "in.csv", "output": {"csv_path": "out.csv"}}},
    ),
    "check-leakage": (
        ["folds=folds.csv"],
        {"check_leakage": {"folds": "folds.csv"}},
    ),
    "train": (
        [
            "train_dataset._target_=smt_tools.train.CSVWindowedSegmentationDataset",
            "train_dataset.input_csv_path=b.csv",
            "train_dataset.n_classes=2",
            "model._target_=smt_tools.train.UNet",
            "val_fold=0",
        ],
        {
            "train_dataset": {
                "_target_": "smt_tools.train.CSVWindowedSegmentationDataset",
                "input_csv_path": "b.csv",
                "n_classes": 2,
            },
            "model": {"_target_": "smt_tools.train.UNet"},
            "val_fold": 0,
        },
    ),
}
FILL["embed"] = FILL["build-balanced-dataset"]


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


def _load(command: str, path: Path, overrides: list[str]) -> Any:
    if command == "train":
        return load_train_config(path, overrides=overrides)
    return load_config(path, CONFIG_COMMANDS[command].model, overrides)


def _flat(text: str) -> str:
    """A usage error as one line (click's message box wraps it)."""
    return " ".join(text.replace("│", " ").split())


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*")}


# --- config init ---------------------------------------------------------------------------------


def test_config_commands_are_every_command_with_a_config() -> None:
    assert list(CONFIG_COMMANDS) == COMMANDS
    commands: dict[str, Any] = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    with_config = {
        name for name, cmd in commands.items() if any(p.name == "config" for p in cmd.params)
    }
    assert with_config == set(COMMANDS)
    for name in COMMANDS:  # every one takes --set and --dry-run
        opts = {o for p in commands[name].params for o in getattr(p, "opts", [])}
        assert {"--set", "--dry-run"} <= opts, name


@pytest.mark.parametrize("command", COMMANDS)
def test_init_template_loads_back_to_the_defaults(command: str, tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    res = _invoke("config", "init", command, path)
    assert res.exit_code == 0, res.output
    assert res.stderr == f"Wrote {path}\n"
    text = path.read_text()
    assert text.startswith(f"# {command} config (")
    assert "REQUIRED" in text
    overrides, minimal = FILL[command]
    loaded = _load(command, path, overrides)
    model = CONFIG_COMMANDS[command].model
    expected = model.model_validate(minimal)
    assert loaded.model_dump(mode="json", by_alias=True) == expected.model_dump(
        mode="json", by_alias=True
    )
    if command in ("build-balanced-dataset", "embed"):
        # "not given" keeps its meaning (the class the tiles were ingested with)
        assert loaded.balanced_dataset.exclusion.nodata_given is False
    # stdout gives the same text
    out = _invoke("config", "init", command)
    assert out.exit_code == 0 and out.stdout == text


def test_init_every_key_is_in_the_template() -> None:
    text = _invoke("config", "init", "build-balanced-dataset").stdout
    for block in ("input", "clustering", "uniqueness", "embeddings", "exclusion", "weights"):
        assert f"\n  {block}:\n" in text
    assert "\n    k_max: 16  # integer >= 1, <= 1024\n" in text
    assert "\n    # nodata_class: null  # integer >= -1, <= 65535\n" in text
    assert "\n    # csv_path: null  # path\n" in text  # csv_path and/or parquet_path:
    assert "\n    # parquet_path: null  # path; the balanced table as Parquet" in text
    assert "like the CSV): at least one." in text
    assert "\n    bands: [1, 2, 3]" in text
    assert "  mode: masks_only  # one of masks_only | embeddings | embeddings_only\n" in text


def test_unfilled_template_names_the_missing_key(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    assert _invoke("config", "init", "select-coreset", path).exit_code == 0
    with pytest.raises(ConfigError) as err:
        load_config(path, CoresetFile)
    assert str(err.value) == (
        f"{path}: coreset.output.csv_path: required key has no value; fill it in"
    )


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    path = tmp_path / "split.yaml"
    path.write_text("keep: me\n")
    res = _invoke("config", "init", "split", path)
    assert res.exit_code == 1
    assert res.stderr == (
        f"error: {path} exists; pass --force to overwrite it, or give another path\n"
    )
    assert path.read_text() == "keep: me\n"
    res = _invoke("config", "init", "split", path, "--force")
    assert res.exit_code == 0, res.output
    assert path.read_text().startswith("# split config (leakage-safe folds)")
    assert [p.name for p in tmp_path.iterdir()] == ["split.yaml"]  # no temporary left


def test_init_unknown_command_is_a_usage_error() -> None:
    res = _invoke("config", "init", "splt")
    assert res.exit_code == 2
    assert (
        "'splt' is not one of 'build-balanced-dataset', 'embed', 'select-coreset', 'split', "
        "'check-leakage', 'train'" in _flat(res.stderr)
    )


# --- config schema -------------------------------------------------------------------------------


def _examples() -> list[Path]:
    found = sorted(EXAMPLES.glob("*.yaml"))
    assert len(found) == 13
    return found


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        schema = root["$defs"][name]
    return schema


def _unlisted_keys(data: Any, schema: dict[str, Any], root: dict[str, Any], at: str) -> list[str]:
    """Keys of ``data`` that the schema does not list (where it forbids other keys)."""
    schema = _resolve(schema, root)
    options = schema.get("anyOf")
    if options:
        objects = [_resolve(o, root) for o in options if _resolve(o, root).get("type") != "null"]
        if isinstance(data, dict):
            objects = [o for o in objects if o.get("type") == "object"]
        elif isinstance(data, list):
            objects = [o for o in objects if o.get("type") == "array"]
        return _unlisted_keys(data, objects[0], root, at) if objects else []
    missing: list[str] = []
    if isinstance(data, dict):
        props = schema.get("properties", {})
        for key, value in data.items():
            if key in props:
                missing += _unlisted_keys(value, props[key], root, f"{at}.{key}")
            elif schema.get("additionalProperties") is False:
                missing.append(f"{at}.{key}")
    elif isinstance(data, list) and isinstance(schema.get("items"), dict):
        for i, value in enumerate(data):
            missing += _unlisted_keys(value, schema["items"], root, f"{at}[{i}]")
    return missing


@pytest.mark.parametrize("example", [p.name for p in sorted(EXAMPLES.glob("*.yaml"))])
def test_schema_lists_every_key_of_every_example(example: str) -> None:
    path = EXAMPLES / example
    data = yaml.safe_load(path.read_text())
    command = command_for(data, example)
    schema = json_schema(command)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert _unlisted_keys(data, schema, schema, "") == []
    # the walk above does catch a key the schema does not know
    bad = json.loads(json.dumps(data))
    section = next(iter(bad.values())) if command != "train" else bad
    target = section if command != "train" else bad["train_dataset"]["data_loader"]
    target["not_a_key"] = 1
    assert _unlisted_keys(bad, schema, schema, "")[0].endswith(".not_a_key")
    # and the example validates through the models the schema comes from
    model = CONFIG_COMMANDS[command].model
    model.model_validate(data)


def test_every_example_validates_against_the_schema_with_jsonschema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    for path in _examples():
        data = yaml.safe_load(path.read_text())
        schema = json_schema(command_for(data, path.name))
        jsonschema.Draft202012Validator.check_schema(schema)
        errors = list(jsonschema.Draft202012Validator(schema).iter_errors(data))
        assert errors == [], (path.name, [e.message for e in errors])
    data = yaml.safe_load((EXAMPLES / "split_kfold.yaml").read_text())
    data["split"]["n_split"] = 4  # a typo: an editor flags it
    errors = list(jsonschema.Draft202012Validator(json_schema("split")).iter_errors(data))
    assert [e.message for e in errors] == [
        "Additional properties are not allowed ('n_split' was unexpected)"
    ]


def test_schema_cli_writes_json(tmp_path: Path) -> None:
    res = _invoke("config", "schema", "train")
    assert res.exit_code == 0, res.output
    schema = json.loads(res.stdout)
    assert schema == json_schema("train")
    assert set(schema["required"]) == {"train_dataset", "model"}
    path = tmp_path / "train.schema.json"
    assert _invoke("config", "schema", "train", path).exit_code == 0
    assert json.loads(path.read_text()) == schema
    assert _invoke("config", "schema", "train", path).exit_code == 1


# --- --set ---------------------------------------------------------------------------------------


def _example_copy(name: str, tmp_path: Path) -> Path:
    path = tmp_path / name
    path.write_text((EXAMPLES / name).read_text())
    return path


def test_set_overrides_before_validation(tmp_path: Path) -> None:
    path = _example_copy("balanced_train.yaml", tmp_path)
    before = path.read_text()
    cfg = load_config(
        path,
        BalancedFile,
        [
            "clustering.k_max=12",
            "balanced_dataset.weights.weight_floor=auto",
            "embeddings.bands=[1]",
            "exclusion.min_entropy=0.5",
            "exclusion.nodata_class=",  # empty value: null
            "output.geojson_path=null",
            "embeddings.dino_model=1e3",  # YAML 1.1 text stays text for a text key
        ],
    ).balanced_dataset
    assert cfg.clustering.k_max == 12
    assert cfg.clustering.k_min == 4  # from the file
    assert cfg.weights.weight_floor == "auto"
    assert cfg.embeddings.bands == [1]
    assert cfg.exclusion.min_entropy == 0.5
    assert cfg.exclusion.nodata_class is None and cfg.exclusion.nodata_given is True
    assert cfg.output.geojson_path is None
    assert cfg.embeddings.dino_model == "1e3"
    assert path.read_text() == before  # the file is never touched


def test_set_errors_name_the_key(tmp_path: Path) -> None:
    path = _example_copy("balanced_train.yaml", tmp_path)
    cases = {
        "clustering.k_maxx=3": "--set clustering.k_maxx: unknown key; did you mean 'k_max'?",
        "clusterin.k_max=3": "--set clusterin.k_max: unknown key 'clusterin'; did you mean "
        "'clustering'?",
        "clustering.k_max=0": f"{path} (--set clustering.k_max): "
        "balanced_dataset.clustering.k_max: must be >= 1; got 0",
        "clustering.k_min=20": f"{path} (--set clustering.k_min): balanced_dataset.clustering: "
        "k_min (20) must be <= k_max (16)",
        "output.csv_path.x=1": "--set output.csv_path.x: balanced_dataset.output.csv_path is "
        "'demo/balanced_train.csv', not a block of keys; set balanced_dataset.output.csv_path "
        "itself",
    }
    for item, message in cases.items():
        res = _invoke("build-balanced-dataset", path, "--set", item)
        assert res.exit_code == 1, item
        assert res.stderr == f"error: {message}\n", item
    res = _invoke("build-balanced-dataset", path, "--set", "clustering.k_max")
    assert res.exit_code == 2
    assert (
        "Invalid value for '--set': 'clustering.k_max': expected KEY=VALUE with a dotted key "
        "of the config, e.g. --set clustering.k_max=12" in _flat(res.stderr)
    )
    assert not (tmp_path / "demo").exists()


def test_set_on_train_constructor_keys_and_list_items(tmp_path: Path) -> None:
    path = _example_copy("weighted_sampler_segmentation.yaml", tmp_path)
    cfg = load_train_config(
        path,
        check_imports=False,
        overrides=[
            "optimizer.lr=0.01",
            "train_dataset.data_loader.batch_size=4",
            "train_dataset.augmentation_list.0.p=0.25",
            "epochs=5",
        ],
    )
    assert cfg.optimizer.kwargs["lr"] == 0.01
    assert cfg.train_dataset.data_loader.batch_size == 4
    assert cfg.train_dataset.augmentation_list is not None
    assert cfg.train_dataset.augmentation_list[0] == {
        "_target_": "albumentations.HorizontalFlip",
        "p": 0.25,
    }
    assert cfg.epochs == 5
    with pytest.raises(ConfigError) as err:
        load_train_config(path, False, ["train_dataset.data_loader.batch_sz=4"])
    assert str(err.value) == (
        "--set train_dataset.data_loader.batch_sz: unknown key; did you mean 'batch_size'?"
    )
    with pytest.raises(ConfigError) as err:
        load_train_config(path, False, ["train_dataset.augmentation_list.9.p=1"])
    assert str(err.value) == (
        "--set train_dataset.augmentation_list.9.p: train_dataset.augmentation_list is a list "
        "of 4 items; give an index 0..3"
    )


# --- config show ---------------------------------------------------------------------------------


def test_show_prints_the_effective_config(tmp_path: Path) -> None:
    path = _example_copy("balanced_train.yaml", tmp_path)
    res = _invoke("config", "show", path, "--set", "clustering.k_max=12")
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith(f"# effective build-balanced-dataset config of {path}\n")
    shown = yaml.safe_load(res.stdout)
    cfg = load_config(path, BalancedFile, ["clustering.k_max=12"])
    expected = cfg.model_dump(mode="json")
    del expected["balanced_dataset"]["exclusion"]["nodata_class"]  # not given: left out
    assert shown == expected
    assert shown["balanced_dataset"]["uniqueness"]["ef"] == 48  # a default, filled in
    # what show prints loads back to the same config
    again = tmp_path / "again.yaml"
    again.write_text(res.stdout)
    assert load_config(again, BalancedFile) == cfg


def test_show_expands_env_and_hides_passwords(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMT_SHOW_URL", "postgresql://bob:s3cret-pw@db.example:5432/tiles")
    path = tmp_path / "pg.yaml"
    path.write_text(
        "balanced_dataset:\n"
        "  input: {dsn: '${SMT_SHOW_URL}', table: tile}\n"
        "  output: {csv_path: out.csv}\n"
    )
    res = _invoke("config", "show", path)
    assert res.exit_code == 0, res.output
    inp = yaml.safe_load(res.stdout)["balanced_dataset"]["input"]
    assert inp["dsn"] == "postgresql://bob:***@db.example:5432/tiles"
    assert "s3cret" not in res.stdout
    res = _invoke("config", "show", path, "--set", "input.password=hunter2")
    assert yaml.safe_load(res.stdout)["balanced_dataset"]["input"]["password"] == "***"
    assert "hunter2" not in res.output
    path2 = tmp_path / "coreset.yaml"
    path2.write_text(
        "coreset:\n  catalog_run_id: 3\n  catalog_url: postgresql://u:pw123@h/db\n"
        "  output: {csv_path: c.csv}\n"
    )
    res = _invoke("config", "show", path2)  # the older spelling: read, shown in the new one
    shown = yaml.safe_load(res.stdout)
    assert shown["coreset"]["catalog"]["url"] == "postgresql://u:***@h/db"
    assert shown["coreset"]["catalog"]["run_id"] == 3
    assert "catalog_url" not in shown["coreset"] and "pw123" not in res.output
    assert res.stderr == (
        f"warning: {path2}: coreset.catalog_url and coreset.catalog_run_id: an older spelling, "
        "still read but to be removed; write coreset.catalog: {url: ..., run_id: ...}\n"
    )
    monkeypatch.delenv("SMT_SHOW_URL")
    res = _invoke("config", "show", path)
    assert res.exit_code == 1
    assert res.stderr == (
        f"error: {path}: balanced_dataset.input.dsn: environment variable SMT_SHOW_URL is not "
        "set; export it or write the value into the config\n"
    )


def test_show_refuses_a_file_of_no_command(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("something: 1\n")
    res = _invoke("config", "show", path)
    assert res.exit_code == 1
    assert res.stderr == (
        f"error: {path}: cannot tell which command this config is for: expected a top-level "
        "key balanced_dataset, coreset, split, check_leakage, train_dataset; see "
        "`pytorch-smt-tools config "
        "init COMMAND`\n"
    )


# --- --dry-run -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tile_table(demo_pairs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from smt_tools.pipelines.ingest import run_ingest

    tiles = tmp_path_factory.mktemp("tiles") / "tiles.parquet"
    run_ingest(demo_pairs, catalog=str(tiles), patch_size=256, nodata_class=0, workers=1)
    return tiles


def _balanced_config(tmp_path: Path, tiles: Path, **output: str) -> Path:
    out = {"csv_path": str(tmp_path / "out" / "b.csv"), **output}
    path = tmp_path / "b.yaml"
    path.write_text(
        yaml.safe_dump(
            {"balanced_dataset": {"input": {"tiles": str(tiles)}, "output": out}},
            sort_keys=False,
        )
    )
    return path


def test_dry_run_checks_and_writes_nothing(tile_table: Path, tmp_path: Path) -> None:
    path = _balanced_config(tmp_path, tile_table, geojson_path=str(tmp_path / "out" / "b.geojson"))
    before = _files(tmp_path)
    res = _invoke("build-balanced-dataset", path, "--dry-run", "--set", "clustering.k_max=6")
    assert res.exit_code == 0, res.output
    assert _files(tmp_path) == before  # nothing computed or written, not even run.json
    lines = res.stdout.splitlines()
    size = tile_table.stat().st_size / 1024
    assert lines == [
        f"Dry run of build-balanced-dataset with {path}: nothing computed or written",
        "  mode     masks_only, sampling_method rank_max",
        f"  input    input.tiles: {tile_table} ({size:.1f} KB), 16 tiles",
        f"  output   output.csv_path: {tmp_path / 'out' / 'b.csv'} (new)",
        f"  output   output.geojson_path: {tmp_path / 'out' / 'b.geojson'} (new; QGIS style "
        f"{tmp_path / 'out' / 'b.qml'})",
        f"  output   catalog run: a run and one result per tile, in {tile_table}.runs/",
        "  setting  clustering: k 4..6 by elbow, random_state 42",
        "  setting  exclusion: border nodata on, black border on, nodata_class from the input, "
        "max_nodata_ratio 1",
        "  setting  weights: weight_floor 0.05, rare_class_boost 1, temperature 1",
        "Checks passed: the config is valid, inputs exist and outputs are writable.",
    ]
    # --json records the plan
    record = tmp_path / "plan.json"
    res = _invoke("build-balanced-dataset", path, "--dry-run", "--json", record)
    assert res.exit_code == 0, res.output
    summary = json.loads(record.read_text())["summary"]
    assert summary["dry_run"] is True
    assert summary["inputs"] == {"input.tiles": lines[2].split(": ", 1)[1]}
    assert not (tmp_path / "out").exists()


def test_dry_run_refuses_missing_inputs_and_unwritable_outputs(
    tile_table: Path, tmp_path: Path
) -> None:
    path = _balanced_config(tmp_path, tmp_path / "missing.parquet")
    res = _invoke("build-balanced-dataset", path, "--dry-run")
    assert res.exit_code == 1
    assert res.stderr == (
        f"error: input.tiles: file not found: {tmp_path / 'missing.parquet'}; check the path\n"
    )
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    path = _balanced_config(tmp_path, tile_table, csv_path=str(blocker / "b.csv"))
    res = _invoke("build-balanced-dataset", path, "--dry-run")
    assert res.exit_code == 1
    assert res.stderr == (
        f"error: output.csv_path: cannot write {blocker / 'b.csv'}: {blocker} is a file, not a "
        "folder; fix the output path\n"
    )
    path = _balanced_config(tmp_path, tile_table, csv_path=str(tile_table))
    res = _invoke("build-balanced-dataset", path, "--dry-run")
    assert res.exit_code == 1
    assert res.stderr.startswith(f"error: output.csv_path {tile_table} is the input input.tiles")


def test_dry_run_of_split_coreset_embed_and_train(tile_table: Path, tmp_path: Path) -> None:
    balanced = _balanced_config(tmp_path, tile_table)
    assert _invoke("build-balanced-dataset", balanced).exit_code == 0
    csv = tmp_path / "out" / "b.csv"
    split, coreset = tmp_path / "s.yaml", tmp_path / "c.yaml"
    for path, section in ((split, "split"), (coreset, "coreset")):
        out = {"csv_path": str(tmp_path / f"{section}.csv")}
        path.write_text(yaml.safe_dump({section: {"input_csv_path": str(csv), "output": out}}))
    train = _example_copy("weighted_sampler_segmentation.yaml", tmp_path)
    before = _files(tmp_path)
    res = _invoke("split", split, "--dry-run", "--set", "n_splits=2")
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[1] == "  mode     2 folds, stratified_group by source_image_id"
    res = _invoke("select-coreset", coreset, "--dry-run", "--set", "budget=0.5")
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[1] == "  mode     cb, budget 50% of the included tiles"
    res = _invoke("select-coreset", coreset, "--dry-run", "--set", "method=fd")
    assert res.exit_code == 1
    assert res.stderr == (
        "error: coreset.method fd needs tile embeddings: set coreset.parquet_path to the "
        "embedding cache (fill it with `pytorch-smt-tools embed CONFIG`)\n"
    )
    res = _invoke(
        "embed",
        balanced,
        "--dry-run",
        "--set",
        f"embeddings.parquet_path={tmp_path / 'emb.parquet'}",
    )
    assert res.exit_code == 0, res.output
    assert f"  output   embeddings.parquet_path: {tmp_path / 'emb.parquet'} (new)" in res.stdout
    res = _invoke(
        "train",
        train,
        "--dry-run",
        "--set",
        f"train_dataset.input_csv_path={csv}",
        "--set",
        f"val_dataset.input_csv_path={csv}",
        "--set",
        "val_groups=[scene_001]",
        "--output-dir",
        tmp_path / "run",
    )
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[1] == "  mode     2 epoch(s), 20 steps each on device auto"
    assert f"  output   output_dir: {tmp_path / 'run'} (new; best.pt" in res.stdout
    assert _files(tmp_path) == before


@pytest.mark.db
def test_dry_run_reaches_the_catalog_and_adds_no_row(
    fresh_database_url: str, demo_pairs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    from smt_tools.catalog import redact
    from smt_tools.pipelines.catalog_init import run_catalog_init
    from smt_tools.pipelines.ingest import run_ingest

    monkeypatch.setenv("SMT_DATABASE_URL", fresh_database_url)
    run_catalog_init()
    run_ingest(demo_pairs, patch_size=256, nodata_class=0, workers=1)
    path = _example_copy("balanced_postgres.yaml", tmp_path)

    def counts() -> tuple[int, int]:
        with psycopg.connect(fresh_database_url) as conn:
            row = conn.execute(
                "select (select count(*) from run), (select count(*) from tile_result)"
            ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    before = counts()
    res = _invoke(
        "build-balanced-dataset",
        path,
        "--dry-run",
        "--set",
        f"output.csv_path={tmp_path / 'b.csv'}",
        "--set",
        "output.geojson_path=null",
    )
    assert res.exit_code == 0, res.output
    assert counts() == before
    assert not (tmp_path / "b.csv").exists()
    label = redact(fresh_database_url)
    assert f"  input    input (catalog): {label} table tile where nodata_ratio < 0.05" in res.stdout
    assert "  output   catalog run: a run and one result per tile, in the catalog" in res.stdout
    assert res.stdout.splitlines()[-1] == (
        "Checks passed: the config is valid, inputs exist, outputs are writable and the "
        "catalog is reachable."
    )
    # an empty database: the schema is missing, named before any work
    monkeypatch.setenv("SMT_DATABASE_URL", fresh_database_url.rsplit("/", 1)[0] + "/postgres")
    res = _invoke("build-balanced-dataset", path, "--dry-run")
    assert res.exit_code == 1
    assert "Catalog schema missing in" in res.stderr
    assert "run `pytorch-smt-tools catalog init`" in res.stderr


def test_dry_run_names_an_unreachable_catalog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMT_DATABASE_URL", "postgresql://nobody:pw@127.0.0.1:9/none")
    path = _example_copy("split_kfold.yaml", tmp_path)
    res = _invoke(
        "split",
        path,
        "--dry-run",
        "--set",
        "input_csv_path=null",
        "--set",
        "catalog.table=tile",
    )
    assert res.exit_code == 1
    assert res.stderr.startswith(
        "error: cannot connect to the catalog postgresql://nobody:***@127.0.0.1:9/none"
    )
    assert "pw" not in res.stderr.replace("postgresql", "")


def test_load_config_keeps_old_behaviour_without_overrides(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    with pytest.raises(ConfigError) as err:
        load_config(path, SplitFile)
    assert str(err.value) == (
        f"{path}: the file is empty; see conf/examples/ for a complete config"
    )
    # with --set the whole config may come from the command line
    cfg = load_config(path, SplitFile, ["input_csv_path=a.csv", "output.csv_path=b.csv"])
    assert str(cfg.split.input_csv_path) == "a.csv" and cfg.split.n_splits == 5
    assert isinstance(TrainConfig.model_json_schema(), dict)
