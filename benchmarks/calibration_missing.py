"""mmrm's calibration when windows are missing: 12 % of subject × window cells of each voxel-level null
study set missing at random, then 1,000 group relabellings (the stats stage's run_stats).

    .venv/bin/python benchmarks/calibration_missing.py   (needs /tmp/null101 and /tmp/null303, see calibration.py)
"""
import numpy as np
from fclab.framework.connectome.edgestore import read_edges
from fclab.framework.params import load_params
from fclab.framework.pluginhost.builder import build_all
from fclab.framework.simulation.power import relabel_many, rates
p = load_params("params.yaml")
for seed in (101, 303):
    windows = [w.name for w in p.connectivity.windows]
    e = read_edges(f"/tmp/null{seed}/results/connectivity/edges.parquet", windows).long()
    keys = e[["subject", "window"]].drop_duplicates()
    drop = keys.sample(frac=0.12, random_state=seed)  # whole subject-windows missing (an excluded run part)
    m = e.set_index(["subject", "window"]).index.isin(drop.set_index(["subject", "window"]).index)
    e.loc[m, "value"] = np.nan
    st = p.stats.model_copy(update={"tests": ["mmrm"]})
    out = relabel_many(e, st, build_all("test", st.tests), windows, 1000, 7, ("Left_Amygdala", "vmPFC"), "10-20min",
                       jobs=1)
    r = rates(out); print(seed, r[r.outcome.isin(["single","confirmatory","exploratory"])][["term","outcome","rate","ci_low","ci_high"]].to_string(index=False))
