"""DVC in a temporary git clone: full run, no-op rerun, an experiment on a stats parameter reruns
only stats and report, and params, metrics and plots commands work."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT, small_params

BIN = Path(sys.executable).parent


def sh(*args, cwd, extra_env=None):
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", DVC_NO_ANALYTICS="1", **(extra_env or {}))
    env.pop("FCLAB_LOAD_PLUGINS", None)
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout + out.stderr


STAGES = ("plugins", "simulate", "extract", "connectivity", "truth", "stats", "report")


def _clone(tmp_path):
    """A git clone of the project; the working tree may hold changes not yet committed, so the
    tracked files are copied over it: this tests what is here, not only HEAD."""
    clone = tmp_path / "clone"
    sh("git", "clone", "--quiet", "--no-local", str(ROOT), str(clone), cwd=tmp_path)
    for rel in subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split():
        if (ROOT / rel).is_file():
            (clone / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, clone / rel)
    return clone


def ran(output: str) -> set[str]:
    return {s for s in STAGES if f"Running stage '{s}'" in output}


@pytest.mark.skipif(shutil.which("git") is None, reason="git is required")
def test_repro_noop_and_partial_rerun(tmp_path, ran_study):
    clone = _clone(tmp_path)
    (clone / "params.yaml").write_text(yaml.safe_dump(small_params(), sort_keys=False))
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "small study", "--allow-empty", cwd=clone)

    first = sh("dvc", "repro", cwd=clone)
    for stage in ("simulate", "extract", "connectivity", "truth", "stats", "report"):
        assert f"Running stage '{stage}'" in first
    # `dvc repro` and `fclab run` (the ran_study fixture, same params) give the same tables.
    for table in ("results/connectivity/edges.parquet", "results/truth/truth.parquet", "results/stats/tests.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(clone / table), pd.read_parquet(ran_study[0] / table))

    second = sh("dvc", "repro", cwd=clone)
    assert ran(second) == {"plugins"}  # it always runs; its outputs did not change, so nothing else did

    git = ("git", "-c", "user.name=t", "-c", "user.email=t@t")
    sh("git", "add", "-A", cwd=clone)
    sh(*git, "commit", "-qm", "baseline run", cwd=clone)
    exp = sh("dvc", "exp", "run", "-S", "stats.alpha=0.01", cwd=clone)
    assert ran(exp) == {"plugins", "stats", "report"}

    diff = sh("dvc", "params", "diff", cwd=clone)
    assert "stats.alpha" in diff and "0.05" in diff and "0.01" in diff
    shown = sh("dvc", "metrics", "show", cwd=clone)
    assert "reports/metrics.json" in shown and "Left_Amygdala~vmPFC" in shown
    sh("dvc", "metrics", "diff", cwd=clone)
    plots = sh("dvc", "plots", "show", cwd=clone)
    assert "dvc_plots" in plots and (clone / "dvc_plots" / "index.html").exists()


@pytest.mark.skipif(shutil.which("git") is None, reason="git is required")
def test_an_installed_plugins_code_and_version_rerun_exactly_its_stages(tmp_path):
    """A third-party metric, installed as a distribution outside the project: editing its code or
    raising its version reruns connectivity and what follows, never extract; `dvc status` names the
    stale stages once the manifest is refreshed."""
    from test_plugins import DEMO_METRIC, make_distribution

    clone = _clone(tmp_path)
    params = small_params()
    params["simulate"].update(n_ketamine=3, n_midazolam=3)
    params["connectivity"]["sliding"] = []
    params["connectivity"]["metrics"] = ["pearson", "anticorrelation"]
    params["stats"]["tests"] = ["change_welch"]
    params["report"]["primary_test"] = "change_welch"
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    site = tmp_path / "site"
    site.mkdir()
    make_distribution(site, "fclab-demo", "0.1", {"demo": "fclab_demo"}, {"fclab_demo": DEMO_METRIC})
    env = {"PYTHONPATH": str(site)}
    first = sh("dvc", "repro", cwd=clone, extra_env=env)
    assert {"extract", "connectivity", "stats"} <= ran(first)
    edges = pd.read_parquet(clone / "results/connectivity/edges.parquet")
    before = edges.loc[edges["metric"] == "anticorrelation", "value"].to_numpy()

    module = site / "fclab_demo.py"
    module.write_text(module.read_text().replace("return -(np.swapaxes(x, -1, -2) @ x)",
                                                 "return -0.5 * (np.swapaxes(x, -1, -2) @ x)"))
    status = sh("dvc", "status", cwd=clone, extra_env=env)
    assert "plugins" in status  # always changed: refresh the manifest to see what it affects
    sh("fclab", "manifest", cwd=clone, extra_env=env)
    status = sh("dvc", "status", cwd=clone, extra_env=env)
    assert "connectivity:" in status and "extract:" not in status, status
    again = sh("dvc", "repro", cwd=clone, extra_env=env)
    assert ran(again) == {"plugins", "connectivity", "truth", "stats", "report"}, again
    edges = pd.read_parquet(clone / "results/connectivity/edges.parquet")
    after = edges.loc[edges["metric"] == "anticorrelation", "value"].to_numpy()
    assert np.allclose(after, 0.5 * before, equal_nan=True) and not np.allclose(after, before)

    info = next(site.glob("fclab_demo-*.dist-info"))
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fclab-demo\nVersion: 0.2\n")
    bumped = sh("dvc", "repro", cwd=clone, extra_env=env)
    assert ran(bumped) == {"plugins", "connectivity", "truth", "stats", "report"}, bumped
    assert sh("dvc", "repro", cwd=clone, extra_env=env).count("Running stage") == 1  # plugins only
