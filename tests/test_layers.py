"""The layers have no way back, and every choice list is declared once (smt_tools.choices).

The import graph is read from the source with ``ast``. EVERY import statement counts: at module
level, inside functions (lazy imports) and under ``if TYPE_CHECKING:``. A lazy import changes
when a module is loaded, not which way the dependency points; the ``config.train`` <->
``train._targets`` cycle this test guards against was two lazy imports.
"""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args, get_type_hints

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

import smt_tools
from smt_tools import choices
from smt_tools.choices import Signals, mode_signals, resolve_sampling_method
from smt_tools.cli.app import app
from smt_tools.config import validate_mapping
from smt_tools.config.balanced import BalancedDatasetConfig, BalancedFile, OutputConfig
from smt_tools.config.coreset import CoresetConfig
from smt_tools.config.split import SplitConfig
from smt_tools.errors import ConfigError, InputDataError

PACKAGE = Path(smt_tools.__file__).parent

#: what ``smt_tools.config`` may import: itself and the modules below it
BOTTOM = {"smt_tools", "smt_tools._version", "smt_tools.errors", "smt_tools.choices"}


def _modules() -> dict[str, tuple[Path, bool]]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _import_graph() -> dict[str, set[str]]:
    """module -> the smt_tools modules it imports (``from pkg import sub`` counts as pkg.sub)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, (path, is_package) in modules.items():
        package = name if is_package else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [
                    f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module
                    for a in node.names
                ]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_graph_sees_lazy_and_relative_imports() -> None:
    graph = _import_graph()
    assert "smt_tools.config._targets" in graph["smt_tools.train._targets"]
    assert "smt_tools.pipelines._config_record" in graph["smt_tools.pipelines.embed"]  # lazy
    assert "smt_tools.config._loader" in graph["smt_tools.config"]
    assert len(graph) > 100
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


def test_no_import_cycle_among_smt_tools_modules() -> None:
    cycle = _find_cycle(_import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_config_imports_nothing_above_it() -> None:
    graph = _import_graph()
    above = {
        (name, target)
        for name, targets in graph.items()
        if name.startswith("smt_tools.config")
        for target in targets
        if not target.startswith("smt_tools.config") and target not in BOTTOM
    }
    assert above == set()
    assert graph["smt_tools.choices"] == set()  # the very bottom
    assert graph["smt_tools.errors"] <= BOTTOM


def test_config_loads_no_domain_module_at_run_time() -> None:
    code = (
        "import sys, json, pkgutil, importlib, smt_tools.config as c\n"
        "for m in pkgutil.iter_modules(c.__path__): importlib.import_module('smt_tools.config.' + m.name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('smt_tools'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "smt_tools.config.train" in loaded and "smt_tools.config._targets" in loaded
    assert {m for m in loaded if not m.startswith("smt_tools.config")} <= BOTTOM


def test_only_the_cli_imports_pipelines_and_nothing_imports_the_cli() -> None:
    """The two entry points, the CLI and the Python API (``smt_tools.api``), sit above the
    pipelines; nothing below them imports either."""
    graph = _import_graph()
    entries = ("smt_tools.cli", "smt_tools.api")
    for name, targets in graph.items():
        if not name.startswith(("smt_tools.cli", "smt_tools.__main__")):
            assert not any(t.startswith("smt_tools.cli") for t in targets), name
        if not name.startswith((*entries, "smt_tools.pipelines")):
            assert not any(t.startswith("smt_tools.pipelines") for t in targets), name
        if name != "smt_tools" and not name.startswith(entries):
            assert "smt_tools.api" not in targets, name


# --- one declaration per choice list --------------------------------------------------------


def _field(model: type, name: str) -> tuple[object, object]:
    info = model.model_fields[name]  # type: ignore[attr-defined]
    return info.annotation, info.get_default(call_default_factory=True)


@pytest.mark.parametrize(
    ("model", "field", "literal", "default"),
    [
        (BalancedDatasetConfig, "mode", choices.Mode, choices.DEFAULT_MODE),
        (
            BalancedDatasetConfig,
            "sampling_method",
            choices.SamplingMethod,
            choices.DEFAULT_SAMPLING_METHOD,
        ),
        (CoresetConfig, "method", choices.CoresetMethod, choices.DEFAULT_CORESET_METHOD),
        (CoresetConfig, "budget_mode", choices.BudgetMode, choices.DEFAULT_BUDGET_MODE),
        (CoresetConfig, "device", choices.CoresetDevice, choices.DEFAULT_CORESET_DEVICE),
        (SplitConfig, "strategy", choices.SplitStrategy, choices.DEFAULT_SPLIT_STRATEGY),
    ],
)
def test_config_fields_use_the_declared_choices(
    model: type, field: str, literal: object, default: str
) -> None:
    annotation, value = _field(model, field)
    assert annotation is literal
    assert value == default and value in get_args(literal)


def test_nested_config_fields_use_the_declared_choices() -> None:
    from smt_tools.config.balanced import ClusteringConfig, UniquenessConfig
    from smt_tools.config.coreset import SamplerWeightsConfig

    assert _field(ClusteringConfig, "k_selection") == (choices.KSelection, "elbow")
    assert _field(UniquenessConfig, "backend") == (choices.KnnBackend, "auto")
    assert _field(SamplerWeightsConfig, "formula") == (choices.WeightFormula, "sqrt_inverse_freq")
    assert choices.VectorFormat in get_args(OutputConfig.model_fields["format"].annotation)


def test_the_tuples_are_the_literals_values() -> None:
    assert choices.MODES == ("masks_only", "embeddings", "embeddings_only")
    assert choices.KNN_BACKENDS == ("auto", "torch", "hnsw", "faiss", "sklearn")
    assert set(get_args(choices.AuditKnnBackend)) == set(choices.KNN_BACKENDS)
    assert choices.TWO_SIGNAL_METHODS < set(choices.SAMPLING_METHODS)
    assert choices.SPATIAL_METHODS < choices.EMBEDDING_METHODS < set(choices.CORESET_METHODS)
    for literal, values in [
        (choices.SamplingMethod, choices.SAMPLING_METHODS),
        (choices.KSelection, choices.K_SELECTIONS),
        (choices.CoresetMethod, choices.CORESET_METHODS),
        (choices.BudgetMode, choices.BUDGET_MODES),
        (choices.WeightFormula, choices.WEIGHT_FORMULAS),
        (choices.SplitStrategy, choices.SPLIT_STRATEGIES),
        (choices.EdgePolicy, choices.EDGE_POLICIES),
        (choices.VectorFormat, choices.VECTOR_FORMATS),
    ]:
        assert get_args(literal) == values


def _cli_command(path: list[str]) -> Any:
    command: Any = typer.main.get_command(app)
    for word in path:
        command = command.commands[word]
    return command


@pytest.mark.parametrize(
    ("path", "name", "literal", "default"),
    [
        # check-leakage: None = not given, so its config file (default: the model's) decides
        (["check-leakage"], "knn_backend", choices.AuditKnnBackend, None),
        (["catalog", "ingest"], "edge", choices.EdgePolicy, choices.DEFAULT_EDGE_POLICY),
    ],
)
def test_cli_options_use_the_declared_choices(
    path: list[str], name: str, literal: object, default: str | None
) -> None:
    command = _cli_command(path)
    hint = get_type_hints(command.callback)[name]
    assert hint == (literal if default is not None else literal | None)  # type: ignore[operator]
    assert next(p for p in command.params if p.name == name).default == default
    if default is None:
        from smt_tools.config.leakage import LeakageConfig

        assert LeakageConfig.model_fields[name].default == choices.DEFAULT_AUDIT_KNN_BACKEND
    res = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    assert "|".join(get_args(literal)) in res.output.replace(" ", "")


def test_domain_functions_use_the_declared_choices() -> None:
    from smt_tools.coreset import CORESET_METHODS, EMBEDDING_METHODS, CoresetParams
    from smt_tools.coreset.weights import coreset_sampler_weights
    from smt_tools.curation.composition import cluster_compositions
    from smt_tools.curation.uniqueness import knn_search
    from smt_tools.pipelines.ingest import run_ingest
    from smt_tools.pipelines.leakage import run_check_leakage
    from smt_tools.raster import EDGE_POLICIES, tile_windows

    def default(fn: object, name: str) -> object:
        return inspect.signature(fn).parameters[name].default  # type: ignore[arg-type]

    assert CORESET_METHODS is choices.CORESET_METHODS
    assert EMBEDDING_METHODS is choices.EMBEDDING_METHODS
    assert EDGE_POLICIES is choices.EDGE_POLICIES
    assert default(cluster_compositions, "k_selection") == choices.DEFAULT_K_SELECTION
    assert default(knn_search, "backend") == choices.DEFAULT_KNN_BACKEND
    assert default(coreset_sampler_weights, "formula") == choices.DEFAULT_WEIGHT_FORMULA
    assert default(tile_windows, "edge") == choices.DEFAULT_EDGE_POLICY
    assert default(run_ingest, "edge") == choices.DEFAULT_EDGE_POLICY
    assert default(run_check_leakage, "knn_backend") == choices.DEFAULT_AUDIT_KNN_BACKEND
    assert CoresetParams(method="cb", budget=0.5).budget_mode == choices.DEFAULT_BUDGET_MODE
    # the messages list the declared values, in order
    with pytest.raises(
        InputDataError, match="must be one of auto, torch, hnsw, faiss, sklearn; got 'x'"
    ):
        knn_search(np.eye(3, dtype=np.float32), 1, "x")
    with pytest.raises(InputDataError, match="must be one of drop, shift, pad; got 'x'"):
        tile_windows(8, 8, 4, 4, edge="x")
    with pytest.raises(ValueError, match="unknown k_selection 'x'"):
        cluster_compositions(np.eye(3), k_selection="x")  # type: ignore[arg-type]


# --- the mode x sampling_method rule, written once ------------------------------------------


def _config(mode: str, method: str) -> dict[str, object]:
    return {
        "balanced_dataset": {
            "mode": mode,
            "sampling_method": method,
            "input": {"tiles": "t.parquet"},
            "output": {"csv_path": "o.csv"},
        }
    }


@pytest.mark.parametrize("mode", choices.MODES)
@pytest.mark.parametrize("method", choices.SAMPLING_METHODS)
def test_one_mode_method_rule_for_config_pipeline_and_curation(mode: str, method: str) -> None:
    """The config, the pipeline's own check and ``combine`` agree with the rule everywhere."""
    from smt_tools.curation.ranking import combine
    from smt_tools.pipelines.balanced import _validate_before_work

    signals = mode_signals(mode)
    comp = np.array([0.1, 0.5, 0.9]) if signals.composition else None
    uniq = np.array([0.3, 0.2, 0.7]) if signals.uniqueness else None
    try:
        effective, warning = resolve_sampling_method(method, signals)
    except ValueError as exc:
        message = str(exc)
        with pytest.raises(ConfigError) as from_config:
            validate_mapping(_config(mode, method), BalancedFile, "c.yaml")
        assert str(from_config.value) == f"c.yaml: balanced_dataset: {message}"
        with pytest.raises(ConfigError) as from_combine:
            combine(method, comp, uniq)
        assert str(from_combine.value) == message
        raw = BalancedDatasetConfig.model_construct(  # not validated: the pipeline checks too
            mode=mode, sampling_method=method, output=OutputConfig(csv_path=Path("o.csv"))
        )
        with pytest.raises(ConfigError) as from_pipeline:
            _validate_before_work(raw)
        assert str(from_pipeline.value) == message
        return
    cfg = validate_mapping(_config(mode, method), BalancedFile, "c.yaml").balanced_dataset
    assert (cfg.mode, cfg.sampling_method) == (mode, method)
    combined = combine(method, comp, uniq, repeat=np.array([1.0, 2.0, 1.0]))
    assert (combined.effective_method, combined.fallback) == (effective, warning)
    assert (warning is None) == (method == effective)


def test_the_rule_itself() -> None:
    both, masks, embeddings = Signals(True, True), Signals(True, False), Signals(False, True)
    assert mode_signals("masks_only") == masks
    assert mode_signals("embeddings") == both
    assert mode_signals("embeddings_only") == embeddings
    assert resolve_sampling_method("rank_add", both) == ("rank_add", None)
    assert resolve_sampling_method("rank_max", masks) == (
        "composition_only",
        "sampling_method rank_max: mode masks_only has no uniqueness signal; weights use the "
        "composition rank alone (composition_only)",
    )
    assert resolve_sampling_method("multiplicative", embeddings)[0] == "uniqueness_only"
    with pytest.raises(ValueError, match="uniqueness_only needs visual uniqueness"):
        resolve_sampling_method("uniqueness_only", masks)
    with pytest.raises(ValueError, match="composition_only needs the composition signal"):
        resolve_sampling_method("composition_only", embeddings)
    with pytest.raises(ValueError) as unknown:
        resolve_sampling_method("rank_mx", both)
    assert str(unknown.value) == (
        "sampling_method must be one of rank_max, rank_multiply, rank_add, multiplicative, "
        "composition_only, uniqueness_only, repeat_factor; got 'rank_mx'"
    )
    for signals in (both, masks, embeddings):  # counts alone: valid in every mode
        assert resolve_sampling_method("repeat_factor", signals) == ("repeat_factor", None)
