"""The simulated study analysed from its NIfTI and from its CIFTI files, side by side: the planted
effect as measured (truth stage) and as estimated (mmrm), for the amygdala-mPFC edges at 10-20 min.

NIfTI: the default ROI set (Harvard-Oxford amygdalae, 8 mm spheres). CIFTI (simulate.cifti): the
amygdalae from the grayordinates' volume part and 8 mm geodesic discs on the fsLR surface.

    .venv/bin/python benchmarks/cifti_study.py --seeds 1 2 --subjects 6
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import small_params  # noqa: E402

MODEL_CASE_CIFTI = [{"name": "cifti_structures", "structures": [],
                     "merge": {"Left_Amygdala": ["AMYGDALA_LEFT"], "Right_Amygdala": ["AMYGDALA_RIGHT"]}},
                    {"name": "surface_spheres"}]


def fclab(*args, cwd):
    subprocess.run([str(ROOT / ".venv/bin/fclab"), *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[1])
    ap.add_argument("--subjects", type=int, default=6, help="per group")
    a = ap.parse_args()
    rows = []
    for seed in a.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            p = small_params()
            p["simulate"].update(seed=seed, n_ketamine=a.subjects, n_midazolam=a.subjects, cifti=True)
            for kind in ("nifti", "cifti"):
                if kind == "cifti":
                    p["extract"]["data"]["space"] = "fsLR"
                    p["extract"]["rois"] = MODEL_CASE_CIFTI
                Path(tmp, "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
                fclab("run", cwd=tmp) if kind == "nifti" else [fclab(s, cwd=tmp) for s in
                                                               ("extract", "connectivity", "truth", "stats")]
                truth = pd.read_parquet(Path(tmp, "results/truth/truth.parquet"))
                tests = pd.read_parquet(Path(tmp, "results/stats/tests.parquet"))
                t = truth[(truth["group"] == "ketamine") & (truth["window"] == "10-20min")].set_index(["roi_a", "roi_b"])
                m = tests[(tests["test"] == "mmrm") & (tests["window"] == "10-20min")].set_index(["roi_a", "roi_b"])
                for amy in ("Left_Amygdala", "Right_Amygdala"):
                    for pfc in ("vmPFC", "dmPFC", "amPFC"):
                        rows.append({"seed": seed, "format": kind, "edge": f"{amy}-{pfc}",
                                     "measured_truth": t.loc[(amy, pfc), "measured_delta"],
                                     "mmrm_estimate": m.loc[(amy, pfc), "estimate"],
                                     "p_adj": m.loc[(amy, pfc), "p_adj"]})
    table = pd.DataFrame(rows).pivot_table(index=["seed", "edge"], columns="format",
                                           values=["measured_truth", "mmrm_estimate", "p_adj"])
    with pd.option_context("display.width", 250, "display.max_columns", 20, "display.float_format", "{:.3f}".format):
        print(table)


if __name__ == "__main__":
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    main()
