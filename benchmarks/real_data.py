"""Figures of fclab on the real fsaverage5 run brainspace ships (tests/test_real_data.py arranges it):
agreement with nilearn's SurfaceLabelsMasker and known properties of resting-state connectivity.

    .venv/bin/python benchmarks/real_data.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import test_real_data as real  # noqa: E402


def main():
    from nilearn.maskers import SurfaceLabelsMasker
    from nilearn.surface import PolyMesh, SurfaceImage
    from scipy.stats import spearmanr

    import surface_data as sd
    from fclab.framework.connectome.edgestore import read_edges

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root, data, labels = real.write_real_run(tmp / "derivatives")
        (tmp / "params.yaml").write_text(yaml.safe_dump(real.real_params(root), sort_keys=False))
        os.chdir(tmp)
        for stage in ("extract", "connectivity"):
            t = time.perf_counter()
            code = os.system(f"{ROOT / '.venv/bin/fclab'} {stage} > /dev/null")
            print(f"fclab {stage}: exit {code}, {time.perf_counter() - t:.1f} s")
        ts = pd.read_parquet("results/extract/timeseries.parquet")
        meshes = PolyMesh(left=sd.mesh_file("L"), right=sd.mesh_file("R"))
        label_img = SurfaceImage(mesh=meshes, data={"left": labels["L"],
                                                     "right": np.where(labels["R"] > 0, labels["R"] + 1000, 0)})
        conf = pd.read_csv(next(root.glob("**/*confounds_timeseries.tsv")), sep="\t")[real.REGRESSORS].to_numpy()
        order = [f"{h}_{n}" for h in "LR" for v, n in sorted(real._names(root / f"{h}.label.gii").items())
                 if v and (labels[h] == v).any()]
        for dtype in (np.float64, np.float32):
            img = SurfaceImage(mesh=meshes, data={"left": data["L"].T.astype(dtype), "right": data["R"].T.astype(dtype)})
            theirs = SurfaceLabelsMasker(label_img, background_label=0, standardize="zscore_sample", detrend=True,
                                         t_r=real.TR).fit_transform(img, confounds=conf)
            diff = np.abs(ts[order].to_numpy() - theirs)
            print(f"nilearn SurfaceLabelsMasker on {np.dtype(dtype).name} data: max |difference| {diff.max():.2e} "
                  "(z-scored signals, SD 1)")
        r = read_edges("results/connectivity/edges.parquet").long()
        r["r"] = np.tanh(r["value"])
        for w, e in r.groupby("window", observed=True):
            homo = e[(e["roi_a"].str[2:] == e["roi_b"].str[2:]) & (e["roi_a"].str[:2] != e["roi_b"].str[:2])]
            print(f"window {w}: {len(e)} pairs, median r {e['r'].median():.3f}, 75th pct {e['r'].quantile(.75):.3f}; "
                  f"{len(homo)} homotopic pairs: median r {homo['r'].median():.3f}, "
                  f"{(homo['r'] > e['r'].median()).mean():.0%} above the all-pairs median")
        atlas = pd.read_parquet("results/extract/rois.parquet").set_index("roi")
        xyz = atlas[["x_mm", "y_mm", "z_mm"]]
        same = r[r["roi_a"].str[:2] == r["roi_b"].str[:2]]
        dist = np.linalg.norm(xyz.loc[same["roi_a"]].to_numpy() - xyz.loc[same["roi_b"]].to_numpy(), axis=1)
        print(f"within-hemisphere pairs: Spearman(distance, r) = {spearmanr(dist, same['r']).statistic:.3f}")
        qc = pd.read_parquet("results/extract/run_qc.parquet").iloc[0]
        print(f"run: {qc['n_volumes']} volumes, TR {qc['tr_s']} s, mean FD {qc['mean_fd']:.3f} mm, max FD {qc['max_fd']:.3f}")
        mean = np.concatenate([data[h].mean(axis=0) for h in "LR"])
        print(f"vertex means: median |mean| {np.median(np.abs(mean)):.1e} (the shipped data are demeaned: tSNR is "
              "not defined for them)")


if __name__ == "__main__":
    main()
