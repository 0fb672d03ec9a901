"""smt-tools: curated, class-balanced, leakage-safe segmentation training sets from large rasters."""

from __future__ import annotations

__version__ = "0.1.0.dev0"
