"""``doctor``: versions of GDAL, PROJ, torch, CUDA and PostGIS; catalog and kNN backend checks."""

from __future__ import annotations

import typer

from smt_tools.cli._common import EXIT_ERROR, console, err_console, exit_after, guard


def register(app: typer.Typer) -> None:
    @app.command("doctor")
    @guard
    def doctor(
        catalog: str | None = typer.Option(
            None,
            "--catalog",
            help="postgresql:// URL to check (default: $SMT_DATABASE_URL; none: not checked).",
        ),
    ) -> object:
        """Check this install: library versions (GDAL, PROJ, numpy, torch + CUDA), the catalog (reachable, PostGIS, migrated) and the default kNN backend.

        Exit code 0 when everything needed is there, 1 with the failing checks listed (torch and CUDA are optional: only embed and train need them).
        """
        from smt_tools.pipelines.doctor import run_doctor

        result = run_doctor(catalog)
        width = max(len(c.name) for c in result.checks)
        for c in result.checks:
            mark = "ok" if c.ok else ("FAIL" if c.required else "--")
            console.print(f"{mark:<4} {c.name:<{width}}  {c.value}", markup=False, soft_wrap=True)
        if result.failed:
            for c in result.failed:
                fix = f"; fix: {c.fix}" if c.fix and c.fix not in c.value else ""
                err_console.print(f"error: {c.name}: {c.value}{fix}", markup=False, soft_wrap=True)
            err_console.print(f"{len(result.failed)} check(s) failed", markup=False)
            exit_after(EXIT_ERROR)
        else:
            console.print("Everything needed is there.")
        return result
