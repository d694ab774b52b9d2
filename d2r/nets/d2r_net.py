"""The D2R routed network (spec sections 1 and 2).

    h  = MLP(encoder)(x)                 # no activation after the last layer
    e  = Linear(T -> encoder[-1])(onehot(task))
    u  = e * h                           # router input
    x0 = ReLU(h)                         # module input
    module 0:  y_0 = ReLU(W_0 x0 + b_0)
    module n:  x_n = sum_{j in S^n} w^n_j y_j ;  y_n = ReLU(W_n x_n + b_n) + x_n   (n = 1..N-1)
    output:    out = Linear(H -> out_dim)( sum_{j in S^out} w^out_j y_j )

Modules are numbered 0..N-1 (the spec's M_1..M_N); node n (n = 1..N, N = the output) has n
candidate sources, modules 0..n-1, scored by a chunk of n router logits. See `routes.py` for
the route format and the functions that analyse routes.

Implementation: for selection the N(N+1)/2 flat logits are laid out (detached) as a [B, N, N]
square (row n-1 = node n, -inf where j >= n), so route selection for all nodes is one `topk`;
the mixing weights gather their K logits per node from the flat logits and take one softmax.
The forward pass loops over the N modules (inherent: module n needs modules < n) and is
batched over samples: `module_stack.RoutedModuleStack` keeps the module outputs in one buffer,
gathers and mixes the K selected rows of every sample with embedding_bag, and has a hand-written backward
(spec sections 1 and 2; see that module for why and for the ResRouting gradient).
`reference.PlainD2RNet` is the same network written plainly, for the tests and the bench.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from d2r.nets import init as inits
from d2r.nets import routes as R
from d2r.nets.base import MultiTaskNet, RouteMode
from d2r.nets.mlp import mlp
from d2r.nets.module_stack import RoutedModuleStack
from d2r.runtime import seeding


def _softmax(sel: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim, written out: torch.softmax over a last dim of K = 2 is ~3x
    slower on CPU. The shift by the (detached) max changes nothing but the range of exp."""
    e = (sel - sel.detach().amax(dim=-1, keepdim=True)).exp()
    return e / e.sum(dim=-1, keepdim=True)


class D2RNet(MultiTaskNet):
    """Dynamic Depth Routing network: N residual modules wired per sample by a router.

    Args:
        in_dim, out_dim, num_tasks: input width, output width, number of tasks.
        encoder:       widths of the input MLP (the last one is the embedding width, 400).
        num_modules:   N, number of modules (16).
        width:         H, width of every module (128).
        top_k:         K, sources selected per node (2); 1 <= K <= N.
        router_hidden: hidden widths of the router MLP (256, 256).
        fixed_depth:   ablation "fixed full depth": the route is always the chain
                       (module n reads module n-1 with weight 1, the output reads module N-1);
                       route_mode / temperature / resrouting are ignored and no router or task
                       embedding is built (the task then enters the net only through x).
    """

    #: the module stack without host reads and with static shapes (set by an agent whose update
    #: runs with cuda_graphs on); the default pulls gradients, with one host read per backward
    capturable = False

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_tasks: int,
        *,
        encoder: Sequence[int] = (400, 400),
        num_modules: int = 16,
        width: int = 128,
        top_k: int = 2,
        router_hidden: Sequence[int] = (256, 256),
        fixed_depth: bool = False,
        init: str = "release",
    ) -> None:
        super().__init__()
        inits.check_scheme(init)
        if len(encoder) < 1:
            raise ValueError("encoder needs at least one layer")
        if num_modules < 1:
            raise ValueError(f"num_modules must be >= 1, got {num_modules}")
        if not 1 <= top_k <= num_modules:
            raise ValueError(f"top_k must be in [1, num_modules={num_modules}], got {top_k}")
        self.in_dim, self.out_dim, self.num_tasks = in_dim, out_dim, num_tasks
        self.num_modules, self.width, self.top_k = num_modules, width, top_k
        self.fixed_depth = fixed_depth
        self.route_shape = (num_modules, top_k)
        emb = encoder[-1]

        self.encoder = mlp([in_dim, *encoder], activate_last=False)
        self.layers = nn.ModuleList(
            [nn.Linear(emb, width)] + [nn.Linear(width, width) for _ in range(num_modules - 1)]
        )
        self.head = nn.Linear(width, out_dim)
        if fixed_depth:
            self.task_embed = None
            self.router = None
        else:
            self.task_embed = nn.Linear(num_tasks, emb)
            self.router = mlp([emb, *router_hidden, R.num_edges(num_modules)], activate_last=False)
        if init == "release":  # the router's logit layer too: the release gives it basic_init
            inits.release_linears_(self, last=[self.head])

        n = torch.arange(1, num_modules + 1)
        # [N, N] flat-logit position of edge j -> node n (row n-1), num_edges for j >= n
        self.register_buffer("_logit_index", R.padded_logit_index(num_modules), persistent=False)
        # [N, K] True where the route holds -1 padding
        self.register_buffer("_pad", R.padding_mask(num_modules, top_k), persistent=False)
        # [N, 1] ResRouting threshold 1 / (c + 1), c = n candidates for node n
        self.register_buffer("_trust_threshold", (1.0 / (n + 1.0))[:, None], persistent=False)
        #: number of selected sources of node n is self._k[n-1]
        self._k = [R.num_selected(i, top_k) for i in range(1, num_modules + 1)]

    # ----------------------------------------------------------------------------------------
    # Router
    # ----------------------------------------------------------------------------------------

    def _trunk(self, x: torch.Tensor, task: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns (x0, flat router logits [B, N(N+1)/2] or None when fixed_depth)."""
        h = self.encoder(x)
        x0 = F.relu(h)
        if self.router is None:
            return x0, None
        onehot = F.one_hot(task.long(), self.num_tasks).to(h.dtype)
        u = self.task_embed(onehot) * h
        return x0, self.router(u)

    def _square(self, z: torch.Tensor) -> torch.Tensor:
        """Flat logits [B, E] -> [B, N, N], row n-1 = node n's chunk, -inf where j >= n."""
        pad = z.new_full((z.shape[0], 1), float("-inf"))
        flat = torch.cat([z, pad], dim=1).index_select(1, self._logit_index.view(-1))  # 2x faster than [:, idx]
        return flat.view(z.shape[0], self.num_modules, self.num_modules)

    def logits(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """The router's flat logits [B, N(N+1)/2]: node n's chunk of n starts at n(n-1)/2."""
        if self.router is None:
            raise RuntimeError("a fixed_depth D2RNet has no router")
        return self._trunk(x, task)[1]

    def padded_logits(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """The router's logits as [B, N, N]: row n-1 = node n's n logits, then -inf."""
        return self._square(self.logits(x, task))

    def router_logits(self, x: torch.Tensor, task: torch.Tensor) -> list[torch.Tensor]:
        """The router's logit chunks: a list of N tensors, element n-1 = node n's [B, n] logits."""
        if self.router is None:
            raise RuntimeError("a fixed_depth D2RNet has no router")
        _, z = self._trunk(x, task)
        return [z[:, R.chunk_offset(n) : R.chunk_offset(n) + n] for n in range(1, self.num_modules + 1)]

    def select_route(
        self,
        z: torch.Tensor,
        zsq: torch.Tensor,
        task: torch.Tensor,
        route_mode: RouteMode,
        route: torch.Tensor | None = None,
        temperature: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Flat logits [B, E] and the same as [B, N, N] square -> [B, N, K] int64 route (no gradient)."""
        if route_mode == "replayed":
            if route is None:
                raise ValueError("route_mode='replayed' needs route")
            expected = (zsq.shape[0], self.num_modules, self.top_k)
            if tuple(route.shape) != expected:
                raise ValueError(f"route has shape {tuple(route.shape)}, expected {expected}")
            return route.to(device=zsq.device, dtype=torch.int64)
        scores = zsq.detach()
        if route_mode == "sampled":
            # Gumbel-top-k: the top k of z / T + Gumbel noise are k draws without replacement
            # from softmax(z / T). The noise comes from `generator` (default: torch's global RNG),
            # one draw per edge (the flat logits: half the square's entries).
            z = z.detach()
            if temperature is None:
                temp = z.new_ones(z.shape[0])
            elif temperature.dim() == 2:  # [S, T]: a seed-stacked network's samples, seed-major
                seeds = temperature.shape[0]
                seed = torch.arange(seeds, device=z.device).repeat_interleave(z.shape[0] // seeds)
                temp = temperature.to(device=z.device, dtype=z.dtype)[seed, task.long()]
            else:
                temp = temperature.to(device=z.device, dtype=z.dtype)[task.long()]
            # Gumbel(0, 1) = -log(-log U); from uniforms because exponential_ is ~4x slower on
            # CPU. U >= tiny keeps it finite (float32: within [-4.5, 16.6]).
            u = seeding.uniform_(torch.empty_like(z), generator).clamp_(min=torch.finfo(z.dtype).tiny)
            gumbel = u.log_().neg_().log_().neg_()
            scores = self._square(z / temp[:, None] + gumbel)  # the square's padding is -inf
        elif route_mode != "greedy":
            raise ValueError(f"unknown route_mode {route_mode!r}")
        idx = scores.topk(self.top_k, dim=-1).indices
        return idx.masked_fill(self._pad, -1)

    def route_weights(self, z: torch.Tensor, route: torch.Tensor) -> torch.Tensor:
        """Flat logits [B, E] -> [B, N, K] mixing weights: softmax over the selected logits only,
        0 at padding.

        No temperature; differentiable w.r.t. the logits (the selection itself is not). Read from
        the flat logits, not the square: the backward then scatters N*K values per sample, not a
        whole square.
        """
        chunk_start = self._logit_index[:, :1]  # [N, 1] flat position of node n's edge from module 0
        position = (chunk_start + route.clamp(min=0)).view(route.shape[0], -1)
        sel = z.gather(1, position).view_as(route).masked_fill(self._pad, float("-inf"))
        return _softmax(sel)

    def trusted_mask(self, zsq: torch.Tensor, route: torch.Tensor) -> torch.Tensor:
        """[B, N, K] bool ResRouting mask m = 1[p_j > 1/(c+1)], p = full softmax of the chunk."""
        p = torch.softmax(zsq.detach(), dim=-1)
        trusted = p > self._trust_threshold
        return trusted.gather(2, route.clamp(min=0)) & ~self._pad

    # ----------------------------------------------------------------------------------------
    # Forward
    # ----------------------------------------------------------------------------------------

    def forward(
        self,
        x: torch.Tensor,
        task: torch.Tensor,
        *,
        route_mode: RouteMode = "greedy",
        route: torch.Tensor | None = None,
        temperature: torch.Tensor | None = None,
        resrouting: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """See `MultiTaskNet.forward`. Returns (out [B, out_dim], route [B, N, K] int64).

        `temperature` (> 0) defaults to 1 for every task. `resrouting` applies spec section 2 to
        whichever route is used (replayed, sampled or greedy).
        """
        x0, z = self._trunk(x, task)
        if z is None:  # fixed_depth: the chain, weight 1 on each single source
            y = F.relu(self.layers[0](x0))
            for layer in self.layers[1:]:
                y = F.relu(layer(y)) + y
            chain = R.chain_route(x.shape[0], self.num_modules, self.top_k, device=x.device)
            return self.head(y), chain

        zsq = self._square(z.detach())  # only for the selection and the ResRouting mask
        route = self.select_route(z, zsq, task, route_mode, route, temperature, generator)
        w = self.route_weights(z, route)
        trusted = self.trusted_mask(zsq, route) if resrouting else None
        return self.head(self._module_stack(x0, route, w, trusted)), route

    def _module_stack(self, x0, route, w, trusted) -> torch.Tensor:
        """The output node's input sum_{j in S^out} w_j y_j (spec section 1), or with the trust
        mask `trusted` ResRouting's (spec section 2), an ordinary stream y and a frozen one y_hat:

            xt_n    = sum_j w_j [ m_j y_j + (1 - m_j) y_hat_j ]
            r_n     = sum_j w_j y_j
            y_n     = ReLU(W_n xt_n + b_n) + r_n
            y_hat_n = sg(ReLU(W_n xt_n + b_n)) + r_n          (y_hat_0 = sg(y_0))
            out_in  = sum_j w_j [ m_j y_j + (1 - m_j) y_hat_j ]

        Module 0 here; modules 1.. and the output node's mix in `RoutedModuleStack`.
        """
        y0 = F.relu(self.layers[0](x0))
        stacked = list(self.layers)[1:]  # slicing the ModuleList builds a new one each time
        params = [layer.weight for layer in stacked] + [layer.bias for layer in stacked]
        return RoutedModuleStack.apply(y0, w, route, trusted, torch.is_grad_enabled(), self.capturable, *params)
