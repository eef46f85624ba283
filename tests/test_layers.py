"""The engine's house rules, read from the source (tests/importgraph.py): imports go one way through
the layers, with no cycle even counting imports inside functions; no module takes another's private
names or reaches for the stage adapters; plugins import the public API only; dvc.yaml lists exactly
the code each stage runs; docs/architecture.md maps every module."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

import importgraph as g

ROOT = Path(__file__).resolve().parents[1]


def test_every_module_has_a_layer():
    missing = []
    for m in g.parse():
        try:
            g.layer_of(m)
        except KeyError:
            missing.append(m)
    assert not missing, f"modules in no layer of tests/importgraph.py: {missing}"


def test_no_import_cycle():
    assert not g.cycles(), f"import cycles (imports inside functions count): {g.cycles()}"


def test_imports_go_down_the_layers():
    names = [n for n, _ in g.LAYERS]
    upward = [f"{a} ({names[g.layer_of(a)]}) imports {b} ({names[g.layer_of(b)]}) at line {imp.line}"
              for a, b, imp in g.edges() if g.layer_of(b) > g.layer_of(a)]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_private_names_across_modules():
    taken = [f"{a} takes {', '.join(n for n in imp.names if n.startswith('_'))} from {b} (line {imp.line})"
             for a, b, imp in g.edges() if any(n.startswith("_") and not n.startswith("__") for n in imp.names)]
    assert not taken, "\n".join(taken)


def test_only_the_commands_import_the_stage_adapters():
    callers = {a for a, b, _ in g.edges() if b == g.STAGES_MODULE}
    assert callers <= {"fclab.framework.commands", "fclab.cli"}, callers


def test_plugins_import_the_public_api_only():
    bad = [f"{m} imports {imp.target} (line {imp.line})" for m, mod in g.parse().items()
           if m.startswith("fclab.plugins.") for imp in mod.imports if imp.target != "fclab.api"]
    assert not bad, "\n".join(bad)


def test_the_graph_sees_imports_inside_functions_and_through_the_api():
    """The analysis itself: a function-level import is an edge, and a plugin's import of ``fit_mmrm``
    from the API leads to the MMRM engine (not to the API's every module)."""
    edges = {(a, b) for a, b, _ in g.edges()}
    assert ("fclab.framework.stages", "fclab.framework.simulation.truth") in edges  # inside stage_truth
    assert ("fclab.plugins.mmrm", "fclab.framework.stats.mmrm") in edges
    assert "fclab.framework.stats.mmrm" not in g.stage_modules("extract")
    assert "fclab.framework.stats.mmrm" in g.stage_modules("stats")


CODE = re.compile(r"^(cli\.py|api\.py|__init__\.py|framework(/.*)?|plugins(/.*)?)$")


@pytest.mark.parametrize("stage", sorted(g.ADAPTERS))
def test_dvc_deps_are_the_code_the_stage_runs(stage):
    """Each stage's code dependencies in dvc.yaml are exactly what its adapter reaches (regenerate
    with the listing `.venv/bin/python tests/importgraph.py` prints)."""
    deps = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]["deps"]
    listed = {d for d in deps if isinstance(d, str) and CODE.match(d)}
    derived = set(g.stage_deps(stage))
    assert listed == derived, (f"dvc.yaml stage {stage}: missing {sorted(derived - listed)}, "
                               f"not run by the stage {sorted(listed - derived)}")


def test_stage_closures_are_what_the_pipeline_needs():
    """Spot checks against what each stage is known to run: the report draws figures and no stage
    before it does; only simulate and truth run the simulator; extraction is not in stats."""
    figures = "fclab.framework.report.figures"
    assert [s for s in g.ADAPTERS if figures in g.stage_modules(s)] == ["report"]
    simulator = "fclab.framework.simulation.study"
    assert [s for s in g.ADAPTERS if simulator in g.stage_modules(s)] == ["simulate", "truth"]
    assert "fclab.framework.extraction.engine" not in g.stage_modules("stats")
    assert "fclab.plugins.pearson" in g.stage_modules("connectivity")
    assert "fclab.plugins.pearson" not in g.stage_modules("extract")


def test_architecture_map_lists_every_module():
    """docs/architecture.md has a line for every module of framework/ (and nothing that is gone)."""
    text = (ROOT / "docs/architecture.md").read_text()
    section = text.split("## The map", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`(framework/[\w/]+\.py)`", section))
    files = {p.relative_to(ROOT).as_posix() for p in (ROOT / "framework").rglob("*.py")}
    assert files - listed == set(), f"not in the map: {sorted(files - listed)}"
    assert listed - files == set(), f"in the map but not in the tree: {sorted(listed - files)}"
