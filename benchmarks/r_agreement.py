"""Agreement of fclab's mixed models with R: mmrm against nlme::gls, lmm's df against lmerTest.

Prints, per covariance structure and design, the largest relative differences of the MMRM's
estimates, SEs and fitted covariance from R's ``nlme::gls`` (REML), of its Satterthwaite df from the
same formula evaluated in R with numDeriv's Hessian of nlme's own log-likelihood, and from emmeans'
df (which uses nlme's finite-difference ``apVar``); then lmm's df beside lmerTest's for τ²/σ² from
1e2 down to 1e-6. Needs Rscript with nlme, emmeans, numDeriv and lmerTest (``make rref``).

    .venv/bin/python benchmarks/r_agreement.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_lmm import RATIOS, _lmer_df, _near_boundary  # noqa: E402
from test_mmrm import long_for_r, r_reference, study  # noqa: E402

from fclab.framework.pluginhost.contracts import Design  # noqa: E402
from fclab.framework.stats.lmm import fit_reml  # noqa: E402
from fclab.framework.stats.mmrm import fit_mmrm  # noqa: E402
from fclab.framework.stats.cubes import edge_cube  # noqa: E402
from fclab.api import subject_design  # noqa: E402
from fclab.plugins.mmrm import Mmrm  # noqa: E402


def rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


def mmrm_rows(tmp: Path):
    rows = []
    cases = [(s, d, "response", False) for s in ("us", "csh", "cs", "ar1") for d in (0, 7)]
    cases += [("us", 5, "response", True), ("us", 0, "covariate", False), ("us", 6, "covariate", False)]
    for k, (structure, drop, baseline, covariate) in enumerate(cases):
        edges, design = study(100 + k, n_edges=5, drop=drop)
        if covariate:
            design = Design(design.groups, design.baseline_window, design.windows, design.subjects, covariates=("age",))
        terms = ["group:window"]
        ours = Mmrm(Mmrm.Params(df="satterthwaite", baseline=baseline, covariance=structure, contrasts=terms)).run(edges, design)
        cov_base = baseline == "covariate"
        formula = ("value ~ group * window + base:window" if cov_base else
                   "value ~ group * window" + (" + age" if covariate else ""))
        ref = r_reference(tmp, long_for_r(edges, design, covariate_baseline=cov_base), structure, formula,
                          "group" if cov_base else "interaction")
        con = ref[ref["kind"] == "contrast"].set_index(["edge", "window"])
        got = ours.set_index(["roi_b", "window"]).loc[con.index]
        row = {"structure": structure, "baseline": baseline, "design": ("unbalanced" if drop else "balanced")
               + (" + covariate" if covariate else ""), "estimate": rel(got["estimate"], con["estimate"]),
               "se": rel(got["se"], con["se"]), "df vs R exact": rel(got["df"], con["df_exact"]),
               "df vs emmeans": rel(got["df"], con["df"])}
        if not cov_base:
            keys, y = edge_cube(edges, design)
            X = subject_design(design, "mmrm")[0]
            fit = fit_mmrm(y, X, structure)
            sig = ref[ref["kind"] == "sigma"]
            worst = 0.0
            for e, edge in enumerate(keys["roi_b"]):
                s = sig[sig["edge"] == edge]
                mine = fit.sigma[e][s["i"].astype(int), s["j"].astype(int)]
                worst = max(worst, float(np.max(np.abs(mine - s["estimate"]) / np.abs(s["estimate"]).max())))
            row["Σ (rel. to max)"] = worst
        rows.append(row)
    return pd.DataFrame(rows)


def lmm_rows(tmp: Path):
    rows = []
    for drop in (0, 9):
        y, X, Ls = _near_boundary(8, drop)
        fit = fit_reml(y, X)
        ours = np.stack([fit.contrast(L)["df"] for L in Ls], axis=1)
        ref = _lmer_df(tmp, y, X, Ls)
        for k, ratio in enumerate(RATIOS):
            rows.append({"design": "unbalanced" if drop else "balanced", "τ²/σ²": ratio,
                         "fitted τ²/σ²": fit.tau2[k] / fit.sigma2[k],
                         "within: fclab": ours[k, 0], "within: lmerTest": ref[k, 0],
                         "between: fclab": ours[k, 1], "between: lmerTest": ref[k, 1]})
    return pd.DataFrame(rows)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        print("mmrm vs nlme::gls (largest relative difference over 5 edges x contrasts)")
        print(mmrm_rows(Path(tmp)).to_string(index=False, float_format=lambda x: f"{x:.1e}"))
        print("\nlmm Satterthwaite df vs lmerTest (S = 26, K = 5, N - p = 120 balanced)")
        print(lmm_rows(Path(tmp)).to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
