"""Batched REML fits of the mixed model for repeated measures (MMRM), one per edge, all at once.

The model for one edge is ``y_s = X_s β + e_s`` for every subject ``s``, with ``e_s ~ N(0, Σ)``
over the K windows and independent subjects; a subject contributes the windows it has
(``V_s = Σ[o_s, o_s]``). ``Σ`` has a structure with parameters θ:

* ``us``  — unstructured: θ are the K(K+1)/2 entries of Σ (nlme's ``corSymm`` + ``varIdent``);
* ``csh`` — heterogeneous compound symmetry: ``Σ_ij = s_i s_j ρ^[i≠j]``, θ = (s_1..s_K, ρ);
* ``cs``  — compound symmetry: ``Σ = a I + b 11'``, θ = (a, b);
* ``ar1`` — first-order autoregressive over the window order: ``Σ_ij = σ² ρ^|i−j|``, θ = (σ², ρ).

The REML deviance is ``D(θ) = Σ_s log|V_s| + log|X'V⁻¹X| + y'Py`` with
``P = V⁻¹ − V⁻¹X(X'V⁻¹X)⁻¹X'V⁻¹``. Its exact derivatives (``V_i = ∂V/∂θ_i``,
``V_ij = ∂²V/∂θ_i∂θ_j``) are

    ∂D/∂θ_i      = tr(P V_i) − y'P V_i P y
    ∂²D/∂θ_i∂θ_j = −tr(P V_i P V_j) + 2 y'P V_i P V_j P y + tr(P V_ij) − y'P V_ij P y,

and since every V_i is block diagonal over subjects, each trace is a sum of per-subject K × K
products (missing windows are embedded as zero rows and columns of ``V_s⁻¹``). θ is found by
Newton steps on the observed Hessian (Fisher scoring, ``E[∂²D] = tr(P V_i P V_j)``, where the
observed Hessian is not positive definite), with step halving that keeps Σ positive definite and
the deviance non-increasing, until the Newton decrement is below 1e-12.

Fixed-effect covariance is ``(X'V̂⁻¹X)⁻¹``. Denominator degrees of freedom are Satterthwaite's,
``df = 2 (L'CL)² / (g' A g)`` with ``g_i = ∂(L'CL)/∂θ_i = m' X'V⁻¹V_iV⁻¹X m`` (``m = C L``) and
``A = 2 H⁻¹`` from the exact observed Hessian ``H`` of ``D``: the quantity lmerTest, the mmrm
package and emmeans (for nlme's ``gls``) compute by numerical differentiation. ``g' A g`` does not
depend on how θ is parameterised at an interior optimum, so the df equal theirs.

Kenward–Roger (Kenward & Roger 1997) replaces ``Φ = (X'V̂⁻¹X)⁻¹`` by the bias-corrected

    Φ_A = Φ + 2 Φ {Σ_ij W_ij (Q_ij − P_i Φ P_j − ¼ R_ij)} Φ,
    P_i = −X'V⁻¹V_iV⁻¹X,  Q_ij = X'V⁻¹V_iV⁻¹V_jV⁻¹X,  R_ij = X'V⁻¹V_ijV⁻¹X,

with ``W`` the covariance of θ̂ (twice the inverse Hessian of D). ``kenward-roger-linear`` drops
``R_ij`` (the first-order variant, SAS's ``DDFM=KR(FIRSTORDER)``). ``Q − PΦP`` is invariant to how
θ is parameterised, ``R`` is not: it is taken in SAS PROC MIXED's parameters (Σ's entries for
``us``, ``(a, b)`` for ``cs``, ``(σ², ρ)`` for ``ar1``, the variances and ρ for ``csh``), so that
``DDFM=KR`` is reproduced; for ``us`` and ``cs`` both variants coincide. A one-df contrast keeps
Satterthwaite's df (the KR formula reduces to it, computed from Φ); a c-df contrast gets KR's
scaled F: ``λ F ~ F(c, m)`` with ``F = β'L(L'Φ_A L)⁻¹L'β / c`` and ``λ, m`` from ``A_1, A_2``
(the moments of the Wald statistic). ``W`` is from the observed Hessian, as in SAS and the mmrm
package; ``information="expected"`` uses the expected one, as pbkrtest and the original paper do.

Edges are fitted in chunks (memory is bounded by ``chunk`` edges × subjects × K² × p) and
converged edges leave the iteration. ``X`` may be shared by every edge (S, K, p) or be per edge
(E, S, K, p), which the baseline-as-covariate model needs (each edge has its own baseline values).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STRUCTURES = ("us", "csh", "cs", "ar1")
MAX_ITER = 60
MAX_HALVINGS = 40
TOL = 1e-12  # on the Newton decrement g'H⁻¹g, in deviance units


# -- covariance structures ---------------------------------------------------------------------

class Structure:
    """Σ(θ), its first derivatives (q, K, K) and, for non-linear structures, second derivatives."""

    def __init__(self, name: str, K: int):
        if name not in STRUCTURES:
            raise ValueError(f"unknown covariance structure {name!r} (one of {', '.join(STRUCTURES)})")
        self.name, self.K = name, K
        iu = np.triu_indices(K)
        self.iu = iu
        self.q = {"us": len(iu[0]), "csh": K + 1, "cs": 2, "ar1": 2}[name]
        self.linear = name in ("us", "cs")
        if name == "us":
            J = np.zeros((self.q, K, K))
            J[np.arange(self.q), iu[0], iu[1]] = 1.0
            J[np.arange(self.q), iu[1], iu[0]] = 1.0
            self._J = J
        elif name == "cs":
            self._J = np.stack([np.eye(K), np.ones((K, K))])
        lag = np.abs(np.subtract.outer(np.arange(K), np.arange(K))).astype(float)
        self.lag = lag

    def sigma(self, th):
        E, K = len(th), self.K
        if self.name == "us":
            out = np.zeros((E, K, K))
            out[:, self.iu[0], self.iu[1]] = th
            out[:, self.iu[1], self.iu[0]] = th
            return out
        if self.name == "cs":
            return th[:, 0, None, None] * np.eye(K) + th[:, 1, None, None]
        if self.name == "csh":
            s, rho = th[:, :K], th[:, K]
            R = rho[:, None, None] + (1 - rho[:, None, None]) * np.eye(K)
            return s[:, :, None] * s[:, None, :] * R
        s2, rho = th[:, 0], th[:, 1]  # ar1
        return s2[:, None, None] * _power(rho[:, None, None], self.lag)

    def jacobian(self, th):
        """∂Σ/∂θ: (q, K, K) when constant, else (E, q, K, K)."""
        if self.linear:
            return self._J
        K = self.K
        if self.name == "csh":
            s, rho = th[:, :K], th[:, K]
            R = rho[:, None, None] + (1 - rho[:, None, None]) * np.eye(K)
            eye = np.eye(K)
            # ∂Σ_ij/∂s_k = R_ij (δ_ik s_j + δ_jk s_i)
            ds = R[:, None] * (eye[None, :, :, None] * s[:, None, None, :]
                               + eye[None, :, None, :] * s[:, None, :, None])
            drho = (s[:, :, None] * s[:, None, :] * (1 - eye))[:, None]
            return np.concatenate([ds, drho], axis=1)
        s2, rho = th[:, 0], th[:, 1]
        r = rho[:, None, None]
        d_s2 = _power(r, self.lag)
        d_rho = s2[:, None, None] * self.lag * _power(r, self.lag - 1)
        return np.stack([d_s2, d_rho], axis=1)

    def hessian(self, th):
        """∂²Σ/∂θ_i∂θ_j: (E, q, q, K, K), or None for a linear structure."""
        if self.linear:
            return None
        E, K, q = len(th), self.K, self.q
        out = np.zeros((E, q, q, K, K))
        if self.name == "csh":
            s, rho = th[:, :K], th[:, K]
            R = rho[:, None, None] + (1 - rho[:, None, None]) * np.eye(K)
            eye = np.eye(K)
            for k in range(K):
                for m in range(K):
                    # ∂²Σ_ij/∂s_k∂s_m = R_ij (δ_ik δ_jm + δ_jk δ_im)
                    pat = np.outer(eye[k], eye[m]) + np.outer(eye[m], eye[k])
                    out[:, k, m] = R * pat
                # ∂²Σ_ij/∂s_k∂ρ = [i≠j] (δ_ik s_j + δ_jk s_i)
                d = (eye[k][:, None] * s[:, None, :] + eye[k][None, :] * s[:, :, None]) * (1 - eye)
                out[:, k, K] = out[:, K, k] = d
            return out
        s2, rho = th[:, 0], th[:, 1]
        r = rho[:, None, None]
        lag = self.lag
        out[:, 0, 1] = out[:, 1, 0] = lag * _power(r, lag - 1)
        out[:, 1, 1] = s2[:, None, None] * lag * (lag - 1) * _power(r, lag - 2)
        return out

    def sas_second_order(self, th, W):
        """``Σ_ij W_ij ∂²Σ/∂φ_i∂φ_j`` (E, K, K) in SAS PROC MIXED's parameters φ, where ``W`` is the
        covariance of θ̂ in fclab's θ; None where Σ is linear in them (``us``, ``cs``).

        Only ``csh`` differs from fclab's θ: SAS has the variances ``v_k = s_k²`` where fclab has
        the standard deviations, so ``W_φ = T W T'`` with ``T = diag(2 s_k, 1)``, and
        ``∂²Σ/∂v_k∂v_m = (∂²Σ/∂s_k∂s_m − δ_km ∂Σ/∂s_k / s_k) / (4 s_k s_m)``,
        ``∂²Σ/∂v_k∂ρ = ∂²Σ/∂s_k∂ρ / (2 s_k)``.
        """
        H = self.hessian(th)
        if H is None:
            return None
        if self.name == "csh":
            K = self.K
            s = th[:, :K]
            d = np.concatenate([2 * s, np.ones((len(th), 1))], axis=1)  # ∂φ/∂θ, diagonal
            W = W * d[:, :, None] * d[:, None, :]
            inv = 1 / d
            H = H * inv[:, :, None, None, None] * inv[:, None, :, None, None]
            J = self.jacobian(th)
            k = np.arange(K)
            H[:, k, k] -= J[:, :K] / (4 * s[:, :, None, None] ** 3)
        return np.einsum("eij,eijkl->ekl", W, H)

    def start(self, C):
        """θ from an empirical covariance matrix (E, K, K) that is positive definite."""
        K = self.K
        d = np.diagonal(C, axis1=1, axis2=2)
        sd = np.sqrt(d)
        corr = C / (sd[:, :, None] * sd[:, None, :])
        off = ~np.eye(K, dtype=bool)
        if self.name == "us":
            return C[:, self.iu[0], self.iu[1]].copy()
        rbar = np.clip(corr[:, off].mean(axis=1), -0.5 / max(K - 1, 1), 0.95)
        if self.name == "cs":
            v = d.mean(axis=1)
            return np.stack([v * (1 - rbar), v * rbar], axis=1)
        if self.name == "csh":
            return np.concatenate([sd, rbar[:, None]], axis=1)
        r1 = np.clip(np.mean([corr[:, i, i + 1] for i in range(K - 1)], axis=0) if K > 1 else 0 * d[:, 0],
                     -0.9, 0.9)
        return np.stack([d.mean(axis=1), r1], axis=1)

    def valid(self, th, Sig):
        """Parameters that give a positive definite Σ (and positive scales for ``csh``)."""
        ok = np.all(np.isfinite(th), axis=1)
        if self.name == "csh":
            ok &= np.all(th[:, :self.K] > 0, axis=1)
        ev = np.linalg.eigvalsh(np.where(ok[:, None, None], Sig, np.eye(self.K)))
        scale = np.abs(ev).max(axis=1)
        return ok & (ev[:, 0] > 1e-12 * scale)


def _power(r, k):
    """r ** k elementwise with 0 ** 0 = 1 and no warnings for negative k where the factor is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(k > 0, np.abs(r) ** np.maximum(k, 0) * np.sign(r) ** np.maximum(k, 0), 1.0)
    return np.where(k < 0, 0.0, out)


# -- one evaluation of the REML deviance and its derivatives ----------------------------------

class _Eval:
    """The REML deviance at θ for a batch of edges, with its exact derivatives on demand."""

    def __init__(self, struct: Structure, th, y, X, m):
        self.struct, self.th = struct, th
        E, S, K = y.shape
        p = X.shape[-1]
        Sig = struct.sigma(th)
        self.ok = struct.valid(th, Sig)
        Sig = np.where(self.ok[:, None, None], Sig, np.eye(K))
        if m.all():  # every subject has every window: one V⁻¹ per edge
            Lc = np.linalg.cholesky(Sig)
            logdet_v = S * 2 * np.log(np.diagonal(Lc, axis1=-2, axis2=-1)).sum(axis=1)
            W = np.broadcast_to(np.linalg.inv(Sig)[:, None], (E, S, K, K))
            self.shared = True
        else:
            self.shared = False
            mm = m[..., :, None] & m[..., None, :]  # (E, S, K, K)
            # Observed block of Σ per subject, identity on missing windows: block diagonal.
            St = np.where(mm, Sig[:, None], 0.0) + np.eye(K) * (~m)[..., None]
            Lc = np.linalg.cholesky(St)
            logdet_v = 2 * np.log(np.diagonal(Lc, axis1=-2, axis2=-1)).sum(axis=(1, 2))
            W = np.linalg.inv(St) * mm  # V_s⁻¹ embedded, zero at missing windows
        self.W, self.X, self.m = W, X, m
        self.WX = W @ X  # (E, S, K, p)
        Xf = X.reshape(E, S * K, p)
        M = Xf.transpose(0, 2, 1) @ self.WX.reshape(E, S * K, p)
        Wy = (W @ y[..., None])[..., 0]
        b = (Xf.transpose(0, 2, 1) @ Wy.reshape(E, S * K, 1))[..., 0]
        sign, logdet_m = np.linalg.slogdet(M)
        self.ok &= sign > 0  # X'V⁻¹X numerically singular: not a usable point
        self.Minv = np.linalg.inv(np.where(self.ok[:, None, None], M, np.eye(p)))
        self.beta = (self.Minv @ b[..., None])[..., 0]
        r = np.where(m, y - (Xf @ self.beta[..., None]).reshape(E, S, K), 0.0)
        self.u = (W @ r[..., None])[..., 0]  # P y, per subject
        ypy = (r * self.u).sum(axis=(1, 2))
        self.dev = np.where(self.ok, logdet_v + logdet_m + ypy, np.inf)

    def derivatives(self):
        """Gradient (E, q), observed Hessian (E, q, q) and expected Hessian (E, q, q) of D.

        Near a singular Σ they can overflow; such an edge's step is not finite and is never
        accepted, and the fit ends with a reason, so numpy's overflow warnings are not shown."""
        with np.errstate(over="ignore", invalid="ignore"):
            return self._derivatives()

    def _derivatives(self):
        st, W, WX, u, Minv = self.struct, self.W, self.WX, self.u, self.Minv
        E, S, K, p = WX.shape
        q = st.q
        J = st.jacobian(self.th)
        Jb = np.broadcast_to(J, (E, q, K, K))
        Jf = Jb.reshape(E, q, K * K)

        def pair_sum(A, B):
            """Σ_s A_s[b, c] B_s[d, a], arranged as (E, (a, b), (c, d)); A_s, B_s summed when shared."""
            if A.ndim == 3:  # one matrix for every subject: the sum over subjects factorises
                out = A.reshape(E, K * K, 1) @ B.reshape(E, 1, K * K)
            else:
                out = A.reshape(E, S, K * K).transpose(0, 2, 1) @ B.reshape(E, S, K * K)  # [(b, c), (d, a)]
            return out.reshape(E, K, K, K, K).transpose(0, 4, 1, 2, 3).reshape(E, K * K, K * K)

        G = WX @ Minv[:, None]
        R = G @ WX.transpose(0, 1, 3, 2)  # diagonal blocks of V⁻¹X C X'V⁻¹
        uu = u.transpose(0, 2, 1) @ u
        W0 = W[:, 0] if self.shared else None
        Wsum = S * W0 if self.shared else W.sum(axis=1)
        Rsum = R.sum(axis=1)
        D = Wsum - Rsum - uu  # ∂D/∂Σ
        grad = (Jf @ D.reshape(E, K * K, 1))[..., 0]

        def quad(P):  # J_i' P J_j for every i, j: (E, q, q)
            if J.ndim == 3:  # one Jacobian for every edge
                Jc = J.reshape(q, K * K)
                return np.matmul(np.matmul(Jc, P), Jc.T)
            return Jf @ P @ Jf.transpose(0, 2, 1)

        # tr(P V_i P V_j) = Σ_s tr(W J_i W J_j) − [tr(Q V_i W V_j) + (i↔j)] + tr(C B_i C B_j)
        A = quad(pair_sum(W0, Wsum) if self.shared else pair_sum(W, W))
        B = quad(pair_sum(W0, Rsum) if self.shared else pair_sum(W, R))
        WXf = WX.reshape(E, S, K * p)
        O = (WXf.transpose(0, 2, 1) @ WXf).reshape(E, K, p, K, p).transpose(0, 1, 3, 2, 4).reshape(E, K * K, p * p)
        if J.ndim == 3:
            Bt = np.matmul(J.reshape(q, K * K), O).reshape(E, q, p, p)  # X'V⁻¹ V_i V⁻¹X
        else:
            Bt = (Jf @ O).reshape(E, q, p, p)
        N = Minv[:, None] @ Bt
        C = N.reshape(E, q, p * p) @ N.transpose(0, 1, 3, 2).reshape(E, q, p * p).transpose(0, 2, 1)
        expected = A - B - B.transpose(0, 2, 1) + C
        # y'P V_i P V_j P y = q_i'P q_j with q_i = V_i P y:
        # q_i'V⁻¹q_j = Σ_s tr(J_i W_s J_j u_s u_s') and X'V⁻¹q_i = Σ_ab J_i[a, b] Σ_s (V⁻¹X)_s[a] u_s[b].
        if self.shared:
            qWq = quad(pair_sum(W0, uu))
        else:
            qWq = quad(pair_sum(W, u[..., :, None] * u[..., None, :]))
        T = (WX.reshape(E, S, K * p).transpose(0, 2, 1) @ u).reshape(E, K, p, K).transpose(0, 1, 3, 2)
        T = T.reshape(E, K * K, p)
        XWq = np.matmul(J.reshape(q, K * K), T) if J.ndim == 3 else Jf @ T  # (E, q, p)
        ai = qWq - XWq @ Minv @ XWq.transpose(0, 2, 1)
        observed = -expected + 2 * ai
        H2 = st.hessian(self.th)
        if H2 is not None:
            observed = observed + (H2.reshape(E, q, q, K * K) @ D.reshape(E, 1, K * K, 1))[..., 0]
        self.Bt = Bt
        return grad, observed, expected

    def kenward_roger(self, Wt, budget: float = 2e7):
        """``U = Σ_ij W_ij (Q_ij − P_i Φ P_j)`` and ``U_R = Σ_ij W_ij R_ij`` (each (E, p, p)) for the
        covariance ``Wt`` (E, q, q) of θ̂; ``derivatives`` must have run. ``U_R`` is None for a
        structure linear in SAS's parameters. Edges go in slices of ``budget`` floats per array."""
        st, W, WX, Phi, Bt = self.struct, self.W, self.WX, self.Minv, self.Bt
        E, S, K, p = WX.shape
        q = st.q
        J = np.broadcast_to(st.jacobian(self.th), (E, q, K, K))
        U = np.empty((E, p, p))
        step = max(1, int(budget // (q * S * K * p)))
        for lo in range(0, E, step):
            sl = slice(lo, min(E, lo + step))
            n = sl.stop - sl.start
            B = J[sl, :, None] @ WX[sl, None]  # V_i V⁻¹X per subject: (n, q, S, K, p)
            C = W[sl, None] @ B  # V⁻¹ V_i V⁻¹X
            D = (Wt[sl] @ C.reshape(n, q, S * K * p)).reshape(n, q * S * K, p)
            U[sl] = B.reshape(n, q * S * K, p).transpose(0, 2, 1) @ D  # Σ_ij W_ij Q_ij
        # P_i = −Bt_i, so Σ_ij W_ij P_i Φ P_j = Σ_i (Bt_i Φ) (Σ_j W_ij Bt_j)
        G = (Wt @ Bt.reshape(E, q, p * p)).reshape(E, q, p, p)
        U -= ((Bt @ Phi[:, None]) @ G).sum(axis=1)
        Hw = st.sas_second_order(self.th, Wt)
        if Hw is None:
            return U, None
        HX = (Hw[:, None] @ WX).reshape(E, S * K, p)
        return U, WX.reshape(E, S * K, p).transpose(0, 2, 1) @ HX


# -- fitting ------------------------------------------------------------------------------------

@dataclass
class MmrmFit:
    """REML estimates for E edges with p fixed effects (NaN where an edge could not be fitted)."""

    beta: np.ndarray  # (E, p)
    cov: np.ndarray  # (E, p, p)
    theta: np.ndarray  # (E, q)
    sigma: np.ndarray  # (E, K, K) the fitted within-subject covariance
    n_obs: np.ndarray
    n_subjects: np.ndarray
    reason: np.ndarray  # (E,) object: None or why
    iterations: np.ndarray
    _hinv: np.ndarray  # (E, q, q) inverse Hessian of the deviance (observed or expected information)
    _bt: np.ndarray  # (E, q, p, p) X'V⁻¹ V_i V⁻¹X
    df_method: str = "satterthwaite"
    cov_adj: np.ndarray | None = None  # (E, p, p) Kenward–Roger's Φ_A, for the KR methods

    def _vcov(self):
        return self.cov if self.df_method == "satterthwaite" else self.cov_adj

    def contrast(self, L: np.ndarray, alpha: float = 0.05) -> dict[str, np.ndarray]:
        """Estimate, SE, df, t, two-sided p and CI for ``L'β`` on every edge.

        The df is Satterthwaite's (for a one-df contrast Kenward–Roger's is the same number);
        with a Kenward–Roger ``df_method`` the SE is from Φ_A. A df that is not finite or outside
        (0, n_obs − p], or a Φ_A variance that is not positive, is not used: the row gets NaN p
        and a reason in ``df_reason``.
        """
        from fclab.framework.stats.design import bounded_df, t_ppf, t_sf

        L = np.asarray(L, float)
        est = self.beta @ L
        mvec = self.cov @ L
        g = np.einsum("ep,eipq,eq->ei", mvec, self._bt, mvec)
        quad = np.einsum("ei,eij,ej->e", g, self._hinv, g)
        var = self._vcov() @ L @ L
        with np.errstate(invalid="ignore", divide="ignore"):
            df = (mvec @ L) ** 2 / quad
            se = np.sqrt(np.where(var > 0, var, np.nan))
            t = est / se
        p_max = self.n_obs - self.beta.shape[1]
        fitted = np.array([r is None for r in self.reason])
        df, why = bounded_df(df, p_max, fitted)
        why = np.where(fitted & (why == None) & ~(var > 0),  # noqa: E711
                       "Kenward–Roger covariance of the contrast not positive", why)
        with np.errstate(invalid="ignore"):
            p = 2 * t_sf(np.abs(t), df)
            qt = t_ppf(1 - alpha / 2, df)
        return {"estimate": est, "se": se, "df": df, "stat": t, "p": p,
                "ci_low": est - qt * se, "ci_high": est + qt * se, "df_reason": why}

    def ftest(self, L: np.ndarray) -> dict[str, np.ndarray]:
        """Wald F test of ``L'β = 0`` for a (p, c) contrast matrix of rank c, on every edge.

        Satterthwaite (mmrm package, lmerTest): ``F = β'L(L'ΦL)⁻¹L'β / c`` with denominator df
        ``2E/(E − c)``, ``E = Σ_k ν_k/(ν_k − 2)`` over the one-df contrasts of the eigenvectors of
        L'ΦL (Fai & Cornelius 1996). Kenward–Roger: ``F`` from Φ_A, scaled by λ, with df m.
        Returns F (scaled), num_df, den_df and p.
        """
        from scipy import stats as st

        L = np.asarray(L, float)
        if L.ndim == 1:
            L = L[:, None]
        c = L.shape[1]
        E = len(self.beta)
        Phi = self.cov
        est = self.beta @ L  # (E, c)
        V0 = L.T @ Phi @ L  # (E, c, c)
        Va = L.T @ self._vcov() @ L
        W = 2 * self._hinv
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            ok = np.all(np.isfinite(Va), axis=(1, 2)) & np.all(np.isfinite(W), axis=(1, 2))
            ok &= np.linalg.eigvalsh(np.where(ok[:, None, None], Va, np.eye(c)))[:, 0] > 0
            Vi = np.linalg.inv(np.where(ok[:, None, None], Va, np.eye(c)))
            F = np.einsum("ea,eab,eb->e", est, Vi, est) / c
            if self.df_method == "satterthwaite":
                lam, m = np.ones(E), self._fai_cornelius(L, V0, ok)
            else:
                lam, m = self._kr_scale(L, V0, W, ok)
            F = lam * F
            p = st.f.sf(F, c, m)
        bad = ~ok | ~np.isfinite(m) | ~(m > 0)
        return {"F": np.where(bad, np.nan, F), "num_df": np.full(E, c),
                "den_df": np.where(bad, np.nan, m), "p": np.where(bad, np.nan, p)}

    def _fai_cornelius(self, L, V0, ok):
        """Satterthwaite's denominator df of a c-df F (Fai & Cornelius 1996, as lmerTest and mmrm)."""
        c = L.shape[1]
        w, U = np.linalg.eigh(np.where(ok[:, None, None], V0, np.eye(c)))
        mv = self.cov @ np.einsum("pa,eab->epb", L, U)  # Φ l_k for the orthogonal one-df contrasts
        g = np.einsum("epa,eipq,eqa->eia", mv, self._bt, mv)
        nu = w**2 / np.einsum("eia,eij,eja->ea", g, self._hinv, g)
        Ev = np.where(nu > 2, nu / (nu - 2), np.nan).sum(axis=1)
        return np.where(Ev > c, 2 * Ev / (Ev - c), np.nan)

    def _kr_scale(self, L, V0, W, ok):
        """KR's λ and m for a (p, c) contrast (Kenward & Roger 1997, eq. 4-6; A_1, A_2 from Φ)."""
        c = L.shape[1]
        Phi = self.cov
        Theta = np.linalg.inv(np.where(ok[:, None, None], V0, np.eye(c)))
        M = L @ Theta @ L.T
        # T_i = M Φ P_i Φ with P_i = −Bt_i
        T = -((M @ Phi)[:, None] @ self._bt @ Phi[:, None])
        tr = np.einsum("eipp->ei", T)
        A1 = np.einsum("eij,ei,ej->e", W, tr, tr)
        A2 = np.einsum("eij,eiab,ejba->e", W, T, T)
        B = (A1 + 6 * A2) / (2 * c)
        g = ((c + 1) * A1 - (c + 4) * A2) / ((c + 2) * A2)
        den = 3 * c + 2 * (1 - g)
        c1, c2, c3 = g / den, (c - g) / den, (c + 2 - g) / den
        e_star = 1 / (1 - A2 / c)
        v_star = 2 / c * (1 + c1 * B) / ((1 - c2 * B) ** 2 * (1 - c3 * B))
        rho = v_star / (2 * e_star**2)
        m = 4 + (c + 2) / (c * rho - 1)
        return m / (e_star * (m - 2)), m


def _start(struct, y, X, m):
    """OLS residual covariance (pairwise over subjects), made positive definite."""
    E, S, K = y.shape
    Xm = X * m[..., None]
    XtX = np.einsum("eskp,eskq->epq", X, Xm)
    Xty = np.einsum("eskp,esk->ep", Xm, y)
    beta = np.linalg.solve(XtX, Xty[..., None])[..., 0]
    r = np.where(m, y - np.einsum("eskp,ep->esk", X, beta), 0.0)
    n = np.einsum("esk,esl->ekl", m.astype(float), m.astype(float))
    C = np.einsum("esk,esl->ekl", r, r) / np.maximum(n - 1, 1)
    w, V = np.linalg.eigh(C)
    floor = 1e-3 * np.maximum(w.max(axis=1, keepdims=True), 1e-300)
    C = (V * np.maximum(w, floor)[:, None]) @ V.transpose(0, 2, 1)
    return struct.start(C)


def _fit_chunk(struct, y, X, m):
    E = len(y)
    th = _start(struct, y, X, m)
    failed = ~_Eval(struct, th, y, X, m).ok
    active = ~failed
    iters = np.zeros(E, int)
    for it in range(MAX_ITER):
        idx = np.flatnonzero(active)
        if not len(idx):
            break
        sub = _Eval(struct, th[idx], y[idx], X[idx], m[idx])
        grad, obs, expd = sub.derivatives()
        step, dec = _newton_step(grad, obs, expd)
        iters[idx] += 1
        done = dec < TOL
        active[idx[done]] = False
        go = ~done
        if not go.any():
            break
        idx, step, th0, dev0 = idx[go], step[go], sub.th[go], sub.dev[go]
        t = np.ones(len(idx))
        pending = np.ones(len(idx), bool)
        th_new = th0.copy()
        for _ in range(MAX_HALVINGS):
            k = np.flatnonzero(pending)
            cand = th0[k] + t[k, None] * step[k]
            trial = _Eval(struct, cand, y[idx[k]], X[idx[k]], m[idx[k]])
            accept = trial.ok & (trial.dev <= dev0[k] + 1e-10 * np.abs(dev0[k]))
            th_new[k[accept]] = cand[accept]
            pending[k[accept]] = False
            t[k[~accept]] /= 2
            if not pending.any():
                break
        stuck = pending  # no step lowered the deviance: at the optimum to rounding
        active[idx[stuck]] = False
        th[idx] = np.where(stuck[:, None], th0, th_new)
    final = _Eval(struct, th, y, X, m)
    grad, obs, expd = final.derivatives()
    # Converged means a Newton decrement at rounding level, whichever way the loop ended.
    _, dec = _newton_step(grad, obs, expd)
    not_conv = active | ~(dec < 1e-6) | ~final.ok
    return th, final, obs, expd, failed, not_conv, iters


def _rows(X, idx):
    """The designs of the edges ``idx``, as an (E, S, K, p) array (a broadcast view when shared)."""
    return X[idx] if X.ndim == 4 else np.broadcast_to(X, (len(idx), *X.shape))


def _newton_step(grad, obs, expd):
    """Newton step on the observed Hessian where it is positive definite, else Fisher scoring."""
    E, q = grad.shape
    ev = np.linalg.eigvalsh(obs)
    use_obs = ev[:, 0] > 1e-10 * np.abs(ev).max(axis=1)
    H = np.where(use_obs[:, None, None], obs, expd)
    ev2 = np.linalg.eigvalsh(H)
    sing = ~(ev2[:, 0] > 1e-12 * np.abs(ev2).max(axis=1))
    H = np.where(sing[:, None, None], H + np.eye(q) * (1e-8 * np.abs(ev2).max(axis=1))[:, None, None], H)
    step = -np.linalg.solve(H, grad[..., None])[..., 0]
    dec = -(grad * step).sum(axis=1)
    return step, np.abs(dec)


DF_METHODS = ("satterthwaite", "kenward-roger", "kenward-roger-linear")


def fit_mmrm(y: np.ndarray, X: np.ndarray, structure: str = "us", min_subjects: int = 2,
             chunk: int = 1024, df: str = "satterthwaite", information: str = "observed") -> MmrmFit:
    """Fit every edge of ``y`` (E, S, K; NaN = missing) with designs ``X`` ((S, K, p) or (E, S, K, p)).

    ``df`` is one of ``DF_METHODS``: the Kenward–Roger ones also compute Φ_A, which the contrasts
    then use. ``information`` is the Hessian that gives the covariance of θ̂ for the df and Φ_A:
    ``observed`` (SAS, the mmrm package, lmerTest) or ``expected`` (pbkrtest).

    An edge gets NaN estimates and a ``reason`` when it has fewer than ``min_subjects`` subjects,
    a fixed-effects design of less than full rank on its observations, too few residual degrees of
    freedom for the covariance structure, or when REML does not converge.
    """
    if df not in DF_METHODS:
        raise ValueError(f"unknown df method {df!r} (one of {', '.join(DF_METHODS)})")
    if information not in ("observed", "expected"):
        raise ValueError(f"unknown information {information!r} (observed or expected)")
    E, S, K = y.shape
    p = X.shape[-1]
    # With one window every structure is one variance; their correlation parameters would not exist.
    struct = Structure(structure if K > 1 else "us", K)
    m = np.isfinite(y)
    XtX = np.empty((E, p, p))
    # Per-edge designs (E, S, K, p) can be the largest array of a connectome study: they are read
    # chunk by chunk (missing cells as 0), never copied whole.
    for lo in range(0, E, chunk):
        sl = slice(lo, min(E, lo + chunk))
        Xc = _rows(X, np.arange(sl.start, sl.stop))
        if X.ndim == 4:
            finite = np.isfinite(Xc)
            m[sl] &= finite.all(axis=3)
            Xc = np.where(finite, Xc, 0.0)
        # Design rank on the observations present, per edge.
        XtX[sl] = np.einsum("eskp,eskq->epq", Xc, Xc * m[sl][..., None])
    y0 = np.where(m, y, 0.0)
    n_obs = m.sum(axis=(1, 2))
    n_sub = m.any(axis=2).sum(axis=1)
    reason = np.full(E, None, dtype=object)
    scale = np.maximum(np.abs(np.diagonal(XtX, axis1=1, axis2=2)).max(axis=1), 1e-300)
    ev = np.linalg.eigvalsh(XtX / scale[:, None, None])
    full_rank = ev[:, 0] > 1e-10
    reason[n_sub < min_subjects] = f"fewer than {min_subjects} subjects with data"
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = y0.sum(axis=(1, 2)) / n_obs
        spread = (np.where(m, y0 - mean[:, None, None], 0.0) ** 2).sum(axis=(1, 2))
    reason[(reason == None) & ~(spread > 0)] = "no variation in the values"  # noqa: E711
    reason[(reason == None) & ~full_rank] = "fixed effects not estimable from the observations present"  # noqa: E711
    reason[(reason == None) & (n_obs - p < struct.q)] = (  # noqa: E711
        f"too few observations for the {structure} covariance ({struct.q} parameters)")
    q = struct.q
    beta, cov = np.full((E, p), np.nan), np.full((E, p, p), np.nan)
    theta, sigma = np.full((E, q), np.nan), np.full((E, K, K), np.nan)
    hinv, bt = np.full((E, q, q), np.nan), np.full((E, q, p, p), np.nan)
    kr = df != "satterthwaite"
    cov_adj = np.full((E, p, p), np.nan) if kr else None
    iters = np.zeros(E, int)
    todo = np.flatnonzero(reason == None)  # noqa: E711
    for lo in range(0, len(todo), chunk):
        idx = todo[lo:lo + chunk]
        Xc = _rows(X, idx)
        if X.ndim == 4:
            Xc = np.where(np.isfinite(Xc), Xc, 0.0)
        th, ev_, obs, expd, failed, not_conv, it = _fit_chunk(struct, y0[idx], Xc, m[idx])
        iters[idx] = it
        w = np.linalg.eigvalsh(obs)
        pd_ = w[:, 0] > 1e-10 * np.abs(w).max(axis=1)
        bad = failed | not_conv | ~pd_
        reason[idx[failed]] = "no positive definite starting covariance"
        reason[idx[~failed & not_conv]] = f"REML did not converge in {MAX_ITER} iterations"
        reason[idx[~failed & ~not_conv & ~pd_]] = (
            "covariance parameters not identifiable (REML Hessian not positive definite)")
        good = ~bad
        gi = idx[good]
        beta[gi], cov[gi] = ev_.beta[good], ev_.Minv[good]
        theta[gi], sigma[gi] = th[good], struct.sigma(th[good])
        info = obs if information == "observed" else expd
        hinv[gi], bt[gi] = np.linalg.inv(info[good]), ev_.Bt[good]
        if kr and good.any():
            Wt = 2 * np.linalg.inv(np.where(good[:, None, None], info, np.eye(q)))
            U, U_R = ev_.kenward_roger(Wt)
            if U_R is not None and df == "kenward-roger":
                U = U - U_R / 4
            Phi = ev_.Minv
            cov_adj[gi] = (Phi + 2 * Phi @ U @ Phi)[good]
    return MmrmFit(beta, cov, theta, sigma, n_obs, n_sub, reason, iters, hinv, bt, df, cov_adj)

