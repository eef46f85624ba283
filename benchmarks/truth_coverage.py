"""Coverage of the primary test's confidence intervals for the planted effect, over seeds of the
default study: each seed is simulated, extracted and analysed as `dvc repro` would (params.yaml with
only simulate.seed changed), and every confirmatory group:window interval of report.primary_test is
checked against the planted contrast on the measured scale (results/truth). Edges with and without
a planted effect are counted separately, with exact (Clopper–Pearson) 95 % intervals.

    .venv/bin/python benchmarks/truth_coverage.py --seeds 20 [--first 1000] [--keep DIR]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml
from scipy.stats import binomtest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from fclab.framework.params import load_params  # noqa: E402
from fclab.framework.report.summaries import truth_check  # noqa: E402
from fclab.framework.report.summaries import truth_contrasts as contrasts  # noqa: E402


def one(seed: int, work: Path) -> pd.DataFrame:
    d = work / f"seed{seed}"
    d.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["simulate"]["seed"] = seed
    params["connectivity"]["sliding"] = []
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for stage in ("simulate", "extract", "connectivity", "truth", "stats"):
        subprocess.run([sys.executable, "-m", "fclab.cli", stage], cwd=d, check=True, capture_output=True,
                       env=dict(os.environ, FCLAB_LOAD_PLUGINS=""))
    p = load_params(d / "params.yaml")
    rp = p.report
    tests = pd.read_parquet(d / "results/stats/tests.parquet")
    primary = tests[(tests["test"] == rp.primary_test) & (tests["term"] == "group:window")
                    & (tests["family"] == "confirmatory")]
    planted = contrasts(pd.read_parquet(d / "results/truth/truth.parquet"), tuple(p.stats.groups),
                        [w.name for w in p.connectivity.windows], p.stats.baseline_window)
    out = truth_check(primary, planted).assign(seed=seed)
    shutil.rmtree(d / "data", ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first", type=int, default=1000)
    ap.add_argument("--keep", type=Path, default=None)
    a = ap.parse_args()
    work = a.keep or Path(tempfile.mkdtemp(prefix="fclab-coverage-"))
    rows = []
    for seed in range(a.first, a.first + a.seeds):
        rows.append(one(seed, work))
        print(f"seed {seed}: {int(rows[-1]['covered'].astype(bool).sum())} of {len(rows[-1])} covered", flush=True)
    allr = pd.concat(rows, ignore_index=True)
    allr.to_csv(work / "coverage.csv", index=False)
    allr["kind"] = (allr["measured_delta"].abs() > 0.02).map({True: "planted", False: "null"})
    print(f"\n{a.seeds} seeds of the default study; primary test {load_params(ROOT / 'params.yaml').report.primary_test}")
    print(f"{'edges':8s} {'window':9s} {'intervals':>9s} {'covered':>8s} {'coverage':>8s}  95 % CI")
    for (kind, window), g in allr.groupby(["kind", "window"]):
        k, n = int(g["covered"].astype(bool).sum()), len(g)
        ci = binomtest(k, n).proportion_ci()
        print(f"{kind:8s} {window:9s} {n:9d} {k:8d} {k / n:8.3f}  [{ci.low:.3f}, {ci.high:.3f}]")
    k, n = int(allr["covered"].astype(bool).sum()), len(allr)
    ci = binomtest(k, n).proportion_ci()
    print(f"{'all':8s} {'':9s} {n:9d} {k:8d} {k / n:8.3f}  [{ci.low:.3f}, {ci.high:.3f}]  (nominal 0.95)")
    print(f"rows: {work / 'coverage.csv'}")


if __name__ == "__main__":
    main()
