"""Plugin discovery: built-ins, a real third-party distribution, broken and invalid plugins."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, run_cli, small_params, write_params
from fclab.framework.connectome.edgestore import read_edges_long
from fclab.framework.pluginhost.registry import Registry, builtin_plugins, get_registry, reset_registry

DEMO_METRIC = '''
import numpy as np
from fclab.api import Metric, hookimpl


class Anticorrelation(Metric):
    """Minus the Pearson correlation: a toy metric to prove third-party discovery."""
    name = "anticorrelation"
    scale = "r"

    def compute(self, ts, tr):
        x = ts - ts.mean(axis=-2, keepdims=True)
        x = x / np.linalg.norm(x, axis=-2, keepdims=True)
        return -(np.swapaxes(x, -1, -2) @ x)


@hookimpl
def register_metrics(register):
    register(Anticorrelation)
'''


def make_distribution(site: Path, dist: str, version: str, entry_points: dict[str, str], modules: dict[str, str]):
    """Write modules plus a dist-info with entry_points.txt, as pip would install them."""
    for name, source in modules.items():
        (site / f"{name}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    eps = "\n".join(f"{k} = {v}" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[fclab]\n{eps}\n")
    files = [f"{name}.py,," for name in modules] + [f"{info.name}/{f},," for f in ("METADATA", "entry_points.txt")]
    (info / "RECORD").write_text("\n".join(files) + "\n")


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A site directory for the test's own distributions; plugins installed in the environment are
    hidden, so installing third-party plugins (working or broken) changes no outcome here."""
    import importlib.metadata as md

    path = tmp_path / "site-packages"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    monkeypatch.delenv("FCLAB_LOAD_PLUGINS", raising=False)
    real = md.entry_points

    def here_only(**kwargs):
        if kwargs.get("group") != "fclab":  # other libraries' entry points (numba's, say) are left alone
            return real(**kwargs)
        return [ep for ep in real(**kwargs) if ep.dist is not None and (
            ep.dist.name == "fclab" or str(ep.dist.locate_file("")).startswith(str(path)))]

    monkeypatch.setattr("fclab.framework.pluginhost.registry.md.entry_points", here_only)
    reset_registry()
    return path


def test_builtins_listed_with_kind_version_and_distribution():
    code, out, _ = run_cli("plugins", "--all", "--json")
    assert code == 0
    rows = {(r["name"], r["kind"]): r for r in json.loads(out)}
    assert {("atlas", "roi"), ("spheres", "roi"), ("pearson", "metric"), ("lmm", "test"),
            ("change_welch", "test")} <= set(rows)
    assert all(r["distribution"] == "fclab" for r in rows.values())
    assert {r["module"] for r in rows.values()} == set(builtin_plugins())
    # the one list of built-ins is pyproject.toml's entry points: one module per plugin file in plugins/
    files = {f"fclab.plugins.{p.stem}" for p in (ROOT / "plugins").glob("*.py") if p.stem != "__init__"}
    assert set(builtin_plugins()) == files


def test_third_party_distribution_is_discovered_listed_and_used(site, small_study, tmp_path, in_dir):
    make_distribution(site, "fclab-demo", "1.2.3", {"demo": "fclab_demo_metric"},
                      {"fclab_demo_metric": DEMO_METRIC})
    code, out, err = run_cli("plugins", "--json")
    assert code == 0, err
    listed = json.loads(out)
    assert listed == [{"name": "anticorrelation", "kind": "metric", "version": "1.2.3",
                       "distribution": "fclab-demo", "module": "fclab_demo_metric", "entry_point": "demo"}]

    work = tmp_path / "work"
    work.mkdir()
    (work / "data").symlink_to(small_study / "data")
    params = small_params()
    params["connectivity"]["metrics"] = ["pearson", "anticorrelation"]
    write_params(work, params)
    in_dir(work)
    for stage in ("extract", "connectivity"):
        code, _, err = run_cli(stage)
        assert code == 0, err
    edges = read_edges_long(work / "results/connectivity/edges.parquet")
    assert set(edges["metric"]) == {"pearson", "anticorrelation"}
    ts = pd.read_parquet(work / "results/extract/timeseries.parquet")
    one = edges[(edges["metric"] == "anticorrelation") & (edges["window"] == "baseline")].iloc[0]
    sel = ts[(ts["subject"] == one["subject"]) & (ts["run"] == "baseline")]
    expected = -np.corrcoef(sel[one["roi_a"]], sel[one["roi_b"]])[0, 1]
    assert one["value"] == pytest.approx(expected, rel=1e-10)


def test_selecting_no_external_plugins(site, monkeypatch):
    make_distribution(site, "fclab-demo", "1.2.3", {"demo": "fclab_demo_metric"},
                      {"fclab_demo_metric": DEMO_METRIC})
    monkeypatch.setenv("FCLAB_LOAD_PLUGINS", "")
    reset_registry()
    assert "anticorrelation" not in get_registry().metrics()
    monkeypatch.setenv("FCLAB_LOAD_PLUGINS", "demo")
    reset_registry()
    assert "anticorrelation" in get_registry().metrics()


def test_broken_plugin_is_named_and_others_keep_working(site, small_study, tmp_path, in_dir):
    make_distribution(site, "fclab-broken", "0.1", {"broken": "fclab_broken"},
                      {"fclab_broken": "import not_a_real_module_xyz\n"})
    code, out, err = run_cli("plugins", "--all")
    assert code == 1  # the listing is what a plugin's health is checked with: it says so
    problems = [line for line in err.splitlines() if "broken" in line]
    assert len(problems) == 1 and "not_a_real_module_xyz" in problems[0]
    assert problems[0].startswith("fclab: error: plugin 'broken' failed to import")
    assert "pearson" in out and "Traceback" not in err
    code, out, err = run_cli("-v", "plugins", "--all")
    assert code == 1 and "Traceback (most recent call last)" in err and "import not_a_real_module_xyz" in err
    write_params(tmp_path, small_params())
    in_dir(tmp_path)
    code, out, err = run_cli("validate", "--params-only")  # a study that does not use it runs
    assert code == 0 and "fclab: warning: plugin 'broken' failed to import" in err
    code, out, err = run_cli("plugins", "check", "brokn_metric")
    assert code != 0 and "not loaded: plugin 'broken' failed to import: ModuleNotFoundError" in err, err


def test_a_plugin_that_exits_at_import_is_named_and_fclab_runs(site):
    """sys.exit() in a plugin's module (exit 3, nothing printed before) is a load error like any other:
    `fclab --version` works, and `fclab plugins` names it and exits 1."""
    make_distribution(site, "fclab-exits", "0.1", {"exits": "fclab_exits"},
                      {"fclab_exits": "import sys\nsys.exit(3)\n"})
    code, out, err = run_cli("--version")
    assert code == 0 and out.startswith("fclab "), (code, out, err)
    code, out, err = run_cli("plugins", "--all")
    assert code == 1 and "plugin 'exits' failed to import: SystemExit: 3" in err and "pearson" in out, err


BAD_PLUGINS = {
    "wrong_base": ("""
        from fclab.api import hookimpl

        class NotAMetric:
            name = "oops"

        @hookimpl
        def register_metrics(register):
            register(NotAMetric)
    """, "plugin 'wrong_base'.*subclass of Metric"),
    "duplicate": ("""
        from fclab.api import hookimpl
        from fclab.plugins.pearson import Pearson

        class Again(Pearson):
            pass

        @hookimpl
        def register_metrics(register):
            register(Again)
    """, "plugin 'duplicate'.*'pearson' is already registered"),
    "no_scale": ("""
        from fclab.api import Metric, hookimpl

        class NoScale(Metric):
            name = "noscale"

        @hookimpl
        def register_metrics(register):
            register(NoScale)
    """, "plugin 'no_scale'.*must declare its output scale"),
}


BAD_PLUGINS.update({
    "raises": ("""
        from fclab.api import hookimpl

        @hookimpl
        def register_metrics(register):
            raise RuntimeError("boom")
    """, "plugin 'raises': register_metrics raised RuntimeError: boom"),
    "misspelt": ("""
        from fclab.api import hookimpl

        @hookimpl
        def register_metric(register):
            pass
    """, "plugin 'misspelt' was not loaded: .*register_metric"),
    "extra_argument": ("""
        from fclab.api import hookimpl

        @hookimpl
        def register_metrics(register, extra):
            pass
    """, "plugin 'extra_argument' was not loaded: .*extra"),
})


@pytest.mark.parametrize("name", sorted(BAD_PLUGINS))
def test_a_plugin_that_breaks_the_contract_is_left_out_with_its_reason(site, name, tmp_path, in_dir):
    """The broken plugin is named in one line (`fclab plugins` exits 1 for it); the built-ins (and commands) keep working."""
    import re

    source, message = BAD_PLUGINS[name]
    make_distribution(site, f"fclab-{name}", "0.1", {name: f"fclab_{name}"}, {f"fclab_{name}": source})
    registry = Registry()
    assert any(re.search(message, e) for e in registry.load_errors), registry.load_errors
    assert registry.metrics()["pearson"].__module__ == "fclab.plugins.pearson"
    reset_registry()
    code, out, err = run_cli("plugins", "--all")
    assert code == 1 and "pearson" in out and len([x for x in err.splitlines() if name in x]) == 1, err  # listed, and exit 1
    write_params(tmp_path, small_params())
    in_dir(tmp_path)
    code, _, err = run_cli("validate", "--params-only")
    assert code == 0 and re.search(message, err), err


def test_asymmetric_metric_is_refused_before_work(site, tmp_path, in_dir):
    make_distribution(site, "fclab-asym", "0.1", {"asym": "fclab_asym"}, {"fclab_asym": DEMO_METRIC.replace(
        'scale = "r"', 'scale = "r"\n    symmetric = False')})
    params = small_params()
    params["connectivity"]["metrics"] = ["anticorrelation"]
    write_params(tmp_path, params)
    in_dir(tmp_path)
    code, _, err = run_cli("validate", "--params-only")
    assert code == 2 and "connectivity.metrics[0]: 'anticorrelation' is not symmetric" in err


def test_register_commands_hook_adds_a_command(site):
    make_distribution(site, "fclab-cmd", "0.1", {"cmd": "fclab_cmd"}, {"fclab_cmd": '''
        from fclab.api import hookimpl

        @hookimpl
        def register_commands(app):
            @app.command()
            def hello():
                print("hello from a plugin")
    '''})
    import typer
    from typer.testing import CliRunner

    app = typer.Typer()

    @app.command()
    def noop():
        pass

    get_registry().add_commands(app)
    result = CliRunner().invoke(app, ["hello"])
    assert result.exit_code == 0 and "hello from a plugin" in result.stdout


NO_P_TEST = '''
import numpy as np
import pandas as pd
from fclab.api import StatTest, hookimpl


class Bayes(StatTest):
    """A test that reports a Bayes factor, not a p-value (a stand-in for a JZS test)."""
    name = "bayes"
    terms = ("group:window",)

    def run(self, edges, design):
        rows = []
        for (metric, a, b), frame in edges.groupby(["metric", "roi_a", "roi_b"], observed=True):
            for w in design.effect_windows:
                row = {"metric": metric, "roi_a": a, "roi_b": b, "window": w, "term": "group:window",
                       "estimate": float(frame.loc[frame["window"] == w, "value"].mean()), "se": np.nan,
                       "stat": np.nan, "df": np.nan, "p": np.nan, "ci_low": np.nan, "ci_high": np.nan,
                       "effect_size": 3.0, "effect_size_kind": "bayes_factor_10", "reason": "Bayes factor: no p"}
                if WITH_N:
                    row["n"] = int(frame["subject"].nunique())
                rows.append(row)
        return pd.DataFrame(rows)


@hookimpl
def register_stat_tests(register):
    register(Bayes)
'''


def _stats_with(ran_study, tmp_path, in_dir, tests):
    """The stats stage on a copy of the ran study's results with ``tests`` (the first one primary)."""
    import shutil

    shutil.copytree(ran_study[0] / "results", tmp_path / "results")
    params = small_params()
    params["stats"]["tests"] = tests
    params["report"]["primary_test"] = tests[0]
    write_params(tmp_path, params)
    in_dir(tmp_path)
    code, _, err = run_cli("stats")
    return code, err


@pytest.mark.parametrize("with_n", [True, False])
def test_a_test_without_p_values_reaches_the_report_or_names_its_breach(site, ran_study, tmp_path, in_dir, with_n):
    module = f"fclab_bayes_{with_n}".lower()  # a module name per case: imports are cached per process
    make_distribution(site, "fclab-bayes", "0.1", {"bayes": module}, {module: f"WITH_N = {with_n}\n" + NO_P_TEST})
    code, err = _stats_with(ran_study, tmp_path, in_dir, ["bayes", "change_welch"])
    if not with_n:
        assert code == 2 and "stats.tests: bayes: rows without 'n'" in err and len(err.strip().splitlines()) == 1
        return
    assert code == 0, err
    code, _, err = run_cli("report")
    assert code == 0, err
    metrics = json.loads((tmp_path / "reports/metrics.json").read_text())
    assert metrics["test"] == "bayes" and metrics["top"] is None and metrics["confirmatory"]["significant"] == 0
    detail = json.loads((tmp_path / "reports/confirmatory.json").read_text())
    assert all(v["p_adj"] is None for e in detail["edges"].values() for v in e.values())


INPUTS_TEST = '''
from fclab.api import DataError, StatTest, hookimpl, welch_change


class WantsAll(StatTest):
    """Asks for the sliding rows and the run QC, and needs a participants column (age)."""
    name = "wants_all"
    terms = ("group:window",)
    requires = ("subject", "group", "window", "age")
    uses = ("sliding", "run_qc")

    def run(self, edges, design):
        if design.sliding is None or design.sliding.empty or set(design.sliding["window"]) & set(design.windows):
            raise DataError("wants_all: no sliding rows, or fixed windows among them")
        if design.run_qc is None or "mean_fd" not in design.run_qc:
            raise DataError("wants_all: no run QC")
        if not {"age", "sex", "mean_fd"} <= set(design.subjects.columns):
            raise DataError(f"wants_all: subjects lack participants columns: {list(design.subjects.columns)}")
        return welch_change(edges, design)


class WantsNothing(StatTest):
    name = "wants_nothing"
    terms = ("group:window",)

    def run(self, edges, design):
        if design.sliding is not None or design.run_qc is not None:
            raise DataError("wants_nothing: given inputs it did not ask for")
        return welch_change(edges, design)


class WantsUnknown(StatTest):
    name = "wants_unknown"
    uses = ("voxels",)


@hookimpl
def register_stat_tests(register):
    register(WantsAll)
    register(WantsNothing)

'''


def test_a_test_gets_the_sliding_rows_run_qc_and_participants_columns_it_asks_for(site, ran_study, tmp_path,
                                                                                    in_dir):
    make_distribution(site, "fclab-inputs", "0.1", {"inputs": "fclab_inputs"}, {"fclab_inputs": INPUTS_TEST})
    code, err = _stats_with(ran_study, tmp_path, in_dir, ["wants_all", "wants_nothing"])
    assert code == 0, err
    tests = pd.read_parquet(tmp_path / "results/stats/tests.parquet")
    assert set(tests["test"]) == {"wants_all", "wants_nothing"}


def test_a_test_asking_for_an_unknown_input_is_left_out(site):
    make_distribution(site, "fclab-unknown", "0.1", {"unknown": "fclab_unknown"},
                      {"fclab_unknown": INPUTS_TEST.replace("register(WantsNothing)", "register(WantsUnknown)")})
    registry = get_registry()
    assert "wants_unknown" not in registry.stat_tests()
    assert any("uses unknown input(s) voxels" in e for e in registry.load_errors), registry.load_errors
