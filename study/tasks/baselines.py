"""Classical in-context regressors: what a transformer's predictions are compared with.

Every baseline is a pure batched function of one set of prompts:

    xs: [B, n, d]  the inputs x_0..x_{n-1} of B prompts
    ys: [B, n]     their targets y_0..y_{n-1}
    ->  [B, n]     prediction i of y_i made from the earlier pairs (x_j, y_j), j < i, only,
                   i.e. with k = i in-context examples; k = 0 predicts 0.

All of them compute in float64 and return the dtype of ``ys``.
"""

from __future__ import annotations

import torch


def _prefix_sums(xs: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums over the earlier pairs of every prefix.

    gram[:, i] = sum_{j<i} x_j x_j^T   [B, n, d, d]
    xty[:, i]  = sum_{j<i} y_j x_j     [B, n, d]
    (an exclusive cumulative sum: position i holds the sums of pairs 0..i-1).
    """
    outer = xs[..., :, None] * xs[..., None, :]  # [B, n, d, d]
    gram = outer.cumsum(dim=1) - outer
    xy = ys[..., None] * xs  # [B, n, d]
    xty = xy.cumsum(dim=1) - xy
    return gram, xty


def least_squares(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Minimum-norm least squares on the first k pairs, prediction x_k . w_k.

    k < d (underdetermined): the interpolating w of least norm, w = X^T (X X^T)^{-1} y, so
        x_k . w = K[k, :k] K[:k, :k]^{-1} y[:k]   with the kernel matrix K[i, j] = x_i . x_j;
    k >= d: the ordinary least-squares fit, (X^T X) w = X^T y.
    Assumes the x are in general position (true for Gaussian inputs).
    """
    xs64, ys64 = xs.double(), ys.double()
    B, n, d = xs.shape
    preds = torch.zeros(B, n, dtype=torch.float64, device=xs.device)
    K = xs64 @ xs64.transpose(1, 2)  # [B, n, n]
    for k in range(1, min(d, n)):
        coef = torch.linalg.solve(K[:, :k, :k], ys64[:, :k, None])[..., 0]  # [B, k]
        preds[:, k] = (K[:, k, :k] * coef).sum(-1)
    if n > d:
        gram, xty = _prefix_sums(xs64, ys64)
        w = torch.linalg.solve(gram[:, d:], xty[:, d:])  # [B, n - d, d]
        preds[:, d:] = (xs64[:, d:] * w).sum(-1)
    return preds.to(ys.dtype)


def ridge(xs: torch.Tensor, ys: torch.Tensor, lam: float) -> torch.Tensor:
    """Ridge regression on the first k pairs: w_k = argmin ||y - X w||^2 + lam ||w||^2
    = (X^T X + lam I)^{-1} X^T y (unnormalized sums, so the prior weighs less as k grows)."""
    xs64, ys64 = xs.double(), ys.double()
    d = xs.shape[-1]
    gram, xty = _prefix_sums(xs64, ys64)
    eye = torch.eye(d, dtype=torch.float64, device=xs.device)
    w = torch.linalg.solve(gram + lam * eye, xty)  # [B, n, d]; k = 0 gives w = 0
    return (xs64 * w).sum(-1).to(ys.dtype)


def _on_active_set(G: torch.Tensor, rhs: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Solve G_AA z_A = rhs_A with z = 0 off the active set A, for a batch of problems.

    G: [P, d, d], rhs: [P, d, m], active: [P, d] bool  ->  z: [P, d, m].
    Written as one d x d system per problem (G on A x A, the identity elsewhere) so that
    every problem has the same shape.
    """
    eye = torch.eye(G.shape[-1], dtype=G.dtype, device=G.device)
    M = torch.where(active[:, :, None] & active[:, None, :], G, eye)
    return torch.linalg.solve_ex(M, rhs * active[:, :, None])[0]


def lasso_weights(xs: torch.Tensor, ys: torch.Tensor, alpha: float, max_steps: int | None = None) -> torch.Tensor:
    """Lasso coefficients on the first k pairs, with sklearn's objective

        w_k = argmin_w 1/(2k) ||y - X w||^2 + alpha ||w||_1
            = argmin_w 1/2 w^T G w - c^T w + alpha ||w||_1,   G = X^T X / k,  c = X^T y / k,

    for all B*n problems at once, returned as [B, n, d] (k = 0: w = 0).

    Solved exactly by the homotopy (LARS-lasso) path: follow the solution from
    lam = max_j |c_j| (where w = 0) down to lam = alpha.  Between events the active set A
    and the signs s are fixed and w_A(lam) = G_AA^{-1} (c_A - lam s_A) = u - lam v is linear
    in lam.  An event is the largest lam' < lam at which an inactive correlation
    rho_j = (c - G w)_j reaches +-lam' (j joins A) or an active w_j crosses 0 (j leaves A).
    Each problem takes about min(k, d) events (at most ``max_steps``, default 10 d); the
    answer is then solved once more on the final active set and signs at lam = alpha.
    """
    xs64, ys64 = xs.double(), ys.double()
    B, n, d = xs.shape
    P = B * n
    gram, xty = _prefix_sums(xs64, ys64)
    k = torch.arange(n, dtype=torch.float64, device=xs.device).clamp(min=1)
    G = (gram / k[:, None, None]).reshape(P, d, d)
    c = (xty / k[:, None]).reshape(P, d)

    lam = c.abs().max(dim=-1).values  # [P]: for lam >= max |c_j| the solution is w = 0
    active = torch.zeros(P, d, dtype=torch.bool, device=xs.device)
    active[torch.arange(P), c.abs().argmax(dim=-1)] = lam > alpha
    signs = c.sign()  # [P, d]; read on the active set only
    tiny = 1e-9 * lam  # events closer than this below the current lam are the one just taken
    todo = (lam > alpha).nonzero()[:, 0]  # problems whose path has not reached alpha
    for _ in range(max_steps or 10 * d):
        if todo.numel() == 0:
            break
        Gt, ct, at, st, lt = G[todo], c[todo], active[todo], signs[todo], lam[todo]
        uv = _on_active_set(Gt, torch.stack((ct, st), dim=-1), at)  # [T, d, 2]
        u, v = uv[..., 0], uv[..., 1]  # w(lam') = u - lam' v
        Guv = Gt @ uv
        q, b = ct - Guv[..., 0], Guv[..., 1]  # rho(lam') = c - G w(lam') = q + lam' b
        # the lam' of every possible event: rho_j = +lam', rho_j = -lam' (j joins), w_j = 0 (j leaves);
        # 0/0 = nan never counts
        hits = torch.cat((q / (1.0 - b), -q / (1.0 + b), u / v), dim=1)  # [T, 3d]
        possible = torch.cat((~at, ~at, at), dim=1) & (hits > alpha) & (hits < (lt - tiny[todo])[:, None])
        next_lam, which = torch.where(possible, hits, -torch.inf).max(dim=1)
        moved = torch.isfinite(next_lam)  # False: no event above alpha, the path ends there
        rows, kind, j = torch.arange(todo.numel(), device=xs.device)[moved], (which // d)[moved], (which % d)[moved]
        at[rows, j] = kind < 2  # kind 0: joins with sign +, 1: joins with sign -, 2: leaves
        st[rows, j] = torch.where(kind == 0, 1.0, -1.0).to(st.dtype)
        active[todo], signs[todo] = at, st
        lam[todo[moved]] = next_lam[moved]
        todo = todo[moved]
    rhs = (c - alpha * signs)[..., None]
    w = _on_active_set(G, rhs, active)[..., 0]
    return w.reshape(B, n, d).to(ys.dtype)


def lasso(xs: torch.Tensor, ys: torch.Tensor, alpha: float) -> torch.Tensor:
    """Lasso prediction x_k . w_k with w_k from :func:`lasso_weights`."""
    w = lasso_weights(xs.double(), ys.double(), alpha)
    return (xs.double() * w).sum(-1).to(ys.dtype)


def averaging(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """w_k = (1/k) sum_{j<k} y_j x_j, prediction x_k . w_k (unbiased for x ~ N(0, I))."""
    xs64, ys64 = xs.double(), ys.double()
    xy = ys64[..., None] * xs64  # [B, n, d]
    xty = xy.cumsum(dim=1) - xy
    k = torch.arange(xs.shape[1], dtype=torch.float64, device=xs.device).clamp(min=1)
    w = xty / k[:, None]
    return (xs64 * w).sum(-1).to(ys.dtype)


def nearest_neighbours(xs: torch.Tensor, ys: torch.Tensor, n_neighbours: int = 3) -> torch.Tensor:
    """Mean y of the ``n_neighbours`` earlier x closest to x_k (Euclidean); fewer when k is smaller."""
    xs64, ys64 = xs.double(), ys.double()
    B, n, _ = xs.shape
    dist = torch.cdist(xs64, xs64)  # [B, n, n]: dist[b, i, j] = |x_i - x_j|
    later = torch.ones(n, n, dtype=torch.bool, device=xs.device).triu()  # j >= i: not yet seen
    dist = dist.masked_fill(later, float("inf"))
    m = min(n_neighbours, n)
    nearest, index = dist.topk(m, dim=-1, largest=False)  # [B, n, m]
    seen = torch.isfinite(nearest)
    y_near = torch.gather(ys64[:, None, :].expand(B, n, n), 2, index)  # [B, n, m]
    total = (y_near * seen).sum(-1)
    count = seen.sum(-1).clamp(min=1)
    return (total / count).to(ys.dtype)
