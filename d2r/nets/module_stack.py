"""The routed module stack of D2R as one autograd function with a hand-written backward.

Given module 0's output y_0, per-sample routes and mixing weights, it runs modules 1..N-1 and
returns the output node's input (spec sections 1 and 2):

    x_n = sum_k w_k y_{j_k}          a_n = ReLU(W_n x_n + b_n)          y_n = a_n + x_n
    out_in = sum_k w_k y_{j_k}       (over the output node's selected sources)

Why by hand: written with autograd, every node concatenates all earlier module outputs before
gathering its K sources (copies quadratic in N), and the backward allocates and zero-fills a
gradient the size of that concatenation per node. Here the outputs live in one preallocated
[N, B, H] buffer; the forward gathers K rows per sample from it, and the backward accumulates
the sources' gradients into one [N, B, H] buffer with index_add_. The same equations; results equal
to rounding (tests compare it with the per-sample spec reference in float64 and with
torch.autograd.gradcheck).

ResRouting (spec section 2). The frozen stream y_hat equals y in value (y_hat_n = sg(a_n) + r_n
and y_n = a_n + r_n with r_n = sum_k w_k y_{j_k}), so the forward is the same; only the gradient
is routed differently. With m_k = 1[edge k trusted], G_n = dL/dy_n and Ghat_n = dL/dy_hat_n:

    gpre    = G_n * 1[a_n > 0]                (y_hat_n's a_n is detached: only G_n reaches W_n)
    g_xt    = gpre @ W_n                      (gradient at xt_n = sum_k w_k [m_k y + (1-m_k) y_hat])
    g_r     = G_n + Ghat_n                    (gradient at the shortcut r_n, shared by both streams)
    G_j    += w_k (m_k g_xt + g_r)            Ghat_j += w_k (1 - m_k) g_xt
    dL/dw_k = <g_xt + g_r, y_{j_k}>           (y_hat_j = y_j in value)

and y_hat_0 = sg(y_0), so Ghat_0 is dropped. Without ResRouting m_k = 1 and Ghat stays 0.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable


class RoutedModuleStack(torch.autograd.Function):
    """apply(y0, w, rows, trusted, num_selected, *weights_then_biases) -> out_in [B, H].

    y0:       [B, H] module 0's output.
    w:        [B, N, K] mixing weights (row n-1 = node n; padding columns unused).
    rows:     [N, K, B] int64, row n-1 = node n: flat row j * B + b of source j of sample b in
              the [N * B, H] view of the output buffer.
    trusted:  [B, N, K] bool ResRouting mask, or None for the plain forward.
    num_selected: node n reads the first num_selected[n-1] columns.
    weights_then_biases: W_1..W_{N-1} ([H, H]) then b_1..b_{N-1} ([H]).
    """

    @staticmethod
    def forward(ctx, y0, w, rows, trusted, num_selected, *params):
        n_mod, max_k = len(num_selected), w.shape[2]
        weights, biases = params[: n_mod - 1], params[n_mod - 1 :]
        batch, width = y0.shape
        backward_needed = any(ctx.needs_input_grad)
        ys = y0.new_empty(n_mod, batch, width)  # module outputs y_0..y_{N-1}
        xs = y0.new_empty(n_mod, batch, width)  # node inputs x_1..x_{N-1} (row 0 unused)
        acts = y0.new_empty(n_mod, batch, width)  # a_1..a_{N-1} (row 0 unused)
        # the gathered sources of every node, kept for dL/dw in the backward
        sels = y0.new_empty(n_mod, max_k, batch, width) if backward_needed else None
        ys[0] = y0
        flat = ys.view(n_mod * batch, width)
        w_t = w.permute(1, 2, 0).contiguous()  # [N, K, B]: w_t[n-1, k] is a [B] vector

        def node_input(n: int, out: torch.Tensor | None) -> torch.Tensor:
            k = num_selected[n - 1]
            idx = rows[n - 1, :k].reshape(-1)
            if sels is None:
                sel = flat.index_select(0, idx).view(k, batch, width)
            else:
                sel = sels[n - 1, :k]
                torch.index_select(flat, 0, idx, out=sel.view(k * batch, width))
            x = torch.mul(sel[0], w_t[n - 1, 0, :, None], out=out)
            for i in range(1, k):
                x.addcmul_(sel[i], w_t[n - 1, i, :, None])
            return x

        for n in range(1, n_mod):
            x = node_input(n, xs[n])
            a = torch.addmm(biases[n - 1], x, weights[n - 1].t(), out=acts[n]).relu_()
            torch.add(a, x, out=ys[n])
        out_in = node_input(n_mod, None)

        ctx.num_selected = num_selected
        ctx.resrouting = trusted is not None
        if backward_needed:
            ctx.save_for_backward(sels, xs, acts, w_t, rows, trusted, *weights)
        return out_in

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        sels, xs, acts, w_t, rows, trusted, *weights = ctx.saved_tensors
        num_selected = ctx.num_selected
        n_mod, _, batch, width = sels.shape
        need_y0, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_params = ctx.needs_input_grad[5:]
        grad_ys = grad_out.new_zeros(n_mod, batch, width)  # G_j, summed over the nodes reading j
        grad_flat = grad_ys.view(n_mod * batch, width)
        if ctx.resrouting:
            grad_hat = torch.zeros_like(grad_ys)  # Ghat_j
            grad_hat_flat = grad_hat.view(n_mod * batch, width)
            # the weights split by the mask: w_y = w m (g_xt to y_j), w_hat = w (1 - m) (to y_hat_j)
            w_y_t = w_t * trusted.permute(1, 2, 0)
            w_hat_t = w_t - w_y_t
        grad_w_t = torch.zeros_like(w_t) if need_w else None  # [N, K, B]
        grad_weights = [None] * (n_mod - 1)
        grad_biases = [None] * (n_mod - 1)

        for n in range(n_mod, 0, -1):
            if n == n_mod:  # the output node: no module, no shortcut
                g_xt, g_r = grad_out, None
            else:
                g_y = grad_ys[n]
                gpre = torch.ops.aten.threshold_backward(g_y, acts[n], 0)
                if need_params[n - 1]:
                    grad_weights[n - 1] = gpre.t().mm(xs[n])
                if need_params[n_mod - 1 + n - 1]:
                    grad_biases[n - 1] = gpre.sum(0)
                g_xt = gpre.mm(weights[n - 1])
                g_r = g_y + grad_hat[n] if ctx.resrouting else g_y
            g_x = g_xt if g_r is None else g_xt + g_r  # dL/dx_n of the plain stream
            k = num_selected[n - 1]
            idx = rows[n - 1, :k].reshape(-1)
            w_n = w_t[n - 1, :k, :, None]  # [k, B, 1]
            if need_w:
                grad_w_t[n - 1, :k] = (sels[n - 1, :k] * g_x).sum(-1)
            if ctx.resrouting:  # an untrusted edge sends g_xt to y_hat_j, only g_r to y_j
                to_hat = g_xt * w_hat_t[n - 1, :k, :, None]
                to_y = g_xt * w_y_t[n - 1, :k, :, None]
                if g_r is not None:
                    to_y.addcmul_(g_r, w_n)
                grad_hat_flat.index_add_(0, idx, to_hat.view(k * batch, width))
            else:
                to_y = g_x * w_n
            grad_flat.index_add_(0, idx, to_y.view(k * batch, width))

        grad_y0 = grad_ys[0] if need_y0 else None
        grad_w = grad_w_t.permute(2, 0, 1) if need_w else None
        return (grad_y0, grad_w, None, None, None, *grad_weights, *grad_biases)
