"""Agreement of mmrm's Kenward–Roger inference with SAS PROC MIXED, an R reference and R pbkrtest.

Prints three tables: (1) on the mmrm package's fev_data (FEV1 ~ ARMCD), fclab's TRT − PBO SE and df
beside SAS's DDFM=KR and DDFM=KR(FIRSTORDER) figures, and both REML −2 log-likelihoods; (2) the
largest relative differences from tests/r/kr_reference.R (nlme fit polished by Newton steps, every
derivative numerical) for one-df SEs (KR and KR-linear) and df, and multi-df F and denominator df;
(3) the same against pbkrtest for compound symmetry (expected information); (4) where the working
directory holds a study's results/connectivity/edges.parquet (after ``make run``), the largest
relative differences between `mmrm` with ``df: satterthwaite`` and ``df: kenward-roger`` on it.
Needs Rscript with nlme, numDeriv, lme4 and pbkrtest (``make rref``).

    .venv/bin/python benchmarks/kr_agreement.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_kenward_roger import (R_DIR, SAS, fev, r_kr, reml_deviance_2pi, rscript,  # noqa: E402
                                write_r_inputs)
from test_mmrm import study  # noqa: E402

from fclab.api import subject_design  # noqa: E402
from fclab.framework.stats.cubes import edge_cube  # noqa: E402
from fclab.framework.stats.mmrm import STRUCTURES, fit_mmrm  # noqa: E402


def rel(a, b):
    return abs(a - b) / abs(b)


def datasets():
    y, X, _ = fev("visit")
    trt = np.zeros((X.shape[2], 4))
    trt[4:, :] = np.eye(4)
    yield "fev_data, FEV1 ~ AVISIT + ARMCD:AVISIT (537 obs)", y[0], X, {
        "vis4": trt[:, 3], "mean": trt.mean(axis=1), "all": trt, "late": trt[:, 2:]}
    edges, design = study(18, drop=7, n_edges=1)
    y = edge_cube(edges, design)[1][0]
    X, names = subject_design(design, "mmrm")
    L3 = np.eye(X.shape[2])[:, [names.index(f"group:window[{w}]") for w in ("w1", "w2", "w3")]]
    yield "17 subjects x 4 windows, 7 cells missing", y, X, {"w2": L3[:, 1], "all": L3}


def main():
    y, X, _ = fev("armcd")
    rows = []
    for r in SAS.itertuples(index=False):
        res = fit_mmrm(y, X, r.structure, df=r.variant).contrast(np.array([0.0, 1.0]))
        rows.append({"structure": r.structure, "variant": r.variant, "se": res["se"][0], "se SAS": r.se,
                     "rel": rel(res["se"][0], r.se), "df": res["df"][0], "df SAS": r.df,
                     "rel df": rel(res["df"][0], r.df), "-2logL": reml_deviance_2pi(r.structure, y, X),
                     "-2logL SAS": r.reml_deviance})
    print("(1) SAS PROC MIXED, fev_data, FEV1 ~ ARMCD, TRT - PBO")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.10g}"))

    rows, pb = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for label, y, X, cons in datasets():
            for s in STRUCTURES:
                ref = r_kr(tmp, y, X, s, cons)
                worst = {"data": label, "structure": s, "se KR": 0.0, "se KR-linear": 0.0, "df": 0.0, "F": 0.0,
                         "F den df": 0.0}
                for variant, col in (("kenward-roger", "se KR"), ("kenward-roger-linear", "se KR-linear")):
                    fit = fit_mmrm(y[None], X, s, df=variant)
                    for name, L in cons.items():
                        r = ref.loc[name]
                        if L.ndim == 1:
                            c = fit.contrast(L)
                            worst[col] = max(worst[col], rel(c["se"][0], r["se_kr" if col == "se KR" else "se_krl"]))
                            worst["df"] = max(worst["df"], rel(c["df"][0], r["df"]))
                        elif variant == "kenward-roger":
                            f = fit.ftest(L)
                            worst["F"] = max(worst["F"], rel(f["F"][0], r["estimate"]))
                            worst["F den df"] = max(worst["F den df"], rel(f["den_df"][0], r["df"]))
                rows.append(worst)
            write_r_inputs(tmp, y, X, cons)
            rscript(R_DIR / "pbkrtest_reference.R", tmp / "d.csv", tmp / "c.csv", tmp / "o.csv")
            ref = pd.read_csv(tmp / "o.csv").set_index("name")
            fit = fit_mmrm(y[None], X, "cs", df="kenward-roger", information="expected")
            w = {"data": label, "se": 0.0, "df": 0.0, "F": 0.0, "F den df": 0.0}
            for name, L in cons.items():
                r = ref.loc[name]
                if L.ndim == 1:
                    c = fit.contrast(L)
                    w["se"], w["df"] = max(w["se"], rel(c["se"][0], r["se"])), max(w["df"], rel(c["df"][0], r["df"]))
                else:
                    f = fit.ftest(L)
                    w["F"] = max(w["F"], rel(f["F"][0], r["estimate"]))
                    w["F den df"] = max(w["F den df"], rel(f["den_df"][0], r["df"]))
            pb.append(w)
    fmt = {"float_format": lambda v: f"{v:.1e}"}
    print("\n(2) tests/r/kr_reference.R (numerical derivatives), largest relative difference")
    print(pd.DataFrame(rows).to_string(index=False, **fmt))
    print("\n(3) pbkrtest (lme4 random intercept = cs; expected information), largest relative difference")
    print(pd.DataFrame(pb).to_string(index=False, **fmt))
    if Path("results/connectivity/edges.parquet").exists():
        default_study()


def default_study():
    from fclab.framework.connectome.edgestore import read_edges
    from fclab.framework.params import load_params
    from fclab.framework.pluginhost.builder import build_all
    from fclab.framework.stats.engine import run_stats

    p = load_params("params.yaml")
    windows = [w.name for w in p.connectivity.windows]
    e = read_edges("results/connectivity/edges.parquet", windows).long()
    out = {}
    for m in ("satterthwaite", "kenward-roger"):
        st = p.stats.model_copy(update={"tests": [{"name": "mmrm", "df": m}]})
        out[m] = run_stats(st, e, windows, build_all("test", st.tests))
    a, b = out["satterthwaite"], out["kenward-roger"]
    print(f"\n(4) this study ({e['value'].isna().sum()} of {len(e)} values missing): mmrm Satterthwaite vs "
          "Kenward-Roger, largest relative difference")
    print("  ".join(f"{c} {np.nanmax(np.abs(a[c] - b[c]) / np.abs(a[c])):.1e}" for c in ("estimate", "se", "df", "p_adj")))


if __name__ == "__main__":
    main()
