"""The routed module stack of D2R as one autograd function with a hand-written backward.

Given module 0's output y_0, per-sample routes and mixing weights, it runs modules 1..N-1 and
returns the output node's input (spec sections 1 and 2):

    x_n = sum_k w_k y_{j_k}          a_n = ReLU(W_n x_n + b_n)          y_n = a_n + x_n
    out_in = sum_k w_k y_{j_k}       (over the output node's selected sources)

Why by hand: written with autograd, every node concatenates all earlier module outputs before
gathering its K sources (copies quadratic in N), and the backward allocates and zero-fills a
gradient the size of that concatenation per node. Here the outputs live in one [N, B, H] buffer,
and both directions are gathers done by `embedding_bag` (a fused gather, scale and sum; on CPU
several times faster than index_select + mul + add, and far faster than index_add_):

- forward, node n:  x_n[b] = sum_k w_k ys[j_k, b]              (a bag of K rows per sample;
  a node with fewer candidates than K reads a zero row with weight 0 in its padding slots)
- backward, module j: the gradient reaching y_j is *pulled* from the nodes that read j. The
  edges (node m reads source j for sample b, weight w) are sorted once by (j, b); module j's
  gradient is then one embedding_bag over its readers' stored dL/dx_m rows, weighted by w (two
  with ResRouting, below). On a GPU the sort's counting and the segment sizes wait for the host.
  (The transposed "push", an index_add_ per node, is several times slower on CPU.)
- dL/dw of every edge at once: <dL/dx_m[b], y_j[b]> (embedding_bag's per-sample-weight
  gradient kernel).

The same equations; results equal to rounding (tests compare it with the per-sample spec
reference in float64 and with torch.autograd.gradcheck).

ResRouting (spec section 2). The frozen stream y_hat equals y in value (y_hat_n = sg(a_n) + r_n
and y_n = a_n + r_n with r_n = sum_k w_k y_{j_k}), so the forward is the same; only the gradient
is routed differently. With m = 1[edge trusted], G_n = dL/dy_n, Ghat_n = dL/dy_hat_n and, for a
node m reading y_j with weight w:

    gpre_n  = G_n * 1[a_n > 0]               (y_hat_n's a_n is detached: only G_n reaches W_n)
    g_xt_n  = gpre_n @ W_n                   (gradient at xt_n = sum_k w_k [m y + (1 - m) y_hat])
    g_r_n   = G_n + Ghat_n                   (gradient at the shortcut r_n, shared by both streams)
    gx_n    = g_xt_n + g_r_n                 (dL/dx_n of the plain stream)
    G_j    += w (m gx_m + (1 - m) g_r_m)     (a trusted edge passes everything to y_j,
    Ghat_j += w (1 - m) g_xt_m                an untrusted one only the shortcut's gradient)
    so g_r_j = G_j + Ghat_j = sum w gx_m     (one pull over all edges, whatever m)
    dL/dw   = <gx_m, y_j>                    (y_hat_j = y_j in value)

and y_hat_0 = sg(y_0), so Ghat_0 is dropped. The output node has no module: gx = dL/d out_in,
g_r = 0. Without ResRouting every edge is trusted and G_j = g_r_j.

Capturable variant (`capturable=True`: the update with cuda_graphs on). The pull above needs the
segment sizes on the host (`.tolist()`), and a CUDA graph has static shapes and no host reads.
So this variant gathers with index_select (fixed K rows per bag) in the forward and, in the
backward, *pushes*: once node m's dL/dx_m is known, its K edges add w gx_m (and, with ResRouting,
w (m gx_m + (1 - m) g_r_m)) into two [N B + 1, H] accumulators with one index_add_ per node
(rows of one node and sample are distinct sources, so no two adds of a call meet in a row but
the padding row, which is dropped: the order of the sums is fixed). Every shape depends on
B, N, K, H alone. The same equations; its results equal the pull's to float rounding.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable


def _bag_sum(table: torch.Tensor, rows: torch.Tensor, starts: torch.Tensor,
             weights: torch.Tensor) -> torch.Tensor:
    """out[b] = sum_i weights[i] table[rows[i]] over bag b = rows[starts[b]:starts[b+1]] (empty -> 0).

    torch.embedding_bag directly: F.embedding_bag's argument checks cost more than the kernel
    at small batches."""
    return torch.embedding_bag(table, rows, starts, False, 0, False, weights, False, None)[0]


def _edge_dots(gx_table: torch.Tensor, ys: torch.Tensor, sources: torch.Tensor,
               readers: torch.Tensor, padding: int) -> torch.Tensor:
    """out[i] = <gx_table[readers[i]], ys[sources[i]]>, 0 where sources[i] == padding: dL/dw of
    the edges. embedding_bag's per-sample-weight gradient, given each entry's bag directly (its
    `offsets` are then unused)."""
    return torch.ops.aten._embedding_bag_per_sample_weights_backward(
        gx_table, ys, sources, sources, readers, 0, padding)


def _gather_sum(table: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor, k: int) -> torch.Tensor:
    """out[b] = sum_i weights[b k + i] table[rows[b k + i]] over i < k: _bag_sum with bags of k rows,
    from plain index_select (capturable: no offsets, no host reads)."""
    picked = table.index_select(0, rows).view(-1, k, table.shape[1])
    return (picked * weights.view(-1, k, 1)).sum(1)


# The modules' affine maps and their gradients. A weight [H, H] serves every sample; a seed-stacked
# network's (d2r.nets.stacking) is [S, H, H], its samples seed-major: one batched matmul per call.
def _by_seed(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x.view(weight.shape[0], -1, x.shape[-1])


def _affine(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """W x + b per sample."""
    if weight.dim() == 2:
        return torch.addmm(bias, x, weight.t())
    return torch.baddbmm(bias.unsqueeze(1), _by_seed(x, weight), weight.transpose(1, 2)).view_as(x)


def _weight_grad(gpre: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    if weight.dim() == 2:
        return gpre.t().mm(x)
    return torch.bmm(_by_seed(gpre, weight).transpose(1, 2), _by_seed(x, weight))


def _bias_grad(gpre: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return gpre.sum(0) if weight.dim() == 2 else _by_seed(gpre, weight).sum(1)


def _input_grad(g_r: torch.Tensor, gpre: torch.Tensor, weight: torch.Tensor, out: torch.Tensor) -> None:
    """out = g_r + gpre W (the gradient at the module's input plus the shortcut's)."""
    if weight.dim() == 2:
        torch.addmm(g_r, gpre, weight, out=out)
    else:
        torch.baddbmm(_by_seed(g_r, weight), _by_seed(gpre, weight), weight, out=_by_seed(out, weight))


class RoutedModuleStack(torch.autograd.Function):
    """apply(y0, w, route, trusted, grad_enabled, capturable, *weights_then_biases) -> out_in [B, H].

    y0:       [B, H] module 0's output.
    w:        [B, N, K] mixing weights (row n-1 = node n); a padding slot reads a zero row, so
              its (finite) weight adds nothing and gets a zero gradient.
    route:    [B, N, K] int64 route, -1 padding (see `routes.py`).
    trusted:  [B, N, K] bool ResRouting mask, or None for the plain forward.
    grad_enabled: torch.is_grad_enabled() of the caller (False: nothing is kept for a backward).
    capturable: True: no host reads and static shapes (gather forward, push backward; see above).
    weights_then_biases: W_1..W_{N-1} ([H, H]) then b_1..b_{N-1} ([H]); seed-stacked ([S, H, H],
              [S, H]) when the samples are S seeds' batches, seed-major (d2r.nets.stacking).
    """

    @staticmethod
    def forward(ctx, y0, w, route, trusted, grad_enabled, capturable, *params):
        batch, n_mod, max_k = route.shape
        width = y0.shape[1]
        weights, biases = params[: n_mod - 1], params[n_mod - 1 :]
        n_rows = n_mod * batch
        # module outputs: row j * B + b = y_j[b], then one zero row for the padding slots to
        # read, so that every node is a bag of K rows
        flat = y0.new_empty(n_rows + 1, width)
        flat[n_rows] = 0.0
        ys = flat[:n_rows].view(n_mod, batch, width)
        ys[0] = y0
        # [N, B, K] rows of `flat` to read: source j of sample b -> j * B + b, padding -> n_rows
        # (also the backward's sentinel: past every module, so it sorts last)
        rows = route * batch + torch.arange(batch, device=route.device)[:, None, None]
        rows = rows.masked_fill_(route < 0, n_rows).permute(1, 0, 2).contiguous()
        w_nbk = w.permute(1, 0, 2).contiguous()
        # per node, as flat views taken in one call each (views one by one cost more than the
        # small kernels at small batches)
        rows_by_node = rows.view(n_mod, -1).unbind(0)
        w_by_node = w_nbk.view(n_mod, -1).unbind(0)
        bag_starts = torch.arange(0, batch * max_k, max_k, device=route.device)
        xs, acts = [], []  # x_n, a_n for n = 1..N-1

        # Function.apply runs forward with grad mode off, and needs_input_grad ignores the
        # caller's no_grad: the caller says whether a graph is being recorded
        backward_needed = grad_enabled and any(ctx.needs_input_grad)
        # x_n is only needed for W_n's gradient: with frozen modules (the actor's pass through
        # the critics) each x_n is freed at once and its memory reused while still in cache
        keep_x = backward_needed and any(ctx.needs_input_grad[6 : 6 + len(weights)])

        def mix(rows_n, w_n):
            return _gather_sum(flat, rows_n, w_n, max_k) if capturable else _bag_sum(flat, rows_n, bag_starts, w_n)

        modules = zip(rows_by_node, w_by_node, weights, biases, ys.unbind(0)[1:])
        for rows_n, w_n, weight, bias, y in modules:
            x = mix(rows_n, w_n)
            a = _affine(x, weight, bias).relu_()
            torch.add(a, x, out=y)
            if keep_x:
                xs.append(x)
            if backward_needed:  # else a is freed now and its memory reused, still in cache
                acts.append(a)
        out_in = mix(rows_by_node[-1], w_by_node[-1])

        ctx.n_weights, ctx.capturable = len(weights), capturable
        if backward_needed:
            trusted_nbk = None if trusted is None else trusted.permute(1, 0, 2).contiguous()
            ctx.save_for_backward(flat, rows, w_nbk, trusted_nbk, *xs, *acts, *weights)
        return out_in

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        flat, rows, w_nbk, trusted, *rest = ctx.saved_tensors
        n_w = ctx.n_weights
        need = ctx.needs_input_grad
        need_y0, need_w = need[0], need[1]
        need_weight, need_bias = need[6 : 6 + n_w], need[6 + n_w :]
        # the forward kept x_n only when a module weight needs its gradient
        xs, rest = (rest[:n_w], rest[n_w:]) if any(need_weight) else ([None] * n_w, rest)
        acts, weights = rest[:n_w], rest[n_w:]
        backward = _push_backward if ctx.capturable else _pull_backward
        grad_y0, grad_w, grad_weights, grad_biases = backward(
            grad_out, flat, rows, w_nbk, trusted, xs, acts, weights, need_y0, need_w, need_weight, need_bias)
        return (grad_y0, grad_w, None, None, None, None, *grad_weights, *grad_biases)


def _pull_backward(grad_out, flat, rows, w_nbk, trusted, xs, acts, weights, need_y0, need_w, need_weight,
                   need_bias):
    """The backward by pulling (see the module docstring): one host read for the segment sizes."""
    n_w = len(weights)
    n_mod, batch, max_k = rows.shape
    n_rows, width = n_mod * batch, flat.shape[1]
    resrouting = trusted is not None

    # The edges are the slots (m-1, b, k) of `rows`, node-major: slot p says that node m
    # (gx row p // K of the table) reads source row rows[p] = j * B + b with weight w[p];
    # padding slots read the sentinel row n_rows.
    src = rows.view(-1)
    # gx table: slab 0 row (m-1) * B + b = gx_m[b]; with ResRouting slab 1 = g_r_m[b]
    table = grad_out.new_empty(2 if resrouting else 1, n_mod, batch, width)
    table[0, n_mod - 1] = grad_out
    if resrouting:
        table[1, n_mod - 1] = 0.0  # the output node has no shortcut
    table_flat = table.view(-1, width)

    # Sort the edges by source row (j, b): module j's readers are one contiguous segment,
    # and sample b's readers one bag within it; the padding slots sort last.
    # (keys in the narrowest integer type that holds them: sorting int16 is ~3x faster than int64)
    key_type = torch.int16 if n_rows < torch.iinfo(torch.int16).max else torch.int32
    order = torch.sort(src.to(key_type), stable=True).indices
    starts = torch.zeros(n_rows + 2, dtype=torch.int64, device=src.device)
    torch.cumsum(torch.bincount(src, minlength=n_rows + 1), 0, out=starts[1:])
    bounds = starts[: n_rows + 1 : batch]
    sizes = bounds.diff().tolist()  # readers per module (host read), then the padding
    sizes.append(src.numel() - sum(sizes))
    # sample b's readers of module j start at reader_starts[j, b] within module j's segment
    reader_starts = (starts[:n_rows].view(n_mod, batch) - bounds[:-1, None]).unbind(0)
    pull_rows = order // max_k  # gx rows of the readers
    pull_w = w_nbk.view(-1)[order].split(sizes)
    rows_g_r = pull_rows.split(sizes)
    # G_j reads g_r_m instead of gx_m over an untrusted edge
    rows_g_y = (pull_rows + (~trusted).view(-1)[order] * n_rows).split(sizes) if resrouting else rows_g_r
    gx, g_shortcut = table[0].unbind(0), (table[1].unbind(0) if resrouting else None)

    grad_weights, grad_biases = [None] * n_w, [None] * n_w
    grad_y0 = None
    for n in range(n_mod - 1, -1, -1):
        if n == 0 and not need_y0:
            break
        # sum over module n's readers of w gx_m
        g_r = _bag_sum(table_flat, rows_g_r[n], reader_starts[n], pull_w[n])
        g_y = _bag_sum(table_flat, rows_g_y[n], reader_starts[n], pull_w[n]) if resrouting else g_r
        if n == 0:
            grad_y0 = g_y
            break
        gpre = torch.ops.aten.threshold_backward(g_y, acts[n - 1], 0)
        if need_weight[n - 1]:
            grad_weights[n - 1] = _weight_grad(gpre, xs[n - 1], weights[n - 1])
        if need_bias[n - 1]:
            grad_biases[n - 1] = _bias_grad(gpre, weights[n - 1])
        _input_grad(g_r, gpre, weights[n - 1], out=gx[n - 1])  # gx_n = g_xt_n + g_r_n
        if resrouting:
            g_shortcut[n - 1].copy_(g_r)

    grad_w = None
    if need_w:  # dL/dw = <gx_m, y_j> of every slot (padding: 0), node-major like w_nbk
        bag = torch.arange(src.numel(), device=src.device) // max_k
        grad_w = _edge_dots(table_flat, flat, src, bag, padding=n_rows)
        grad_w = grad_w.view_as(w_nbk).permute(1, 0, 2)
    return grad_y0, grad_w, grad_weights, grad_biases


def _push_backward(grad_out, flat, rows, w_nbk, trusted, xs, acts, weights, need_y0, need_w, need_weight,
                   need_bias):
    """The backward by pushing (see the module docstring): static shapes, no host reads.

    acc_r row j * B + b accumulates g_r_j[b] = sum over its readers of w gx_m, and acc_y (the same
    tensor without ResRouting) G_j[b]; the last row takes the padding slots' adds (weight 0)."""
    n_w = len(weights)
    n_mod, batch, max_k = rows.shape
    n_rows, width = n_mod * batch, flat.shape[1]
    resrouting = trusted is not None
    acc_r = grad_out.new_zeros(n_rows + 1, width)
    acc_y = grad_out.new_zeros(n_rows + 1, width) if resrouting else acc_r
    gx = grad_out.new_empty(n_mod, batch, width)  # gx[m - 1] = dL/dx_m of node m (for dL/dw)
    gx[n_mod - 1] = grad_out

    def push(node: int, gx_m: torch.Tensor, g_r_m: torch.Tensor | None) -> None:
        """Node `node + 1`'s edges: w gx_m into acc_r, and into acc_y over trusted edges (untrusted
        ones pass only the shortcut's gradient g_r_m; the output node has none)."""
        sources, w = rows[node].view(-1), w_nbk[node].unsqueeze(-1)  # [B K], [B, K, 1]
        share = w * gx_m.unsqueeze(1)                                # [B, K, H]
        acc_r.index_add_(0, sources, share.view(-1, width))
        if resrouting:
            shortcut = 0.0 if g_r_m is None else w * g_r_m.unsqueeze(1)
            acc_y.index_add_(0, sources, torch.where(trusted[node].unsqueeze(-1), share, shortcut).view(-1, width))

    push(n_mod - 1, grad_out, None)
    grad_weights, grad_biases = [None] * n_w, [None] * n_w
    for n in range(n_mod - 1, 0, -1):  # module n is node n: all its readers (nodes > n) have pushed
        g_r, g_y = acc_r[n * batch : (n + 1) * batch], acc_y[n * batch : (n + 1) * batch]
        gpre = torch.ops.aten.threshold_backward(g_y, acts[n - 1], 0)
        if need_weight[n - 1]:
            grad_weights[n - 1] = _weight_grad(gpre, xs[n - 1], weights[n - 1])
        if need_bias[n - 1]:
            grad_biases[n - 1] = _bias_grad(gpre, weights[n - 1])
        _input_grad(g_r, gpre, weights[n - 1], out=gx[n - 1])  # gx_n = g_xt_n + g_r_n
        push(n - 1, gx[n - 1], g_r)
    grad_y0 = acc_y[:batch] if need_y0 else None

    grad_w = None
    if need_w:  # dL/dw = <gx_m, y_j> of every slot (padding: 0), node-major like w_nbk
        sources = flat.index_select(0, rows.view(-1)).view(n_mod, batch, max_k, width)
        grad_w = (sources * gx.unsqueeze(2)).sum(-1).masked_fill_(rows == n_rows, 0.0)
        grad_w = grad_w.permute(1, 0, 2)
    return grad_y0, grad_w, grad_weights, grad_biases
