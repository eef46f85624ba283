"""DVC in a temporary git clone: full run, no-op rerun, an experiment on a stats parameter reruns
only stats and report, and params, metrics and plots commands work."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from fclab.framework.connectome.edgestore import read_edges_long

from conftest import ROOT, install_example, small_params

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
    assert "reports/metrics.json" in shown and "top.edge" in shown and "confirmatory.significant" in shown
    sh("dvc", "metrics", "diff", cwd=clone)
    plots = sh("dvc", "plots", "show", cwd=clone)
    assert "dvc_plots" in plots and (clone / "dvc_plots" / "index.html").exists()


@pytest.mark.skipif(shutil.which("git") is None, reason="git is required")
def test_installed_plugins_code_version_and_input_files_rerun_exactly_their_stages(tmp_path):
    """Two example distributions (examples/), built and installed as wheels outside the project: an
    ROI set reading a coordinate TSV, and a metric plus an interval-only test (the report's primary
    test here) run through `dvc repro`. Editing the metric's installed code reruns connectivity and
    what follows, never extract; raising its version makes the same stages stale; editing the ROI set's
    TSV makes extract stale; `dvc status` names the stale stages once the manifest is refreshed. The examples' own test
    suites, which use fclab's conformance kit, pass against the installed code."""
    clone = _clone(tmp_path)
    (clone / "rois.tsv").write_text("name\tx\ty\tz\nPCC\t0\t-52\t26\n")
    params = small_params()
    params["simulate"].update(n_ketamine=3, n_midazolam=3)
    params["extract"]["rois"].append({"name": "coords_tsv", "path": "rois.tsv"})
    params["connectivity"]["sliding"] = []
    params["connectivity"]["metrics"] = ["pearson", "gc_mi"]
    params["stats"]["tests"] = ["change_welch", {"name": "bootstrap_diff", "n_boot": 200}]
    params["report"]["primary_test"] = "bootstrap_diff"
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env, code = install_example(tmp_path, ("fclab-example", "fclab-example-rois"))
    suite = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            str(tmp_path / "fclab-example" / "tests"), str(tmp_path / "fclab-example-rois" / "tests")],
                           cwd=tmp_path, capture_output=True, text=True, env=dict(os.environ, **env))
    assert suite.returncode == 0, suite.stdout[-2000:]
    first = sh("dvc", "repro", cwd=clone, extra_env=env)
    assert {"extract", "connectivity", "stats", "report"} <= ran(first)
    edges = read_edges_long(clone / "results/connectivity/edges.parquet")
    assert "PCC" in set(edges["roi_b"]) | set(edges["roi_a"])
    before = edges.loc[edges["metric"] == "gc_mi", "value"].to_numpy()
    assert before.size and (before[np.isfinite(before)] >= 0).all()
    metrics = json.loads((clone / "reports/metrics.json").read_text())
    assert metrics["test"] == "bootstrap_diff"
    prov = json.loads(pq.read_schema(clone / "results/connectivity/edges.parquet").metadata[b"fclab"])
    assert prov["scale_info"]["mi_bits"] == {"name": "mi_bits", "label": "mutual information (bits)",
                                             "signed": False, "low": 0.0, "high": None}

    module = code["fclab-example"] / "__init__.py"
    module.write_text(module.read_text().replace("mi = -0.5 * np.log2(1.0 - r**2)", "mi = -1.0 * np.log2(1.0 - r**2)"))
    status = sh("dvc", "status", cwd=clone, extra_env=env)
    assert "plugins" in status  # always changed: refresh the manifest to see what it affects
    sh("fclab", "manifest", cwd=clone, extra_env=env)
    status = sh("dvc", "status", cwd=clone, extra_env=env)
    assert "connectivity:" in status and "extract:" not in status, status
    again = sh("dvc", "repro", cwd=clone, extra_env=env)
    assert ran(again) == {"plugins", "connectivity", "truth", "stats", "report"}, again
    edges = read_edges_long(clone / "results/connectivity/edges.parquet")
    after = edges.loc[edges["metric"] == "gc_mi", "value"].to_numpy()
    assert np.allclose(after, 2 * before, equal_nan=True) and not np.allclose(after, before)

    info, = code["fclab-example"].parent.glob("fclab_example-*.dist-info")
    meta = info / "METADATA"
    assert sh("dvc", "repro", cwd=clone, extra_env=env).count("Running stage") == 1  # plugins only
    meta.write_text(meta.read_text().replace("Version: 0.1.0", "Version: 0.1.1"))
    sh("fclab", "manifest", cwd=clone, extra_env=env)
    status = sh("dvc", "status", cwd=clone, extra_env=env)
    assert "connectivity:" in status and "stats:" in status and "extract:" not in status, status

    meta.write_text(meta.read_text().replace("Version: 0.1.1", "Version: 0.1.0"))
    (clone / "rois.tsv").write_text("name\tx\ty\tz\nPCC\t2\t-52\t26\n")  # a file the ROI set reads
    sh("fclab", "manifest", cwd=clone, extra_env=env)
    status = sh("dvc", "status", cwd=clone, extra_env=env)
    assert "extract:" in status and "simulate:" not in status, status


def test_an_editable_plugin_edit_changes_only_its_kinds_manifest(tmp_path):
    """The example distribution installed in editable mode: an edit of its source is seen by the
    manifest (what DVC compares) for metrics and tests, not for ROI sets, and `fclab plugins` and
    `fclab plugins check` find it by its entry point."""
    env, code = install_example(tmp_path, editable=True)
    code_dir = code["fclab-example"]
    work = tmp_path / "study"
    work.mkdir()
    params = small_params()
    params["connectivity"]["metrics"] = ["pearson", "gc_mi"]
    params["stats"]["tests"] = ["mmrm", "bootstrap_diff"]
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    listed = json.loads(sh("fclab", "plugins", "--json", cwd=work, extra_env=env))
    mine = {p["name"]: p for p in listed}
    assert mine["gc_mi"]["entry_point"] == "example" and mine["gc_mi"]["distribution"] == "fclab-example"
    checked = sh("fclab", "plugins", "check", "bootstrap_diff", cwd=work, extra_env=env)
    assert re.search(r"\b(\d+) of \1 checks passed", checked) and "FAIL" not in checked, checked
    sh("fclab", "manifest", cwd=work, extra_env=env)
    read = {k: (work / f"results/plugins/{k}.json").read_text() for k in ("roi", "metric", "test")}
    module = code_dir / "__init__.py"
    module.write_text(module.read_text() + "\n# an edit\n")
    sh("fclab", "manifest", cwd=work, extra_env=env)
    after = {k: (work / f"results/plugins/{k}.json").read_text() for k in ("roi", "metric", "test")}
    assert after["roi"] == read["roi"]
    assert after["metric"] != read["metric"] and after["test"] != read["test"]


@pytest.mark.skipif(shutil.which("git") is None, reason="git is required")
def test_a_participants_file_outside_the_data_root_is_an_input_dvc_sees(tmp_path):
    """participants.tsv in the raw BIDS tree (fMRIPrep writes none): moving a subject from one group to
    the other there makes `dvc status` name extract once the manifest is refreshed; an unchanged file
    does not."""
    clone = _clone(tmp_path)
    params = small_params()
    params["simulate"].update(n_ketamine=2, n_midazolam=2)
    params["extract"]["data"]["participants"] = "../../rawdata/participants.tsv"
    params["connectivity"]["sliding"] = []
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("dvc", "repro", "simulate", cwd=clone)
    (clone / "rawdata").mkdir()
    raw = clone / "rawdata" / "participants.tsv"
    shutil.move(clone / "data/simulated/participants.tsv", raw)
    sh("dvc", "repro", "extract", cwd=clone)
    inputs = json.loads((clone / "results/plugins/inputs.json").read_text())
    assert [(e["role"], e["path"]) for e in inputs] == [("participants", "data/simulated/../../rawdata/participants.tsv")]
    sh("fclab", "manifest", cwd=clone)
    assert "extract:" not in sh("dvc", "status", "extract", cwd=clone)

    table = pd.read_csv(raw, sep="\t", dtype=str)
    first = table.index[table["group"] == "ketamine"][0]
    table.loc[first, "group"] = "midazolam"
    table.to_csv(raw, sep="\t", index=False)
    sh("fclab", "manifest", cwd=clone)
    status = sh("dvc", "status", "extract", cwd=clone)
    assert "extract:" in status and "results/plugins/inputs.json" in status, status
