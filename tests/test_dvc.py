"""DVC in a temporary git clone: full run, no-op rerun, an experiment on a stats parameter reruns
only stats and report, and params, metrics and plots commands work."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import ROOT, small_params

BIN = Path(sys.executable).parent


def sh(*args, cwd):
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", DVC_NO_ANALYTICS="1")
    env.pop("FCLAB_LOAD_PLUGINS", None)
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout + out.stderr


@pytest.mark.skipif(shutil.which("git") is None, reason="git is required")
def test_repro_noop_and_partial_rerun(tmp_path, ran_study):
    clone = tmp_path / "clone"
    sh("git", "clone", "--quiet", "--no-local", str(ROOT), str(clone), cwd=tmp_path)
    # The working tree may hold changes not yet committed: test what is here, not only HEAD.
    for rel in subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split():
        if (ROOT / rel).is_file():
            (clone / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, clone / rel)
    (clone / "params.yaml").write_text(yaml.safe_dump(small_params(), sort_keys=False))
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "small study", "--allow-empty", cwd=clone)

    first = sh("dvc", "repro", cwd=clone)
    for stage in ("simulate", "extract", "connectivity", "truth", "stats", "report"):
        assert f"Running stage '{stage}'" in first
    # `dvc repro` and `fclab run` (the ran_study fixture, same params) give the same tables.
    for table in ("results/connectivity/edges.parquet", "results/truth/truth.parquet", "results/stats/tests.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(clone / table), pd.read_parquet(ran_study[0] / table))

    second = sh("dvc", "repro", cwd=clone)
    assert "Running stage" not in second and "up to date" in second

    git = ("git", "-c", "user.name=t", "-c", "user.email=t@t")
    sh("git", "add", "-A", cwd=clone)
    sh(*git, "commit", "-qm", "baseline run", cwd=clone)
    exp = sh("dvc", "exp", "run", "-S", "stats.alpha=0.01", cwd=clone)
    ran = {s for s in ("simulate", "extract", "connectivity", "truth", "stats", "report") if f"Running stage '{s}'" in exp}
    assert ran == {"stats", "report"}

    diff = sh("dvc", "params", "diff", cwd=clone)
    assert "stats.alpha" in diff and "0.05" in diff and "0.01" in diff
    shown = sh("dvc", "metrics", "show", cwd=clone)
    assert "reports/metrics.json" in shown and "Left_Amygdala~vmPFC" in shown
    sh("dvc", "metrics", "diff", cwd=clone)
    plots = sh("dvc", "plots", "show", cwd=clone)
    assert "dvc_plots" in plots and (clone / "dvc_plots" / "index.html").exists()
