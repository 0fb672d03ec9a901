"""torch (CUDA) versions of the heavy coreset kernels: cb, kcenter and fd.

Used when ``coreset.device`` resolves to cuda. ``cb`` and ``kcenter`` run the same algorithm
as :mod:`smt_tools.coreset.scorers` in float64 with the same quantisation and tie-breaking,
so they select the same tiles as the CPU path; ``fd`` runs Lloyd's KMeans on the device
(k-means++ seeding from scikit-learn on the same sample), so its clusters may differ slightly
from the CPU fit. torch is imported lazily: nothing here is loaded on the CPU path.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from smt_tools.coreset import scorers
from smt_tools.errors import ConfigError, missing_dependency


def _torch() -> Any:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency here
        raise missing_dependency("torch", "gpu", "coreset device: cuda") from None
    return torch


def cuda_available() -> bool:
    """True when torch is installed and sees a CUDA device."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve_device(device: str) -> str:
    """``auto`` -> cuda when available else cpu; ``cuda`` without a device is a ConfigError."""
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    if device == "cuda" and not cuda_available():
        raise ConfigError(
            "coreset.device: cuda was requested but torch sees no CUDA device; "
            "use device: cpu or auto"
        )
    return device


def _quantise(t: Any) -> Any:
    torch = _torch()
    return torch.floor(t.to(torch.float64) * scorers._QUANT).to(torch.int64)


def _take_top(gain: Any, ids: Any, k: int) -> Any:
    """Positions of the k best by (-gain, ids) in that order (torch version of scorers._take_top)."""
    torch = _torch()
    m = gain.numel()
    if k < m:
        kth = torch.topk(gain, k).values[-1]
        pool = torch.nonzero(gain >= kth).flatten()
    else:
        pool = torch.arange(m, device=gain.device)
    by_id = pool[torch.argsort(ids[pool], stable=True)]
    by_gain = by_id[torch.argsort(-gain[by_id], stable=True)]
    return by_gain[:k]


def _entropy_rows(t: Any) -> Any:
    torch = _torch()
    tot = t[:, 0].clone()
    for c in range(1, t.shape[1]):
        tot += t[:, c]
    safe = torch.where(t > 0, t, torch.ones_like(t))
    xlogx = torch.where(t > 0, t * torch.log(safe), torch.zeros_like(t))
    acc = xlogx[:, 0].clone()
    for c in range(1, t.shape[1]):
        acc += xlogx[:, c]
    tot_safe = torch.where(tot > 0, tot, torch.ones_like(tot))
    return torch.where(tot > 0, torch.log(tot_safe) - acc / tot_safe, torch.zeros_like(tot))


def cb_order_torch(
    counts: np.ndarray, tile_ids: np.ndarray, growth: float = 0.02, device: str = "cuda"
) -> np.ndarray:
    """:func:`smt_tools.coreset.scorers.cb_order` on a torch device. Returns (n,) int64."""
    torch = _torch()
    dev = torch.device(device)
    c = torch.as_tensor(np.asarray(counts, dtype=np.float64), device=dev)
    n = c.shape[0]
    ids = torch.as_tensor(scorers._check_ids(tile_ids, n), device=dev)
    remaining = torch.arange(n, device=dev)
    order = torch.empty(n, dtype=torch.int64, device=dev)
    s = torch.zeros(c.shape[1], dtype=torch.float64, device=dev)
    done = 0
    while done < n:
        m = n - done
        k = min(scorers.cb_batch_size(done, growth), m)
        gain = _quantise(_entropy_rows(s[None, :] + c[remaining]))
        top = _take_top(gain, ids[remaining], k)
        picked = remaining[top]
        order[done : done + k] = picked
        done += k
        s += c[picked].sum(dim=0)
        keep = torch.ones(m, dtype=torch.bool, device=dev)
        keep[top] = False
        remaining = remaining[keep]
    return np.asarray(order.cpu().numpy(), dtype=np.int64)


def _sq_dists(x: Any, x_norm: Any, centres: Any) -> Any:
    c_norm = (centres * centres).sum(dim=1)
    return (x_norm[:, None] + c_norm[None, :] - 2.0 * (x @ centres.T)).clamp_min(0.0)


def kcenter_order_torch(
    features: np.ndarray,
    tile_ids: np.ndarray,
    budget: int,
    candidates: int = 1024,
    chunk_rows: int = 65_536,
    device: str = "cuda",
) -> np.ndarray:
    """:func:`smt_tools.coreset.scorers.kcenter_order` with the distance work on the device.

    The same preparation, rounds, exact in-round greedy (run on the host, on the small
    candidate block) and R/2 skip rule as the CPU version. Returns (n,) int64 positions.
    """
    torch = _torch()
    dev = torch.device(device)
    x_np = np.asarray(features, dtype=np.float64)
    n = x_np.shape[0]
    ids_np = scorers._check_ids(tile_ids, n)
    if not 1 <= budget <= n:
        raise ValueError(f"budget must be in 1..{n}; got {budget}")
    xc, x_norm_np, first = scorers.kcenter_prepare(x_np, ids_np)
    x = torch.as_tensor(xc, device=dev)
    x_norm = torch.as_tensor(x_norm_np, device=dev)
    ids = torch.as_tensor(ids_np, device=dev)
    neg = scorers._NEG
    min_d = torch.full((n,), np.iinfo(np.int64).max, dtype=torch.int64, device=dev)
    picked = torch.zeros(n, dtype=torch.bool, device=dev)
    order: list[int] = []
    new_centres = [first]
    skip_below = neg
    while True:
        cent = x[torch.as_tensor(new_centres, device=dev)]
        if skip_below > neg:
            active = torch.nonzero(min_d > skip_below).flatten()
        else:
            active = torch.arange(n, device=dev)
        for start in range(0, active.numel(), chunk_rows):
            rows = active[start : start + chunk_rows]
            d = _quantise(_sq_dists(x[rows], x_norm[rows], cent).min(dim=1).values)
            min_d[rows] = torch.minimum(min_d[rows], d)
        order.extend(new_centres)
        picked[torch.as_tensor(new_centres, device=dev)] = True
        min_d[picked] = neg
        done = len(order)
        if done >= budget:
            break
        k = min(candidates, n - done)
        cand = _take_top(min_d, ids, k)
        if n - done - k > 0:
            rest_max = int(torch.kthvalue(min_d, n - k).values.item())
        else:
            rest_max = neg
        cx = x[cand]
        pair = _quantise(_sq_dists(cx, x_norm[cand], cx)).cpu().numpy()
        chosen, low = scorers.greedy_round(
            min_d[cand].cpu().numpy().copy(), pair, ids[cand].cpu().numpy(), rest_max, budget - done
        )
        cand_np = cand.cpu().numpy()
        new_centres = [int(cand_np[j]) for j in chosen]
        skip_below = low // 4 - (low >> 16) - 1
    out = np.empty(n, dtype=np.int64)
    out[:done] = order
    min_np = min_d.cpu().numpy()
    rest = np.flatnonzero(~picked.cpu().numpy())
    if rest.size:
        out[done:] = rest[np.lexsort((ids_np[rest], -min_np[rest]))]
    return out


def _lloyd(x: Any, init: np.ndarray, max_iter: int = 100, tol: float = 1e-6) -> tuple[Any, float]:
    """Lloyd iterations on the device; returns (centres (k, d), inertia)."""
    torch = _torch()
    centres = torch.as_tensor(init, dtype=x.dtype, device=x.device)
    x_norm = (x * x).sum(dim=1)
    k = centres.shape[0]
    inertia = float("inf")
    for _ in range(max_iter):
        d = _sq_dists(x, x_norm, centres)
        dmin, lab = d.min(dim=1)
        sums = torch.zeros_like(centres).index_add_(0, lab, x)
        cnt = torch.bincount(lab, minlength=k).to(x.dtype)
        new = torch.where(cnt[:, None] > 0, sums / cnt.clamp_min(1)[:, None], centres)
        shift = float(((new - centres) ** 2).sum().item())
        centres = new
        inertia = float(dmin.sum().item())
        if shift <= tol:
            break
    d = _sq_dists(x, x_norm, centres)
    inertia = float(d.min(dim=1).values.sum().item())
    return centres, inertia


def fd_order_torch(
    x: np.ndarray,
    tile_ids: np.ndarray,
    *,
    k: int | None = None,
    k_min: int = 2,
    k_max: int = 10,
    sample_size: int = 20_000,
    random_state: int = 0,
    device: str = "cuda",
) -> tuple[np.ndarray, np.ndarray, int]:
    """fd on the device: elbow over Lloyd fits on the seeded sample, assignment of all rows.

    Returns (order (n,) int64, labels (n,) int64, chosen k).
    """
    torch = _torch()
    from sklearn.cluster import kmeans_plusplus

    from smt_tools.curation.composition import elbow_k

    dev = torch.device(device)
    x_np = np.asarray(x, dtype=np.float64)
    n = x_np.shape[0]
    ids = scorers._check_ids(tile_ids, n)
    rows = scorers.kmeans_sample_rows(ids, sample_size, random_state)
    xs_np = x_np[rows]
    xs = torch.as_tensor(xs_np, device=dev)
    distinct = int(np.unique(xs_np, axis=0).shape[0])
    if distinct < 2:
        centres = xs[:1]
        chosen = 1
    else:

        def fit(kk: int) -> tuple[Any, float]:
            init, _ = kmeans_plusplus(xs_np, kk, random_state=random_state)
            return _lloyd(xs, init)

        if k is not None:
            chosen = max(1, min(int(k), distinct))
        else:
            hi = max(1, min(k_max, distinct - 1))
            lo = max(1, min(k_min, hi))
            inertias = {kk: fit(kk)[1] for kk in range(lo, hi + 1)}
            ks = np.array(sorted(inertias), dtype=np.int64)
            chosen = elbow_k(ks, np.array([inertias[int(v)] for v in ks]))
        centres, _ = fit(chosen)
    xa = torch.as_tensor(x_np, device=dev)
    d = _sq_dists(xa, (xa * xa).sum(dim=1), centres)
    dmin, lab = d.min(dim=1)
    labels = lab.cpu().numpy().astype(np.int64)
    dist = np.sqrt(dmin.cpu().numpy().astype(np.float64))
    return scorers.fd_order_from_labels(labels, dist, ids), labels, int(chosen)
