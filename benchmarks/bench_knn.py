"""kNN uniqueness benchmark: time, recall@k and top-1 % overlap of every backend against exact.

Data: ``--n`` L2-normalised ``--dim``-d vectors from a seeded Gaussian mixture with
``--components`` components. Each component has a random centre and a random low-rank
(``--rank``) covariance plus small isotropic noise, which is how real image embeddings look
(clusters of a low intrinsic dimension), unlike uniform noise where no index works.

The truth is the exact kNN of ALL rows, computed by ``--truth`` (an exact backend, timed and
reported as a row of its own). Every other run is compared to it on all rows:

- recall@k: found neighbours at most the exact k-th distance away (ties count as found);
- Spearman: rank correlation of the uniqueness scores with the exact scores;
- top-1 %: share of the exact top-1 % most unique tiles that the run also ranks top-1 %
  (curation acts on exactly that tail).

    python benchmarks/bench_knn.py                       # 155,000 x 768, appends to BENCHMARKS.md
    python benchmarks/bench_knn.py --n 20000 --no-append # quick check
    python benchmarks/bench_knn.py --backends torch,torch-tf32,torch-bf16,hnsw,faiss  # GPU
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import sys
import time
from pathlib import Path
from typing import Any

import _machine  # benchmarks/_machine.py (scripts run with benchmarks/ on sys.path)
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smt_tools.config.balanced import UniquenessConfig  # noqa: E402
from smt_tools.curation.uniqueness import knn_search  # noqa: E402


def make_data(
    n: int, dim: int, components: int, rank: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(n, dim) float32 unit rows and (n,) int64 component labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(components, dim)).astype(np.float32)
    sizes = rng.multinomial(n, rng.dirichlet(np.full(components, 2.0)))
    comp = np.repeat(np.arange(components), sizes)
    x = np.empty((n, dim), dtype=np.float32)
    start = 0
    for c, m in enumerate(sizes):
        if m == 0:
            continue
        basis = rng.normal(size=(rank, dim)).astype(np.float32) / np.sqrt(rank)
        scales = np.geomspace(1.0, 0.1, rank).astype(np.float32)
        coef = rng.normal(size=(m, rank)).astype(np.float32) * scales
        block = centres[c] + 0.8 * coef @ basis
        block += 0.05 * rng.normal(size=(m, dim)).astype(np.float32)
        x[start : start + m] = block
        start += m
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    perm = rng.permutation(n)
    return np.ascontiguousarray(x[perm]), comp[perm]


_D = UniquenessConfig()
_HNSW = {"M": _D.M, "ef_construction": _D.ef_construction, "ef": _D.ef}
#: run name -> (backend, knn_search keyword arguments)
RUNS: dict[str, tuple[str, dict[str, Any]]] = {
    "auto": ("auto", {}),
    "torch": ("torch", {"precision": "fp32"}),
    "torch-tf32": ("torch", {"precision": "tf32"}),
    "torch-bf16": ("torch", {"precision": "bf16"}),
    "hnsw": ("hnsw", {**_HNSW, "tail_fraction": _D.tail_fraction}),
    "hnsw-notail": ("hnsw", {**_HNSW, "tail_fraction": 0.0}),
    "hnsw-pca256": ("hnsw", {**_HNSW, "pca_dim": 256}),
    "faiss": ("faiss", {}),
    "faiss-128": ("faiss", {"pca_dim": 128}),
}

#: top share of uniqueness scores compared between a run and the exact scores
TAIL = 0.01


def recall(found_d: np.ndarray, truth_d: np.ndarray) -> float:
    """Share of the k neighbours found within the exact k-th distance (ties count as found).

    found_d / truth_d: (n, k) exact cosine distances of the found / the true neighbours."""
    k = truth_d.shape[1]
    hits = np.minimum(k, (found_d <= truth_d[:, -1:] + 1e-6).sum(axis=1))
    return float(hits.sum() / truth_d.size)


def top_overlap(score: np.ndarray, exact: np.ndarray, share: float = TAIL) -> float:
    """Share of the exact top ``share`` of ``exact`` scores also in the top ``share`` of
    ``score``."""
    t = max(1, int(np.ceil(share * len(exact))))
    top = np.argsort(-score, kind="stable")[:t]
    truth = np.argsort(-exact, kind="stable")[:t]
    return len(np.intersect1d(top, truth)) / t


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def sklearn_extrapolated(
    x: np.ndarray, truth_d: np.ndarray, args: argparse.Namespace
) -> tuple[str, str, str, float, float, float, float, float]:
    """sklearn exact brute cosine timed on a seeded query subset, scaled to all n rows
    (exact, so its recall, Spearman and top-1 % are those of the truth: reported as 1)."""
    from sklearn.neighbors import NearestNeighbors

    n = len(x)
    rng = np.random.default_rng(args.seed + 2)
    sub = np.sort(rng.choice(n, size=min(args.sklearn_queries, n), replace=False))
    c0 = cpu_seconds()
    t0 = time.perf_counter()
    nn = NearestNeighbors(
        n_neighbors=args.k + 1, metric="cosine", algorithm="brute", n_jobs=args.threads or -1
    ).fit(x)
    dist, _ = nn.kneighbors(x[sub])
    scale = n / len(sub)
    secs = (time.perf_counter() - t0) * scale
    cpu = (cpu_seconds() - c0) * scale
    rec = recall(dist[:, 1:].astype(np.float32), truth_d[sub])
    note = f"brute cosine; timed on {len(sub):,} queries x {n:,}, scaled to {n:,}"
    print(f"sklearn    {secs:8.1f} s (cpu {cpu:.1f} s)  recall@{args.k} = {rec:.4f}  ({note})")
    return ("sklearn", "sklearn", note, secs, cpu, rec, 1.0, 1.0)


def run_one(
    x: np.ndarray, backend: str, kw: dict[str, Any], args: argparse.Namespace
) -> tuple[np.ndarray, float, float]:
    """(n, k) distances of ``knn_search``, wall and CPU seconds."""
    c0 = cpu_seconds()
    t0 = time.perf_counter()
    _, dist = knn_search(x, args.k, backend, num_threads=args.threads, random_state=args.seed, **kw)
    return dist, time.perf_counter() - t0, cpu_seconds() - c0


def torch_device() -> str:
    try:
        import torch
    except ImportError:
        return "torch not installed"
    if torch.cuda.is_available():
        return f"torch on {torch.cuda.get_device_name(0)}"
    return f"torch on CPU ({torch.get_num_threads()} threads)"


def main() -> None:
    d = UniquenessConfig()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=155_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--components", type=int, default=300)
    ap.add_argument("--rank", type=int, default=24)
    ap.add_argument("--k", type=int, default=d.k_neighbors)
    ap.add_argument("--threads", type=int, default=0, help="0 = all available cores")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--truth",
        default="torch",
        choices=["torch", "faiss", "sklearn"],
        help="exact backend whose kNN of all rows is the truth (timed, reported as a row)",
    )
    ap.add_argument(
        "--truth-cache",
        type=Path,
        default=None,
        help="folder: reuse the truth's (n, k) distances saved there for the same data "
        "(saved on the first run); the truth row is then left out",
    )
    ap.add_argument(
        "--backends",
        default="hnsw,hnsw-notail,faiss",
        help="comma list of: " + ", ".join(RUNS) + ", sklearn (besides --truth)",
    )
    ap.add_argument(
        "--sklearn-queries",
        type=int,
        default=10_000,
        help="time sklearn brute force on this many seeded query rows against all rows and "
        "scale linearly to n (brute force is linear in queries)",
    )
    ap.add_argument(
        "--no-append", action="store_true", help="print only, do not touch BENCHMARKS.md"
    )
    args = ap.parse_args()

    t0 = time.perf_counter()
    x, _ = make_data(args.n, args.dim, args.components, args.rank, args.seed)
    print(f"data {args.n} x {args.dim} in {time.perf_counter() - t0:.1f} s", flush=True)

    name = f"knn_truth_n{args.n}_d{args.dim}_c{args.components}_r{args.rank}_s{args.seed}_k{args.k}"
    cache = args.truth_cache / f"{name}.npy" if args.truth_cache else None
    rows: list[tuple[str, str, str, float, float, float, float, float]] = []
    if cache is not None and cache.is_file():
        truth_d = np.load(cache)
        print(f"exact truth loaded from {cache}", flush=True)
    else:
        truth_d, secs, cpu = run_one(x, args.truth, {}, args)
        print(f"{args.truth:12s} {secs:8.1f} s (cpu {cpu:.1f} s)  exact truth", flush=True)
        rows.append((args.truth, args.truth, "exact (the truth)", secs, cpu, 1.0, 1.0, 1.0))
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.save(cache, truth_d)
    exact = truth_d.mean(axis=1)
    for name in [b.strip() for b in args.backends.split(",") if b.strip()]:
        if name == "sklearn":
            rows.append(sklearn_extrapolated(x, truth_d, args))
            continue
        backend, kw = RUNS[name]
        dist, secs, cpu = run_one(x, backend, kw, args)
        score = dist.mean(axis=1)
        rec, rho, top = recall(dist, truth_d), spearman(score, exact), top_overlap(score, exact)
        params = ", ".join(f"{k}={v}" for k, v in kw.items()) or "defaults"
        rows.append((name, backend, params, secs, cpu, rec, rho, top))
        print(
            f"{name:12s} {secs:8.1f} s (cpu {cpu:.1f} s)  recall@{args.k} = {rec:.4f}  "
            f"Spearman {rho:.4f}  top-1 % {top:.3f}  ({params})",
            flush=True,
        )

    header = (
        f"\n## kNN uniqueness — {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}\n\n"
        f"Machine: {_machine.machine(torch_device())}; threads = {args.threads or 'all'}.\n"
        f"Data: {args.n:,} L2-normalised {args.dim}-d vectors, Gaussian mixture of "
        f"{args.components} components (rank {args.rank} + noise), seed {args.seed}, "
        f"k = {args.k}. Truth: exact kNN of all rows by `{args.truth}`; recall@k, Spearman of "
        f"the scores and overlap of the top-1 % most unique tiles on all rows. "
        f"Command: `{_machine.command()}`\n\n"
        "| run | backend | parameters | wall s | cpu s | recall@k | Spearman | top-1 % |\n"
        "|---|---|---|---:|---:|---:|---:|---:|\n"
    )
    table = "".join(
        f"| {n} | {b} | {p} | {s:.1f} | {c:.1f} | {r:.4f} | {rho:.4f} | {t:.3f} |\n"
        for n, b, p, s, c, r, rho, t in rows
    )
    print(header + table)
    if not args.no_append:
        with open(ROOT / "BENCHMARKS.md", "a", encoding="utf-8") as fh:
            fh.write(header + table)


if __name__ == "__main__":
    main()
