"""``coreset.hybrid``: the steps of ``method: hybrid`` (docs/algorithms.md §10, "Hybrid selection").

Each step takes its ``share`` of the budget from the tiles the earlier steps left: ``vector``
(tiles that a map layer's features cover), ``embedding`` (an embedding method among tiles that
hold given classes) and ``entropy`` (label complexity; the last step, it fills what is left).
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, model_validator

from smt_tools.choices import HybridEmbeddingMethod, HybridStepType
from smt_tools.config._loader import StrictModel

#: most steps in one selection
MAX_STEPS = 32
#: the shares may add up to this much over 1 (rounding of decimal shares such as 0.1 + 0.2)
SHARE_SLACK = 1e-9
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
#: keys each step type reads (besides type, name and share)
_KEYS: dict[str, tuple[str, ...]] = {
    "vector": ("path", "layer", "table", "geometry_column", "where", "min_share"),
    "embedding": ("method", "classes"),
    "entropy": (),
}


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


class HybridStep(StrictModel):
    """One step. ``name`` is what ``coreset_step`` records for the tiles it picks (default: its
    type)."""

    type: HybridStepType
    name: str | None = Field(default=None, description="coreset_step value (default: the type)")
    share: float | None = Field(
        default=None, gt=0, le=1, description="fraction of the budget (entropy: the rest)"
    )
    # vector
    path: Path | None = Field(default=None, description="vector: a GeoPackage or GeoJSON file")
    layer: str | None = Field(default=None, description="vector: layer of a multi-layer file")
    table: str | None = Field(
        default=None, description="vector: a PostGIS table of the catalog (catalog input only)"
    )
    geometry_column: str | None = Field(
        default=None, description="vector, table: its geometry column (default: the only one)"
    )
    where: str | None = Field(
        default=None, description="vector: attribute filter, e.g. class = 'building'"
    )
    min_share: float | None = Field(
        default=None, ge=0, le=1, description="vector: least share of the tile area covered"
    )
    # embedding
    method: HybridEmbeddingMethod | None = Field(
        default=None, description="embedding: fd | kcenter | fa"
    )
    classes: list[int] | None = Field(
        default=None, min_length=1, max_length=1024, description="embedding: class values"
    )

    @property
    def label(self) -> str:
        return self.name or self.type

    @model_validator(mode="after")
    def _keys_of_type(self) -> HybridStep:
        if self.name is not None and not _NAME.match(self.name):
            raise ValueError(f"name {self.name!r} must be 1 to 40 letters, digits, '_', '.' or '-'")
        if self.name == "entropy" and self.type != "entropy":
            raise ValueError(
                "name 'entropy' is the entropy sweep's (it fills the rest); choose another name"
            )
        for other, keys in _KEYS.items():
            if other == self.type:
                continue
            given = [k for k in keys if getattr(self, k) is not None and k not in _KEYS[self.type]]
            if given:
                raise ValueError(
                    f"{given[0]} belongs to {_a(other)} step, not to {_a(self.type)} step; "
                    f"remove it or set type: {other}"
                )
        if self.type != "entropy" and self.share is None:
            raise ValueError(f"a {self.type} step needs share (a fraction of the budget in (0, 1])")
        if self.type == "vector" and (self.path is None) == (self.table is None):
            raise ValueError(
                "a vector step needs exactly one layer: path (GeoPackage / GeoJSON) or table "
                "(a PostGIS table of the catalog)"
            )
        if self.type == "vector" and self.table is None and self.geometry_column is not None:
            raise ValueError("geometry_column applies to table; remove it for a file layer")
        if self.type == "embedding" and (self.method is None or self.classes is None):
            raise ValueError(
                "an embedding step needs method (fd, kcenter or fa) and classes (class values "
                "a tile must hold, e.g. [2, 3])"
            )
        return self


class HybridConfig(StrictModel):
    """``coreset.hybrid``: steps run in order, each on the tiles the earlier ones left."""

    steps: list[HybridStep] = Field(min_length=1, max_length=MAX_STEPS)

    @model_validator(mode="after")
    def _steps(self) -> HybridConfig:
        total = sum(s.share or 0.0 for s in self.steps)
        if total > 1 + SHARE_SLACK:
            shares = " + ".join(f"{s.share:g}" for s in self.steps if s.share is not None)
            raise ValueError(
                f"the shares of the steps add up to {total:g} ({shares}); they must add up to "
                "at most 1 (what they leave goes to the entropy sweep)"
            )
        entropy = [i for i, s in enumerate(self.steps) if s.type == "entropy"]
        if entropy and entropy != [len(self.steps) - 1]:
            raise ValueError(
                "the entropy step fills the rest of the budget: give at most one, as the last step"
            )
        seen: set[str] = set()
        for s in self.steps:
            if s.label in seen:
                raise ValueError(
                    f"two steps are named {s.label!r}; give each a different name (coreset_step)"
                )
            seen.add(s.label)
        return self
