"""Benchmark: the batched MMRM over a 400-ROI connectome (79,800 edges), 26 subjects × 5 windows.

Prints, side by side in one run, the wall time of an untraced call and the peak traced memory of
a second call of fclab's ``mmrm`` engine (fclab.framework.stats.mmrm.fit_mmrm, unstructured covariance) with the
baseline as a response and as a covariate (Satterthwaite, and Kenward–Roger), each with the group × window
contrasts; and the per-edge
time of R's ``nlme::gls`` (corSymm + varIdent, REML) fitting the same model edge by edge, timed
inside R on a sample of edges and scaled to all edges, with the largest difference of estimates.

    .venv/bin/python benchmarks/mmrm_speed.py [--sample 40]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from group_stats import WINDOWS, S, measure, study  # noqa: E402 (run from the repository root)
from fclab.framework.stats.mmrm import fit_mmrm
from fclab.api import contrasts, subject_design
from fclab.plugins.mmrm import covariate_design

R_LOOP = r"""
suppressMessages(library(nlme))
d <- read.csv(commandArgs(TRUE)[1]); d$window <- factor(d$window, levels = unique(d$window))
d$group <- factor(d$group, levels = c("midazolam", "ketamine")); d$subject <- factor(d$subject)
t0 <- proc.time()[["elapsed"]]; est <- c()
for (e in unique(d$edge)) {
  x <- d[d$edge == e, ]
  f <- gls(value ~ group * window, data = x, correlation = corSymm(form = ~ idx | subject),
           weights = varIdent(form = ~ 1 | window), method = "REML")
  est <- c(est, coef(f)[["groupketamine:window10-20min"]])
}
cat(proc.time()[["elapsed"]] - t0, "\n"); cat(est, "\n")
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sample", type=int, default=40, help="edges for the R loop")
    ap.add_argument("--edges", type=int, default=None, help="fit only this many edges (a quick check)")
    a = ap.parse_args(argv)
    y, design = study()
    y = y[:a.edges] if a.edges else y
    E = y.shape[0]
    X, names = subject_design(design, "mmrm")
    todo = contrasts(design, names, ["group:window"])
    rows = []

    def response():
        fit = fit_mmrm(y, X, "us")
        return fit, [fit.contrast(L) for _, _, L in todo]

    (fit, _), wall_r, peak_r = measure(response)
    rows.append(("mmrm, baseline as response (value ~ group*window), us", wall_r, peak_r))
    base = y[:, :, 0]
    Xc, names_c = covariate_design(design, base, "mmrm")
    todo_c = contrasts(design, names_c, ["group:window"])

    def covariate():
        fit = fit_mmrm(y[:, :, 1:] - base[:, :, None], Xc, "us")
        return fit, [fit.contrast(L) for _, _, L in todo_c]

    _, wall_c, peak_c = measure(covariate)
    rows.append(("mmrm, baseline as covariate (Δ ~ window + group:window + baseline:window), us", wall_c, peak_c))

    def covariate_kr():
        fit = fit_mmrm(y[:, :, 1:] - base[:, :, None], Xc, "us", df="kenward-roger")
        return fit, [fit.contrast(L) for _, _, L in todo_c]

    _, wall_k, peak_k = measure(covariate_kr)
    rows.append(("the same with df: kenward-roger", wall_k, peak_k))

    rng = np.random.default_rng(1)
    sample = np.sort(rng.choice(E, a.sample, replace=False))
    long = pd.DataFrame({
        "edge": np.repeat(sample, S * len(WINDOWS)),
        "subject": np.tile(np.repeat(np.arange(S), len(WINDOWS)), len(sample)),
        "group": np.tile(np.repeat(design.subjects["group"].to_numpy(), len(WINDOWS)), len(sample)),
        "window": np.tile(WINDOWS, S * len(sample)),
        "idx": np.tile(np.arange(1, len(WINDOWS) + 1), S * len(sample)),
        "value": y[sample].ravel(),
    })
    with tempfile.TemporaryDirectory() as tmp:
        src, script = Path(tmp) / "d.csv", Path(tmp) / "loop.R"
        long.to_csv(src, index=False)
        script.write_text(R_LOOP)
        out = subprocess.run(["Rscript", str(script), str(src)], check=True, capture_output=True, text=True).stdout
    secs, est = out.splitlines()[0], out.splitlines()[1]
    per_edge = float(secs) / a.sample
    est = np.array(est.split(), float)
    col = names.index("group:window[10-20min]")
    diff = np.max(np.abs(est - fit.beta[sample, col]))
    rows.append((f"R nlme::gls loop (corSymm + varIdent), scaled from {a.sample} edges", per_edge * E, float("nan")))

    print(f"{E} edges, {S} subjects x {len(WINDOWS)} windows; 2 cores")
    print(f"{'what':<84} {'wall s':>9} {'peak MB':>8}")
    for what, wall, peak in rows:
        print(f"{what:<84} {wall:>9.1f} {peak:>8.0f}")
    print(f"R gls per edge: {per_edge * 1e3:.1f} ms; speed-up of the batched MMRM: "
          f"{per_edge * E / wall_r:,.0f}x (response), {per_edge * E / wall_c:,.0f}x (covariate)")
    print(f"largest absolute difference of the group:window[10-20min] estimates from R's: {diff:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
