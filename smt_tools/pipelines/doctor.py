"""``doctor``: what this install can do: library versions, the catalog, the kNN backend.

Each check is one :class:`Check`. A *required* check that fails makes ``doctor`` exit 1:
the core libraries (numpy, rasterio/GDAL, pyproj/PROJ), the default kNN backend, and, when a
catalog is configured (``--catalog`` or ``$SMT_DATABASE_URL``), that it is reachable, has
PostGIS and is migrated. Optional parts (torch, CUDA) are reported, never failed: without
them only ``embed`` and ``train`` are unavailable. torch is imported only here, lazily.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import platform
from dataclasses import dataclass, field
from typing import Any

#: kNN backend name (``uniqueness.backend``) -> the module it needs.
KNN_MODULES = {
    "torch": "torch",
    "hnsw": "hnswlib",
    "faiss": "faiss",
    "sklearn": "sklearn.neighbors",
}


@dataclass(frozen=True)
class Check:
    """One line of the report: ``ok`` False on a failed check; ``required`` failures exit 1."""

    name: str
    ok: bool
    value: str
    required: bool = True
    fix: str = ""


@dataclass
class DoctorResult:
    checks: list[Check] = field(default_factory=list)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.required and not c.ok]

    def summary(self) -> dict[str, Any]:
        return {
            "ok": not self.failed,
            "checks": {
                c.name: {"ok": c.ok, "value": c.value, "required": c.required, "fix": c.fix}
                for c in self.checks
            },
            "failed": [c.name for c in self.failed],
        }


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _version_of(module: str, attr: str = "__version__") -> tuple[bool, str]:
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # an install that is broken counts as missing
        first = (str(exc).splitlines() or [""])[0]
        return False, f"not importable ({type(exc).__name__}: {first})"
    version = getattr(mod, attr, None)
    if version is None:
        from importlib import metadata

        dist = {"hnswlib": "hnswlib", "faiss": "faiss-cpu"}.get(module, module.split(".")[0])
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            version = "unknown version"
    return True, str(version)


def _library_checks() -> list[Check]:
    from smt_tools._version import __version__

    out = [
        Check("smt-tools", True, __version__),
        Check("python", True, f"{platform.python_version()} ({platform.python_implementation()})"),
    ]
    ok, v = _version_of("numpy")
    out.append(Check("numpy", ok, v, fix="pip install numpy"))
    ok, v = _version_of("rasterio", "__gdal_version__")
    if ok:
        import rasterio

        v = f"{v} (rasterio {rasterio.__version__})"
    out.append(Check("GDAL", ok, v, fix="pip install --force-reinstall rasterio"))
    ok, v = _version_of("pyproj", "proj_version_str")
    if ok:
        import pyproj

        v = f"{v} (pyproj {pyproj.__version__})"
    out.append(Check("PROJ", ok, v, fix="pip install --force-reinstall pyproj"))
    return out


def _torch_checks() -> list[Check]:
    fix = "pip install 'smt-tools[embed,train]' (needed by embed and train only)"
    if not _installed("torch"):
        return [
            Check("torch", False, "not installed", required=False, fix=fix),
            Check("CUDA", False, "not available (torch not installed)", required=False),
        ]
    ok, v = _version_of("torch")
    if not ok:
        return [Check("torch", False, v, required=False, fix=fix)]
    import torch

    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        cuda = Check("CUDA", True, f"{torch.version.cuda}: {names}", required=False)
    else:
        built = torch.version.cuda or "none"
        cuda = Check("CUDA", False, f"not available (torch built for CUDA {built})", required=False)
    return [Check("torch", True, v, required=False), cuda]


def _knn_check() -> Check:
    from smt_tools.config.balanced import UniquenessConfig
    from smt_tools.curation.uniqueness import resolve_backend

    backend = resolve_backend(str(UniquenessConfig().backend))  # auto: what this install uses
    module = KNN_MODULES.get(backend, backend)
    ok, v = _version_of(module) if _installed(module.split(".")[0]) else (False, "not installed")
    extra = {"hnsw": "hnsw", "faiss": "faiss"}.get(backend)
    fix = (
        f"pip install 'smt-tools[{extra}]', or set uniqueness.backend: sklearn"
        if extra
        else "pip install scikit-learn"
    )
    return Check(f"kNN backend {backend} (default)", ok, f"{module} {v}", fix=fix)


def _catalog_checks(catalog: str | None) -> list[Check]:
    from smt_tools.catalog.store import is_parquet_target
    from smt_tools.errors import SmtError

    target = catalog or os.environ.get("SMT_DATABASE_URL", "").strip() or None
    if target is None:
        return [
            Check(
                "catalog",
                True,
                "not configured (no --catalog, no $SMT_DATABASE_URL): local tile tables only",
                required=False,
            )
        ]
    if is_parquet_target(target):
        exists = os.path.isfile(target)
        state = "exists" if exists else "not found (created by `catalog ingest`)"
        return [Check("catalog", True, f"local tile table {target}: {state}", required=False)]

    from smt_tools.catalog.postgis_store import PostgisStore

    try:
        store = PostgisStore(target, check_schema=False)
    except SmtError as exc:
        return [Check("catalog", False, str(exc).replace("\n", " "))]
    try:
        try:
            pg, postgis = store.server_versions()
        except SmtError as exc:
            return [Check("catalog", False, str(exc).replace("\n", " "))]
        out = [Check("catalog", True, f"{store.label} reachable (PostgreSQL {pg})")]
        out.append(
            Check(
                "PostGIS",
                postgis is not None,
                postgis or "not installed in this database",
                fix="run `pytorch-smt-tools catalog init` (it creates the extension)",
            )
        )
        out.append(_schema_check(store))
        return out
    finally:
        store.close()


def _schema_check(store: Any) -> Check:
    from smt_tools.catalog import migration_files
    from smt_tools.errors import CatalogSchemaError, SmtError

    try:
        store.require_schema()
        n = len(migration_files())
        return Check("catalog schema", True, f"migrated ({n} migrations applied)")
    except CatalogSchemaError as exc:
        return Check(
            "catalog schema",
            False,
            str(exc).replace("\n", " "),
            fix="run `pytorch-smt-tools catalog init`",
        )
    except SmtError as exc:
        return Check("catalog schema", False, str(exc).replace("\n", " "))


def run_doctor(catalog: str | None = None) -> DoctorResult:
    """Run every check (see module docstring)."""
    result = DoctorResult()
    result.checks += _library_checks()
    result.checks += _torch_checks()
    result.checks.append(_knn_check())
    result.checks += _catalog_checks(catalog)
    return result
