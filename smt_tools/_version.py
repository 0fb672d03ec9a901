"""The package version, in a leaf module every layer may import (``smt_tools`` re-exports it)."""

__version__ = "0.1.0.dev0"
