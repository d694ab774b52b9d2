"""Pure functions on D2R routes (no parameters, no learning).

A route is an integer tensor of shape [B, N, K] (see `d2r.nets.base`): N modules numbered
0..N-1 plus an output node numbered N. Row n-1 (n = 1..N) lists the source modules selected
by node n; node n has n candidates (modules 0..n-1) and selects min(K, n) of them, padding the
rest of its row with -1. Module 0 has no row (it reads the encoder output).

The analysis functions (`edge_mask`, `used_modules`, `route_depth`, `edge_frequency`) accept a
torch tensor or a numpy array of any integer dtype (the replay buffer stores int8) and return
the same kind they were given: numpy in -> numpy out, torch in -> torch out (on the same
device). They are vectorised over the batch; only the N nodes are looped over.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

# --------------------------------------------------------------------------------------------
# Shape bookkeeping
# --------------------------------------------------------------------------------------------


def num_edges(num_modules: int) -> int:
    """Number of router logits = candidate edges of the DAG: 1 + 2 + ... + N = N(N+1)/2."""
    return num_modules * (num_modules + 1) // 2


def candidates(node: int) -> int:
    """Number of candidate sources of node `node` (1..N): modules 0..node-1."""
    if node < 1:
        raise ValueError(f"node must be >= 1 (module 0 has no sources), got {node}")
    return node


def num_selected(node: int, top_k: int) -> int:
    """Number of sources node `node` selects: min(K, candidates)."""
    return min(top_k, candidates(node))


def chunk_offset(node: int) -> int:
    """Start of node `node`'s chunk in the flat router output (chunks of size 1, 2, ..., N)."""
    return node * (node - 1) // 2


def padding_mask(num_modules: int, top_k: int, device: Any = None) -> torch.Tensor:
    """[N, K] bool, True where the route holds padding (-1): column k >= min(K, n) in row n-1."""
    n = torch.arange(1, num_modules + 1, device=device)[:, None]
    k = torch.arange(top_k, device=device)[None, :]
    return k >= torch.clamp(n, max=top_k)


def padded_logit_index(num_modules: int, device: Any = None) -> torch.Tensor:
    """[N, N] int64 index that lays the flat logits out as a square, row n-1 = node n.

    Entry (n-1, j) is the flat position of the logit of edge j -> n for j < n, and
    `num_edges(N)` (one past the end, meant for a -inf pad column) for j >= n.
    """
    n = torch.arange(1, num_modules + 1, device=device)[:, None]
    j = torch.arange(num_modules, device=device)[None, :]
    flat = n * (n - 1) // 2 + j
    return torch.where(j < n, flat, torch.full_like(flat, num_edges(num_modules)))


def chain_route(batch: int, num_modules: int, top_k: int, device: Any = None) -> torch.Tensor:
    """The full-depth chain: module n takes module n-1, the output takes module N-1.

    Returns [batch, N, K] int64, column 0 = n-1 for row n-1, every other column -1.
    """
    route = torch.full((batch, num_modules, top_k), -1, dtype=torch.int64, device=device)
    route[:, :, 0] = torch.arange(num_modules, device=device)
    return route


def check_route(route: torch.Tensor | np.ndarray, top_k: int | None = None) -> None:
    """Raise ValueError unless `route` is a well-formed [B, N, K] route.

    Well-formed: row n-1 has min(K, n) distinct sources in [0, n) in its first columns and -1
    in the others. Meant for tests and for checking routes read from disk; forward does not
    call it (it trusts replayed routes).
    """
    r = _as_long(route)
    if r.dim() != 3:
        raise ValueError(f"route must be [B, N, K], got shape {tuple(r.shape)}")
    _, n_mod, k = r.shape
    if top_k is not None and k != top_k:
        raise ValueError(f"route has K={k}, expected {top_k}")
    pad = padding_mask(n_mod, k, r.device).expand_as(r)
    if not torch.all(r[pad] == -1):
        raise ValueError("route: padding positions must hold -1")
    node = torch.arange(1, n_mod + 1, device=r.device)[None, :, None].expand_as(r)
    valid = r[~pad]
    if torch.any(valid < 0) or torch.any(valid >= node[~pad]):
        raise ValueError("route: node n must select sources in [0, n)")
    # distinct sources within a row (padding -1 compared only with itself, so mask it out)
    eq = (r[..., :, None] == r[..., None, :]) & ~pad[..., :, None] & ~pad[..., None, :]
    eq = eq & ~torch.eye(k, dtype=torch.bool, device=r.device)
    if torch.any(eq):
        raise ValueError("route: a node selects the same source twice")


# --------------------------------------------------------------------------------------------
# Analysis (per sample; batched)
# --------------------------------------------------------------------------------------------


def _as_long(route: torch.Tensor | np.ndarray) -> torch.Tensor:
    if isinstance(route, np.ndarray):
        return torch.from_numpy(np.asarray(route, dtype=np.int64))
    return route.long()


def _like_input(value: torch.Tensor, route: torch.Tensor | np.ndarray):
    return value.cpu().numpy() if isinstance(route, np.ndarray) else value


def _edge_mask(r: torch.Tensor) -> torch.Tensor:
    b, n_mod, _ = r.shape
    valid = r >= 0
    onehot = torch.zeros(b, n_mod, n_mod + 1, dtype=torch.bool, device=r.device)
    # padding (-1) is sent to the extra last column, which is dropped
    onehot.scatter_(2, torch.where(valid, r, n_mod), True)
    return onehot[..., :n_mod]


def edge_mask(route: torch.Tensor | np.ndarray):
    """[B, N, N] bool adjacency: entry (b, n-1, j) is True when node n of sample b selects j."""
    return _like_input(_edge_mask(_as_long(route)), route)


def used_modules(route: torch.Tensor | np.ndarray):
    """[B, N] bool: module j is used when a path of selected edges leads from j to the output."""
    adj = _edge_mask(_as_long(route))
    n_mod = adj.shape[1]
    used = adj[:, n_mod - 1, :].clone()  # sources of the output node
    # a module's usage is final once every larger node has been processed (sources < node)
    for n in range(n_mod - 1, 0, -1):
        used |= used[:, n : n + 1] & adj[:, n - 1, :]
    return _like_input(used, route)


def module_depths(route: torch.Tensor | np.ndarray):
    """[B, N] int64: number of modules on the longest selected path module 0 -> ... -> module j.

    Module 0 has depth 1; module n has 1 + the largest depth among its selected sources.
    Every module n >= 1 selects at least one source, so every path extends back to module 0.
    """
    adj = _edge_mask(_as_long(route))
    b, n_mod, _ = adj.shape
    depth = torch.zeros(b, n_mod, dtype=torch.int64, device=adj.device)
    depth[:, 0] = 1
    for n in range(1, n_mod):
        src_depth = torch.where(adj[:, n - 1, :n], depth[:, :n], 0)
        depth[:, n] = 1 + src_depth.max(dim=1).values
    return _like_input(depth, route)


def route_depth(route: torch.Tensor | np.ndarray):
    """[B] int64: number of modules on the longest selected path module 0 -> ... -> output.

    The chain route has depth N; a route whose output reads module 0 alone has depth 1.
    """
    adj = _edge_mask(_as_long(route))
    depth = module_depths(_as_long(route))
    out_src = torch.where(adj[:, -1, :], depth, 0)
    return _like_input(out_src.max(dim=1).values, route)


def edge_frequency(route: torch.Tensor | np.ndarray, num_modules: int | None = None):
    """[N, N] float: entry (n-1, j) = fraction of samples whose node n selects source j.

    Row n-1 is node n (row N-1 the output); entries with j >= n are 0. Each row sums to
    min(K, n) (every sample selects that many distinct sources). `num_modules` only checks
    the route's N.
    """
    r = _as_long(route)
    if num_modules is not None and r.shape[1] != num_modules:
        raise ValueError(f"route has N={r.shape[1]}, expected {num_modules}")
    freq = _edge_mask(r).to(torch.float64).mean(dim=0)
    return _like_input(freq, route)
