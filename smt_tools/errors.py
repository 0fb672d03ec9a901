"""User-facing failure types.

Every error a user can cause is an :class:`SmtError`. The CLI catches ``SmtError`` in one
place and prints its message as one line (exit code 1). Specific errors also inherit the
builtin exception they refine, so library users can catch ``ValueError`` / ``OSError`` too.

Messages name the thing (file, key, value), what was expected, and the fix.
"""

from __future__ import annotations


class SmtError(Exception):
    """Root of all smt-tools errors."""


class ConfigError(SmtError, ValueError):
    """A configuration file or command-line value is invalid."""


class InputDataError(SmtError, ValueError):
    """An input table (pairs CSV, patch records, tile table) is malformed."""


class RasterError(SmtError, OSError):
    """A raster could not be opened or read."""


class RasterOpenError(RasterError):
    """A raster file is missing or is not a readable raster."""


class RasterReadError(RasterError):
    """A window could not be read from an open raster."""


class RasterMismatchError(SmtError, ValueError):
    """An image and its mask disagree in size, transform or CRS."""


class CatalogError(SmtError, RuntimeError):
    """The tile catalog (PostGIS) is unreachable, unmigrated or inconsistent."""


class CatalogConnectionError(CatalogError, ConnectionError):
    """The catalog database cannot be reached."""


class CatalogSchemaError(CatalogError):
    """The catalog database has no (or an outdated) schema."""


class UnsafeQueryError(SmtError, ValueError):
    """A user-supplied SQL filter was rejected."""


class EmptySelectionError(SmtError, ValueError):
    """Nothing is left to work on (empty input, everything excluded, empty filter result)."""


class MissingDependencyError(SmtError, ImportError):
    """An optional dependency is not installed; the message gives the pip command."""


class ModelLoadError(SmtError, OSError):
    """A model could not be loaded (not cached, no network, bad directory)."""


class EmbeddingCacheError(SmtError, ValueError):
    """The embedding cache belongs to another model or preprocessing, or is corrupt."""


class OutputError(SmtError, OSError):
    """An output cannot be written: its folder is missing, not writable or a file, the disk
    is full, or another run holds its lock. The message names the path and the cause."""


def missing_dependency(package: str, extra: str, purpose: str) -> MissingDependencyError:
    """Build the standard error for an optional package that is not installed."""
    return MissingDependencyError(
        f"{purpose} needs the optional package '{package}', which is not installed; "
        f'install it with: pip install "smt-tools[{extra}]"'
    )


class SmtDeprecationWarning(FutureWarning):
    """An older config spelling that still works; the CLI prints it as one ``warning:`` line
    naming the new spelling (FutureWarning: shown to users by default, also outside the CLI)."""
