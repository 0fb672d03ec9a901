"""Load a DINOv2 model and its preprocessing, offline-safe (docs/algorithms.md §7).

``dino_model`` is either

- a hub id (``facebook/dinov2-small|base|large`` or the short names ``dinov2-small|base|large``),
  resolved from the local Hugging Face cache ONLY (``local_files_only=True``: a run never
  downloads); or
- a local directory holding ``config.json`` and the weights (``save_pretrained`` layout).

A model that cannot be found is a :class:`~smt_tools.errors.ModelLoadError` naming the model
and the two ways to provide it. Weights missing from a checkpoint are an error too: smt-tools
never silently runs a randomly initialised network.

Preprocessing follows the official DINOv2 image processor: resize the shortest edge to 256
(bicubic, antialiased), centre-crop 224, ImageNet mean/std. A local directory with a
``preprocessor_config.json`` uses its values instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from smt_tools.errors import ModelLoadError, missing_dependency

#: Short names accepted for ``embeddings.dino_model``.
HUB_ALIASES: dict[str, str] = {
    "dinov2-small": "facebook/dinov2-small",
    "dinov2-base": "facebook/dinov2-base",
    "dinov2-large": "facebook/dinov2-large",
    "dinov2-giant": "facebook/dinov2-giant",
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: Bumped when the preprocessing code changes meaning (invalidates embedding caches).
PREPROCESS_VERSION = 1


@dataclass(frozen=True)
class Preprocess:
    """Everything that turns a raster window into the model input; hashed into the cache key.

    bands: 1-based raster bands (one band is repeated to three); scale: (min, max) of the
    per-dataset radiometric range mapped to [0, 1]; shortest_edge: resize target (bicubic,
    antialiased); crop: centre-crop size; mean/std: per-channel normalisation.
    """

    bands: tuple[int, ...]
    scale: tuple[float, float]
    shortest_edge: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    version: int = PREPROCESS_VERSION

    @property
    def hash(self) -> str:
        """16 hex characters identifying this preprocessing (cache key component)."""
        payload = json.dumps(asdict(self), sort_keys=True, default=list)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class ImageGeometry:
    """Resize/crop/normalisation of one model (from its processor config or the defaults)."""

    shortest_edge: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


@dataclass
class LoadedModel:
    """A ready-to-run model. ``model_id`` is the cache key component (hub id or absolute dir)."""

    model: Any  # transformers.PreTrainedModel (torch imported lazily)
    model_id: str
    dim: int
    geometry: ImageGeometry


def resolve_model_name(name: str) -> tuple[str, bool]:
    """``(identifier, is_directory)``: an existing directory, else a hub id (aliases expanded)."""
    text = name.strip()
    if not text:
        raise ModelLoadError("embeddings.dino_model is empty; give a hub id or a directory")
    expanded = os.path.expanduser(text)
    if os.path.isdir(expanded):
        return str(Path(expanded).resolve()), True
    if text in HUB_ALIASES:
        return HUB_ALIASES[text], False
    if _HUB_ID.match(text) and not text.startswith((".", "~")):
        return text, False
    raise ModelLoadError(
        f"embeddings.dino_model: {expanded} is not an existing directory nor a hub id; use "
        f"facebook/dinov2-small|base|large, {'|'.join(HUB_ALIASES)}, or a folder written by "
        "save_pretrained (config.json + weights)"
    )


def _not_available(name: str, hub_id: str) -> ModelLoadError:
    home = os.environ.get("HF_HOME") or os.path.join("~", ".cache", "huggingface")
    return ModelLoadError(
        f"embeddings.dino_model {name!r}: {hub_id} is not in the local Hugging Face cache "
        f"({home}) and smt-tools never downloads during a run; download it once on a machine "
        f"with network: `hf download {hub_id}` (`huggingface-cli download` with older "
        "huggingface_hub; same HF_HOME), or set embeddings.dino_model to a local directory "
        "written by save_pretrained"
    )


def _geometry(source: str, is_dir: bool) -> ImageGeometry:
    """Processor values: a directory's preprocessor_config.json, else the DINOv2 defaults."""
    cfg_path: str | None = None
    if is_dir:
        p = Path(source) / "preprocessor_config.json"
        cfg_path = str(p) if p.is_file() else None
    else:
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(source, "preprocessor_config.json")
            cfg_path = found if isinstance(found, str) else None
        except Exception:  # pragma: no cover - old huggingface_hub
            cfg_path = None
    if cfg_path is None:
        return ImageGeometry()
    with open(cfg_path, encoding="utf-8") as fh:
        data = json.load(fh)
    size = data.get("size") or {}
    edge = int(
        (size.get("shortest_edge") or size.get("height") or 256) if isinstance(size, dict) else size
    )
    crop = data.get("crop_size") or {}
    crop_px = int((crop.get("height") or 224) if isinstance(crop, dict) else crop)
    if not data.get("do_center_crop", True):
        crop_px = edge
    mean = tuple(float(v) for v in data.get("image_mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in data.get("image_std", IMAGENET_STD))
    if len(mean) != 3 or len(std) != 3:
        raise ModelLoadError(f"{cfg_path}: image_mean/image_std must have 3 values")
    return ImageGeometry(edge, crop_px, mean, std)


def describe_model(name: str) -> tuple[str, ImageGeometry]:
    """``(model_id, geometry)`` of ``name`` without loading weights (no torch import).

    model_id is the hub id (short names expanded) or the absolute directory; it is the
    model part of the embedding cache key.
    """
    source, is_dir = resolve_model_name(name)
    return source, _geometry(source, is_dir)


def model_dim(name: str) -> int:
    """The embedding width of ``name`` from its config alone (no weights loaded): what a driver
    that sends the model to a cluster checks the cache against."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise missing_dependency("torch and transformers", "embed", "Embeddings") from None
    _, _, config = _model_config(name)
    return int(config.hidden_size)


def _model_config(name: str) -> tuple[str, bool, Any]:
    """(source, source is a directory, transformers config) of ``name``, from local files
    only; a missing or unusable config is one :class:`ModelLoadError` line."""
    from transformers import AutoConfig

    source, is_dir = resolve_model_name(name)
    try:
        config = AutoConfig.from_pretrained(source, local_files_only=True)
    except OSError as exc:
        if is_dir:
            raise ModelLoadError(
                f"embeddings.dino_model {source}: no usable config.json ({_first_line(exc)}); "
                "the folder must be written by save_pretrained"
            ) from None
        raise _not_available(name, source) from None
    return source, is_dir, config


def make_preprocess(
    geometry: ImageGeometry, bands: list[int] | tuple[int, ...], scale: tuple[float, float]
) -> Preprocess:
    """The full preprocessing of one run (its :attr:`Preprocess.hash` keys the cache)."""
    return Preprocess(
        bands=tuple(int(b) for b in bands),
        scale=(float(scale[0]), float(scale[1])),
        shortest_edge=geometry.shortest_edge,
        crop=geometry.crop,
        mean=geometry.mean,
        std=geometry.std,
    )


def load_model(name: str, device: str = "cpu") -> LoadedModel:
    """Load ``name`` (hub id, short name or directory) without network access, in eval mode.

    The model stays float32; on GPU the caller runs it under bf16/fp16 autocast.
    """
    try:
        import torch  # noqa: F401
        import transformers
        from transformers import AutoModel
    except ImportError:
        raise missing_dependency("torch and transformers", "embed", "Embeddings") from None

    source, is_dir, config = _model_config(name)
    if not str(getattr(config, "model_type", "")).startswith("dinov2"):
        raise ModelLoadError(
            f"embeddings.dino_model {name!r} is a {config.model_type!r} model, not DINOv2; "
            "use facebook/dinov2-small|base|large or a DINOv2 directory"
        )
    verbosity = transformers.logging.get_verbosity()
    bars_on = transformers.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        model, info = AutoModel.from_pretrained(
            source, local_files_only=True, output_loading_info=True
        )
    except OSError as exc:
        if is_dir:
            raise ModelLoadError(
                f"embeddings.dino_model {source}: weights could not be loaded "
                f"({_first_line(exc)}); save the model with save_pretrained"
            ) from None
        raise _not_available(name, source) from None
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars_on:
            transformers.logging.enable_progress_bar()
    missing = [k for k in info.get("missing_keys", []) if "mask_token" not in k]
    if missing:
        raise ModelLoadError(
            f"embeddings.dino_model {name!r}: the checkpoint lacks {len(missing)} weights "
            f"(e.g. {missing[0]}); refusing to run with randomly initialised layers"
        )
    model.eval()
    model.to(device)
    dim = int(config.hidden_size)
    model_id = source
    return LoadedModel(model=model, model_id=model_id, dim=dim, geometry=_geometry(source, is_dir))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
