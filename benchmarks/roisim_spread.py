"""Does the ROI-level simulator spread like the voxel-level simulation? Between-subject SD per window.

For each voxel-level study directory given (``fclab simulate``, ``extract`` and ``connectivity`` run
in it, e.g. with ``effect_delta_r: 0`` and several seeds) and for ``--n`` ROI-level studies of the
design params.yaml describes (fclab.framework.simulation.roi_level), prints side by side the within-group SD across
subjects of each window's Fisher z and of the change from baseline, averaged over edges.

    .venv/bin/python benchmarks/roisim_spread.py /tmp/null101 /tmp/null202 /tmp/null303 [--n 8]
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from fclab.framework.connectome.edgestore import read_edges
from fclab.framework.params import load_params
from fclab.framework.simulation.roi_level import RoiStudy, simulate_edges


def spread(edges: pd.DataFrame, windows: list[str], baseline: str) -> pd.Series:
    edges = edges[edges["window"].isin(windows)]
    wide = edges.pivot_table(index=["roi_a", "roi_b", "subject"], columns="window", values="value")
    group = edges.drop_duplicates("subject").set_index("subject")["group"]
    out = {}
    for name, col in [(w, wide[w]) for w in windows] + [
            (f"Δ {w}", wide[w] - wide[baseline]) for w in windows if w != baseline]:
        frame = pd.DataFrame({"v": col.to_numpy(), "g": group.reindex(col.index.get_level_values("subject")).to_numpy(),
                              "e": col.index.droplevel("subject")})
        out[name] = frame.groupby(["e", "g"])["v"].std().groupby(level=0).mean().mean()
    return pd.Series(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("studies", nargs="*")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--params", default="params.yaml")
    a = ap.parse_args(argv)
    params = load_params(a.params)
    windows = [w.name for w in params.connectivity.windows]
    base = params.stats.baseline_window
    cols = {d: spread(read_edges(f"{d}/results/connectivity/edges.parquet", windows).long(), windows, base)
            for d in a.studies}
    study = RoiStudy.from_params(params)
    t0 = time.perf_counter()
    sims = [spread(simulate_edges(study, s), windows, base) for s in range(a.n)]
    per = (time.perf_counter() - t0) / a.n
    table = pd.DataFrame(cols)
    if a.studies:
        table["voxel mean"] = table.mean(axis=1)
    table[f"roisim ({a.n} studies)"] = pd.concat(sims, axis=1).mean(axis=1)
    if a.studies:
        table["ratio"] = table.iloc[:, -1] / table["voxel mean"]
    print(table.round(3).to_string())
    print(f"roisim: {per:.2f} s per study")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
