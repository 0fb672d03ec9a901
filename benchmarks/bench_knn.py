"""kNN uniqueness benchmark: time and recall@k of every backend against exact neighbours.

Data: ``--n`` L2-normalised ``--dim``-d vectors from a seeded Gaussian mixture with
``--components`` components. Each component has a random centre and a random low-rank
(``--rank``) covariance plus small isotropic noise, which is how real image embeddings look
(clusters of a low intrinsic dimension), unlike uniform noise where no index works.

Recall@k is measured on a seeded subset of ``--queries`` rows against their exact neighbours
in the ORIGINAL space over the full set (exact ground truth for all rows costs minutes).

    python benchmarks/bench_knn.py                       # 155,000 x 768, appends to BENCHMARKS.md
    python benchmarks/bench_knn.py --n 20000 --no-append # quick check
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import sys
import time
from pathlib import Path

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


def exact_neighbours(x: np.ndarray, queries: np.ndarray, k: int, threads: int) -> np.ndarray:
    """(q, k) exact cosine neighbours (self excluded) of rows ``queries`` over all of ``x``."""
    import faiss

    if threads > 0:
        faiss.omp_set_num_threads(threads)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    _, lab = index.search(x[queries], k + 1)
    out = np.empty((len(queries), k), dtype=np.int64)
    for r, (q, row) in enumerate(zip(queries, lab, strict=True)):
        others = row[row != q][:k]
        out[r] = others
    return out


def recall(found: np.ndarray, truth: np.ndarray, x: np.ndarray, queries: np.ndarray) -> float:
    """Fraction of true neighbours found; a tie at the k-th distance counts as found."""
    k = truth.shape[1]
    hits = 0
    for r, q in enumerate(queries):
        kth = 1.0 - float(x[q] @ x[truth[r, -1]])
        d_found = 1.0 - x[found[q]] @ x[q]
        hits += len(set(found[q].tolist()) & set(truth[r].tolist()))
        # neighbours at exactly the k-th distance are equally correct
        extra = [
            j
            for j, dj in zip(found[q], d_found, strict=True)
            if j not in set(truth[r].tolist()) and dj <= kth + 1e-6
        ]
        hits += len(extra)
    return min(1.0, hits / (len(queries) * k))


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def sklearn_extrapolated(
    x: np.ndarray, queries: np.ndarray, truth: np.ndarray, args: argparse.Namespace
) -> tuple[str, str, str, float, float, float]:
    """sklearn exact brute cosine timed on a seeded query subset, scaled to all n rows."""
    from sklearn.neighbors import NearestNeighbors

    n = len(x)
    rng = np.random.default_rng(args.seed + 2)
    sub = np.union1d(rng.choice(n, size=args.sklearn_queries, replace=False), queries)
    c0 = cpu_seconds()
    t0 = time.perf_counter()
    nn = NearestNeighbors(
        n_neighbors=args.k + 1, metric="cosine", algorithm="brute", n_jobs=args.threads or -1
    ).fit(x)
    _, lab = nn.kneighbors(x[sub])
    scale = n / len(sub)
    secs = (time.perf_counter() - t0) * scale
    cpu = (cpu_seconds() - c0) * scale
    pos = np.searchsorted(sub, queries)
    hits = 0
    for r, q in enumerate(queries):
        others = [j for j in lab[pos[r]] if j != q][: args.k]
        hits += len(set(others) & set(truth[r].tolist()))
    rec = hits / (len(queries) * args.k)
    note = f"brute cosine; timed on {len(sub):,} queries x {n:,}, scaled to {n:,}"
    print(f"sklearn    {secs:8.1f} s (cpu {cpu:.1f} s)  recall@{args.k} = {rec:.4f}  ({note})")
    return ("sklearn", "sklearn", note, secs, cpu, rec)


def main() -> None:
    d = UniquenessConfig()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=155_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--components", type=int, default=300)
    ap.add_argument("--rank", type=int, default=24)
    ap.add_argument("--k", type=int, default=d.k_neighbors)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=0, help="0 = all available cores")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--backends",
        default="hnsw,hnsw-pca256,faiss-128,faiss,sklearn",
        help="comma list of: hnsw (config defaults), hnsw-pca256, faiss, faiss-128, sklearn",
    )
    ap.add_argument(
        "--sklearn-queries",
        type=int,
        default=10_000,
        help="time sklearn brute force on this many seeded query rows against all rows and "
        "scale linearly to n (brute force is linear in queries); 0 = run all n rows",
    )
    ap.add_argument(
        "--no-append", action="store_true", help="print only, do not touch BENCHMARKS.md"
    )
    args = ap.parse_args()

    t0 = time.perf_counter()
    x, _ = make_data(args.n, args.dim, args.components, args.rank, args.seed)
    gen_s = time.perf_counter() - t0
    rng = np.random.default_rng(args.seed + 1)
    queries = np.sort(rng.choice(args.n, size=min(args.queries, args.n), replace=False))
    t0 = time.perf_counter()
    truth = exact_neighbours(x, queries, args.k, args.threads)
    truth_s = time.perf_counter() - t0
    print(
        f"data {args.n} x {args.dim} in {gen_s:.1f} s; exact truth for {len(queries)} queries in {truth_s:.1f} s"
    )

    hnsw_kw = {"M": d.M, "ef_construction": d.ef_construction, "ef": d.ef}
    runs = {
        "hnsw": ("hnsw", {**hnsw_kw, "pca_dim": d.pca_dim}),
        "hnsw-pca256": ("hnsw", {**hnsw_kw, "pca_dim": 256}),
        "faiss": ("faiss", {"pca_dim": None}),
        "faiss-128": ("faiss", {"pca_dim": 128}),
        "sklearn": ("sklearn", {"pca_dim": None}),
    }
    rows = []
    for name in [b.strip() for b in args.backends.split(",") if b.strip()]:
        backend, kw = runs[name]
        if name == "sklearn" and 0 < args.sklearn_queries < args.n:
            rows.append(sklearn_extrapolated(x, queries, truth, args))
            continue
        c0 = cpu_seconds()
        t0 = time.perf_counter()
        idx, _ = knn_search(
            x, args.k, backend, num_threads=args.threads, random_state=args.seed, **kw
        )
        secs = time.perf_counter() - t0
        cpu = cpu_seconds() - c0
        rec = recall(idx, truth, x, queries)
        params = ", ".join(f"{k}={v}" for k, v in kw.items())
        rows.append((name, backend, params, secs, cpu, rec))
        print(
            f"{name:10s} {secs:8.1f} s (cpu {cpu:.1f} s)  recall@{args.k} = {rec:.4f}  ({params})",
            flush=True,
        )

    header = (
        f"\n## kNN uniqueness — {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}\n\n"
        f"Machine: {_machine.machine()}; threads = {args.threads or 'all'}.\n"
        f"Data: {args.n:,} L2-normalised {args.dim}-d vectors, Gaussian mixture of "
        f"{args.components} components (rank {args.rank} + noise), seed {args.seed}. "
        f"Recall@{args.k} on {len(queries):,} seeded queries vs exact neighbours in the original "
        f"{args.dim}-d space. Command: `{_machine.command()}`\n\n"
        "| run | backend | parameters | wall s | cpu s | recall@k |\n|---|---|---|---:|---:|---:|\n"
    )
    table = "".join(
        f"| {n} | {b} | {p} | {s:.1f} | {c:.1f} | {r:.4f} |\n" for n, b, p, s, c, r in rows
    )
    print(header + table)
    if not args.no_append:
        with open(ROOT / "BENCHMARKS.md", "a", encoding="utf-8") as fh:
            fh.write(header + table)


if __name__ == "__main__":
    main()
