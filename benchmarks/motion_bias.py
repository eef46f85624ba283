"""The spurious group × window effect of group-dependent motion, per denoising strategy, over seeds.

The settings of tests/test_pipeline.py::test_motion_artefacts_need_more_than_motion_regression: the
small test study (8 + 8 subjects), no planted effect, ketamine moving 4x more during the infusion,
`spin_history: 6`, `motion_global: 6`, `mmrm`. Per seed the study is simulated once and analysed with
denoising `none`, `simple` and `simple` + global signal; the spurious effect is the mean group ×
window estimate over every edge and window. Prints one row per seed, then the mean and its standard
error over seeds (about 1 min per seed on 2 cores).

    .venv/bin/python benchmarks/motion_bias.py --seeds 11-26
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import small_params, write_params  # noqa: E402

STRATEGIES = {"none": {"strategy": "none"}, "simple": {"strategy": "simple"},
              "simple+gsr": {"strategy": "simple", "strategy_options": {"global_signal": "basic"}}}


def one(seed: int, work: Path) -> dict[str, float]:
    params = small_params()
    params["simulate"].update(effect_delta_r=0.0, extra_motion_group="ketamine", extra_motion_factor=4.0,
                              spin_history=6.0, motion_global=6.0, seed=seed)
    params["stats"]["tests"] = [{"name": "mmrm", "contrasts": ["group:window"]}]
    params["connectivity"]["sliding"] = []
    params["extract"]["exclude"] = {"max_mean_fd": None}
    bias = {}
    fclab = ROOT / ".venv/bin/fclab"
    for name, options in STRATEGIES.items():
        params["extract"]["denoise"].update({"strategy_options": {}, **options})
        write_params(work, params)
        for stage in (["simulate"] if name == "none" else []) + ["extract", "connectivity", "stats"]:
            done = subprocess.run([str(fclab), stage], cwd=work, capture_output=True, text=True,
                                  env={**os.environ, "FCLAB_CACHE": "off"})
            if done.returncode:
                sys.exit(f"seed {seed}, {name}, {stage}: {done.stderr.strip()}")
        tests = pd.read_parquet(work / "results/stats/tests.parquet")
        bias[name] = float(tests.loc[tests["term"] == "group:window", "estimate"].mean())
    return bias


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="11-26", help="first-last")
    first, last = (int(x) for x in ap.parse_args().seeds.split("-"))
    rows = []
    print("| seed | " + " | ".join(STRATEGIES) + " |\n|---|" + "---|" * len(STRATEGIES))
    for seed in range(first, last + 1):
        with tempfile.TemporaryDirectory(prefix=f"motion{seed}.") as work:
            rows.append(one(seed, Path(work)))
        print(f"| {seed} | " + " | ".join(f"{rows[-1][k]:.3f}" for k in STRATEGIES) + " |", flush=True)
    table = pd.DataFrame(rows)
    print("| mean ± SE | " + " | ".join(f"{table[k].mean():.3f} ± {table[k].std(ddof=1) / np.sqrt(len(table)):.3f}"
                                       for k in STRATEGIES) + " |")


if __name__ == "__main__":
    main()
