"""DINOv2 embeddings: real loader on a tiny random model, preprocessing, keyed cache, resume."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from smt_tools.config.balanced import BalancedDatasetConfig, EmbeddingsConfig
from smt_tools.embeddings import cache as C
from smt_tools.embeddings.dataset import preprocess_batch, resolve_scale
from smt_tools.embeddings.model import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocess,
    describe_model,
    load_model,
)
from smt_tools.errors import ConfigError, EmbeddingCacheError, ModelLoadError
from smt_tools.pipelines.embed import ensure_embeddings, uniqueness_for_tiles
from smt_tools.raster.scan import PairSpec, inspect_pair, scan
from smt_tools.raster.tiling import tile_windows
from smt_tools.tiletable import TileTable
from tests.rasters import write_tif

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def save_tiny_dinov2(folder: Path, processor: bool = True) -> Path:
    """A random-initialised 2-layer DINOv2 (hidden 32) saved with save_pretrained."""
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
    if processor:
        BitImageProcessor(
            size={"shortest_edge": 32},
            crop_size={"height": 28, "width": 28},
            image_mean=list(IMAGENET_MEAN),
            image_std=list(IMAGENET_STD),
        ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_dinov2(tmp_path_factory.mktemp("tiny_dinov2"))


@pytest.fixture(scope="session")
def demo_tiles(demo_pairs: Path) -> TileTable:
    """Tiles of 64 px from the first two demo scenes (2 x 64 = 128 tiles)."""
    pairs = pd.read_csv(demo_pairs)
    sources, windows = [], []
    for row in pairs.head(2).itertuples():
        src = inspect_pair(
            PairSpec(str(demo_pairs.parent / row.image), str(demo_pairs.parent / row.mask))
        )
        sources.append(src)
        windows.append(tile_windows(src.image.width, src.image.height, 64))
    return scan(sources, windows, workers=1)


def _ecfg(model: Path, cache: Path | None, **over: object) -> EmbeddingsConfig:
    data: dict[str, object] = {
        "dino_model": str(model),
        "batch_size": 16,
        "num_workers": 0,
        "parquet_path": str(cache) if cache else None,
    }
    data.update(over)
    return EmbeddingsConfig.model_validate(data)


# --- model loading ---------------------------------------------------------------------------


def test_tiny_model_through_real_loader(tiny_model: Path) -> None:
    loaded = load_model(str(tiny_model))
    assert loaded.dim == 32
    assert loaded.model_id == str(tiny_model.resolve())
    assert not loaded.model.training
    g = loaded.geometry  # from the folder's preprocessor_config.json
    assert (g.shortest_edge, g.crop) == (32, 28)
    from smt_tools.embeddings.extract import forward_cls

    x = torch.randn(3, 3, 28, 28)
    emb = forward_cls(loaded.model, x, "cpu")
    assert emb.shape == (3, 32) and emb.dtype == np.float32
    with torch.inference_mode():
        ref = loaded.model(pixel_values=x).last_hidden_state[:, 0].numpy()
    np.testing.assert_allclose(emb, ref, rtol=1e-6, atol=1e-6)


def test_directory_without_processor_uses_dinov2_defaults(tmp_path: Path) -> None:
    folder = save_tiny_dinov2(tmp_path / "m", processor=False)
    model_id, g = describe_model(str(folder))
    assert model_id == str(folder.resolve())
    assert (g.shortest_edge, g.crop, g.mean, g.std) == (256, 224, IMAGENET_MEAN, IMAGENET_STD)


def test_short_names_and_bad_names() -> None:
    assert describe_model("dinov2-small")[0] == "facebook/dinov2-small"
    assert describe_model("facebook/dinov2-large")[0] == "facebook/dinov2-large"
    with pytest.raises(ModelLoadError, match="not an existing directory nor a hub id"):
        describe_model("./no/such/dir")


def test_checkpoint_without_weights_is_refused(tmp_path: Path) -> None:
    folder = save_tiny_dinov2(tmp_path / "m", processor=False)
    for f in folder.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(ModelLoadError, match="weights could not be loaded"):
        load_model(str(folder))


def test_offline_error_names_model_and_fix(tmp_path: Path) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    env.pop("HF_HUB_CACHE", None)
    env.pop("TRANSFORMERS_CACHE", None)
    code = (
        "from smt_tools.embeddings.model import load_model\n"
        "from smt_tools.errors import ModelLoadError\n"
        "try:\n    load_model('dinov2-small')\n"
        "except ModelLoadError as e:\n    print('ERR', e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    line = out.stdout.strip()
    assert line.startswith("ERR "), out.stderr[-2000:]
    assert "\n" not in line
    assert "'dinov2-small'" in line and "facebook/dinov2-small" in line
    assert "not in the local Hugging Face cache" in line
    assert "`hf download facebook/dinov2-small`" in line
    assert "local directory" in line


# --- preprocessing ---------------------------------------------------------------------------


def test_per_dataset_scale_keeps_brightness_and_repeats_one_band() -> None:
    spec = Preprocess(bands=(1,), scale=(0.0, 255.0), shortest_edge=8, crop=8)
    raw = torch.stack([torch.full((1, 16, 16), v, dtype=torch.uint8) for v in (0, 51, 255)])
    out = preprocess_batch(raw, spec)
    assert out.shape == (3, 3, 8, 8) and out.dtype == torch.float32
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    for i, v in enumerate((0.0, 0.2, 1.0)):  # not stretched per patch
        expected = ((v - mean) / std).expand(3, 8, 8)
        torch.testing.assert_close(out[i], expected, rtol=0, atol=1e-5)


def test_resize_shortest_edge_then_centre_crop() -> None:
    spec = Preprocess(bands=(1, 2, 3), scale=(0.0, 1.0), shortest_edge=4, crop=2)
    raw = torch.zeros(1, 3, 4, 8)
    raw[..., 3:5] = 1.0  # a bright vertical band in the middle columns
    out = preprocess_batch(raw, spec)
    assert out.shape == (1, 3, 2, 2)  # 4x8 stays 4x8, centre 2x2 = columns 3..4
    expected = (1.0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(out[0, :, 0, 0], expected, rtol=0, atol=1e-5)


def test_resolve_scale_dtype_range_and_errors(tmp_path: Path) -> None:
    u16 = tmp_path / "u16.tif"
    f32 = tmp_path / "f32.tif"
    write_tif(u16, np.zeros((3, 8, 8), np.uint16))
    write_tif(f32, np.zeros((1, 8, 8), np.float32))
    assert resolve_scale([str(u16)], [1, 2, 3], None) == (0.0, 65535.0)
    assert resolve_scale([str(f32)], [1], (0.0, 3000.0)) == (0.0, 3000.0)
    with pytest.raises(ConfigError, match=r"set embeddings.scale"):
        resolve_scale([str(f32)], [1], None)
    with pytest.raises(ConfigError, match="has only 1 band"):
        resolve_scale([str(f32)], [1, 2, 3], (0.0, 1.0))
    u8 = write_tif(tmp_path / "u8.tif", np.zeros((1, 8, 8), np.uint8))
    assert resolve_scale([str(u8)], [1], None) == (0.0, 255.0)
    with pytest.raises(ConfigError, match="mix dtypes"):
        resolve_scale([str(u16), str(u8)], [1], None)


# --- cache -----------------------------------------------------------------------------------


def test_cache_joins_by_key_not_file_order(tmp_path: Path) -> None:
    path = tmp_path / "emb.parquet"
    ids = np.array([50, 10, 40, 20, 30], dtype=np.int64)
    emb = np.arange(5 * 4, dtype=np.float32).reshape(5, 4) + ids[:, None] * 1000
    shuffled = np.random.default_rng(0).permutation(5)
    pq.write_table(C.make_table(ids[shuffled], emb[shuffled], "m", "h"), path)
    assert pq.read_schema(path).field("embedding").type.list_size == 4
    want = np.array([30, 99, 10, 50], dtype=np.int64)
    got, found = C.read_embeddings(path, want)
    assert found.tolist() == [True, False, True, True]
    np.testing.assert_array_equal(got[0], emb[ids == 30][0])
    np.testing.assert_array_equal(got[2], emb[ids == 10][0])
    np.testing.assert_array_equal(got[3], emb[ids == 50][0])
    assert np.isnan(got[1]).all() and got.dtype == np.float32
    with pytest.raises(EmbeddingCacheError, match="not model other"):
        C.read_embeddings(path, want, model_id="other", preprocess_hash="h")
    with pytest.raises(EmbeddingCacheError, match="no embedding cache"):
        C.read_embeddings(tmp_path / "none.parquet", want)


def test_cache_later_rows_win_and_repeated_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk written after the main file overrides it; within one file the last row of a
    tile wins (in one row group or across row groups, which reads stream one at a time); a
    tile asked for twice gets its row twice."""
    path = tmp_path / "emb.parquet"

    def rows(ids: list[int], base: float) -> np.ndarray:
        return np.array([[base + i, -i] for i in ids], dtype=np.float32)

    pq.write_table(C.make_table(np.array([1, 2, 3]), rows([1, 2, 3], 0.0), "m", "h"), path)
    chunk = np.array([[7, 7], [4, 4], [9, 9], [5, 5], [6, 6]], np.float32)
    monkeypatch.setattr(C, "ROW_GROUP_ROWS", 2)  # row groups [2, 4], [2, 6], [6]
    part = C.write_chunk(path, np.array([2, 4, 2, 6, 6]), chunk, "m", "h")
    assert pq.ParquetFile(part).num_row_groups == 3
    want = np.array([3, 2, 4, 2, 5, 1, 6], dtype=np.int64)
    got, found = C.read_embeddings(path, want)
    assert found.tolist() == [True, True, True, True, False, True, True]
    expected = [[3, -3], [9, 9], [4, 4], [9, 9], [np.nan, np.nan], [1, -1], [6, 6]]
    np.testing.assert_array_equal(got, np.array(expected, dtype=np.float32))


def test_embeddings_cached_then_joined(
    tiny_model: Path, demo_tiles: TileTable, tmp_path: Path
) -> None:
    path = tmp_path / "emb.parquet"
    cfg = _ecfg(tiny_model, path)
    emb, res = ensure_embeddings(demo_tiles.frame, cfg)
    n = len(demo_tiles)
    assert emb.shape == (n, 32) and emb.dtype == np.float32 and np.isfinite(emb).all()
    assert (res.n_tiles, res.n_cached, res.n_computed, res.dim) == (n, 0, n, 32)
    assert res.model_id == str(tiny_model.resolve()) and res.cache_rows == n
    assert path.is_file() and not C.parts_dir(path).exists()
    # the cache file holds exactly these rows, keyed
    t = pq.read_table(path).to_pandas()
    assert set(t["tile_id"]) == set(demo_tiles.frame["tile_id"])
    assert set(t["preprocess_hash"]) == {res.preprocess_hash}
    # second run, rows shuffled: nothing computed, same vector per tile
    perm = np.random.default_rng(1).permutation(n)
    emb2, res2 = ensure_embeddings(demo_tiles.frame.iloc[perm], cfg)
    assert (res2.n_cached, res2.n_computed) == (n, 0)
    np.testing.assert_array_equal(emb2, emb[perm])
    # without a cache path: same numbers, nothing written
    emb3, res3 = ensure_embeddings(demo_tiles.frame.iloc[:20], _ecfg(tiny_model, None))
    np.testing.assert_allclose(emb3, emb[:20], rtol=1e-5, atol=1e-5)
    assert res3.cache_path is None


def test_foreign_cache_refused_unless_rebuild(
    tiny_model: Path, demo_tiles: TileTable, tmp_path: Path
) -> None:
    path = tmp_path / "emb.parquet"
    frame = demo_tiles.frame.iloc[:20]
    ensure_embeddings(frame, _ecfg(tiny_model, path))
    other = _ecfg(tiny_model, path, bands=[2])  # other preprocessing
    with pytest.raises(EmbeddingCacheError, match=r"--rebuild") as ei:
        ensure_embeddings(frame, other)
    assert str(tiny_model.resolve()) in str(ei.value)
    emb, res = ensure_embeddings(frame, other, rebuild=True)
    assert (res.n_cached, res.n_computed) == (0, 20)
    keys = C.cache_keys(path)
    assert [(m, h) for m, h, _ in keys] == [(res.model_id, res.preprocess_hash)]
    assert np.isfinite(emb).all()


def test_interrupted_extraction_resumes(
    tiny_model: Path, demo_tiles: TileTable, tmp_path: Path
) -> None:
    path = tmp_path / "emb.parquet"
    frame = demo_tiles.frame.iloc[:48]
    cfg = _ecfg(tiny_model, path)

    class Stop(Exception):
        pass

    calls: list[int] = []

    @contextlib.contextmanager
    def stop_after_first(_d: str, _t: int) -> Iterator[Callable[[int], None]]:
        def advance(k: int) -> None:
            calls.append(k)
            raise Stop

        yield advance

    with pytest.raises(Stop):
        ensure_embeddings(frame, cfg, progress_factory=stop_after_first, chunk_rows=16)
    assert calls == [16]
    assert len(list(C.parts_dir(path).glob("part-*.parquet"))) == 1 and not path.exists()
    emb, res = ensure_embeddings(frame, cfg, chunk_rows=16)
    assert (res.n_cached, res.n_computed) == (16, 32)
    ref, _ = ensure_embeddings(frame, _ecfg(tiny_model, None))
    np.testing.assert_allclose(emb, ref, rtol=1e-5, atol=1e-5)
    assert path.is_file() and not C.parts_dir(path).exists()


# --- uniqueness over tiles -------------------------------------------------------------------


def test_uniqueness_for_tiles_uses_cache_and_is_order_independent(
    tiny_model: Path, demo_tiles: TileTable, tmp_path: Path
) -> None:
    from smt_tools.curation.uniqueness import uniqueness_scores

    path = tmp_path / "emb.parquet"
    cfg = BalancedDatasetConfig.model_validate(
        {
            "mode": "embeddings",
            "input": {"tiles": "unused.parquet"},
            "uniqueness": {"k_neighbors": 3, "backend": "faiss"},
            "embeddings": _ecfg(tiny_model, path).model_dump(),
            "output": {"csv_path": str(tmp_path / "out.csv")},
        }
    )
    s = uniqueness_for_tiles(demo_tiles, cfg)
    assert s.shape == (len(demo_tiles),) and s.dtype == np.float64 and np.isfinite(s).all()
    emb, found = C.read_embeddings(path, demo_tiles.frame["tile_id"].to_numpy())
    assert found.all()
    np.testing.assert_allclose(s, uniqueness_scores(emb, 3, "sklearn"), atol=1e-6)
    perm = np.random.default_rng(2).permutation(len(demo_tiles))
    s_perm = uniqueness_for_tiles(demo_tiles.take(perm), cfg)
    np.testing.assert_allclose(s_perm, s[perm], atol=1e-12)


@pytest.mark.gpu
def test_gpu_autocast_matches_cpu(tiny_model: Path, demo_tiles: TileTable) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    frame = demo_tiles.frame.iloc[:32]
    cpu, _ = ensure_embeddings(frame, _ecfg(tiny_model, None))
    gpu, res = ensure_embeddings(frame, _ecfg(tiny_model, None, use_gpu=True, num_workers=2))
    assert res.device == "cuda" and gpu.dtype == np.float32
    cos = np.sum(cpu * gpu, axis=1) / np.linalg.norm(cpu, axis=1) / np.linalg.norm(gpu, axis=1)
    assert cos.min() > 0.99  # bf16 autocast vs float32
