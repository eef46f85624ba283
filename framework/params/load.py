"""Reading params.yaml: YAML without duplicate keys, the schema, then every plugin name and option
(through the plugin builder) and the checks that span sections."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from fclab.framework.errors import ParamsError, did_you_mean
from fclab.framework.params.models import Params
from fclab.framework.pluginhost.builder import plugin_spec, selected
from fclab.framework.pluginhost.registry import get_registry
from fclab.framework.section import first_error


MAX_BYTES = 1_000_000  # a params file is a few kilobytes; anything near this is not one
MAX_VALUES = 100_000  # values once YAML's aliases are expanded (a "billion laughs" file is small)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (PyYAML keeps the
    last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise ParamsError(f"{self.name}: line {key_node.start_mark.line + 1}: key {key!r} given twice in "
                                  f"one mapping (first at line {seen[key] + 1})")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def load_yaml(path: Path):
    """A YAML file's content with the safe loader, refusing duplicate keys, and content that aliases
    expand beyond MAX_VALUES values or that refers to itself (either would hang what walks it)."""
    with open(path, encoding="utf-8") as f:
        loader = _UniqueKeyLoader(f)
        loader.name = str(path)
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    _check_expansion(data, str(path))
    return data


def _check_expansion(data, name: str) -> None:
    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def size(x) -> int:
        if not isinstance(x, (list, dict)):
            return 1
        if id(x) in sizes:
            return sizes[id(x)]
        if id(x) in open_:
            raise ParamsError(f"{name}: a YAML alias refers to the value that holds it")
        open_.add(id(x))
        n = 1 + sum(size(v) for v in (x.values() if isinstance(x, dict) else x))
        open_.discard(id(x))
        sizes[id(x)] = n
        if n > MAX_VALUES:
            raise ParamsError(f"{name}: YAML aliases expand it to more than {MAX_VALUES:,} values; write the values out")
        return n

    size(data)


def load_params(path: str | Path) -> Params:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: params file not found")
    if not path.is_file():
        raise ParamsError(f"{path}: not a regular file (a params file is YAML text on disk)")
    if path.stat().st_size > MAX_BYTES:
        raise ParamsError(f"{path}: {path.stat().st_size:,} bytes; a params file is at most {MAX_BYTES:,}")
    try:
        raw = load_yaml(path)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ParamsError(f"{path}:{where} not valid YAML") from exc
    except UnicodeDecodeError as exc:
        raise ParamsError(f"{path}: not UTF-8 text") from exc
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of stage sections")
    return validate(raw, path)


def validate(raw: dict, source: str | Path = "params.yaml") -> Params:
    """Check the whole file, including every plugin name and its options (built once by the plugin
    builder, as the stages build them), against the registry."""
    try:
        params = Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(first_error(exc, model=Params)) from exc
    registry = get_registry()
    seen = set()
    for kind, key, name, plugin in selected(params, registry):
        if kind == "metric" and not plugin.symmetric:
            # edges.parquet keeps roi_a < roi_b only: an asymmetric metric would lose half its values.
            raise ParamsError(f"{key}: {name!r} is not symmetric, which edges.parquet cannot hold yet")
        if kind != "roi" and (kind, name) in seen:
            raise ParamsError(f"{key}: {name!r} is listed twice")
        seen.add((kind, name))
    _cross_checks(params)
    return params


def _cross_checks(p: Params) -> None:
    if p.stats.design == "crossover":
        # Said before any work: the stages would extract every run and only then find no sessions.
        raise ParamsError("stats.design: crossover is not yet carried by the extract and connectivity stages "
                          "(their tables have no session); run the crossover tests from Python: "
                          "fclab.framework.stats.engine.run_stats(..., sessions=...) (README, Crossover studies)")
    runs = p.extract.data.runs
    for i, w in enumerate(p.connectivity.windows):
        if w.run not in runs:
            raise ParamsError(
                f"connectivity.windows[{i}].run: {w.run!r} is not a run in extract.data.runs "
                f"({', '.join(runs)})"
            )
    for i, w in enumerate(p.connectivity.sliding):
        if w.run not in runs:
            raise ParamsError(
                f"connectivity.sliding[{i}].run: {w.run!r} is not a run in extract.data.runs ({', '.join(runs)})"
            )
    names = [w.name for w in p.connectivity.windows]
    if p.stats.baseline_window not in names:
        raise ParamsError(
            f"stats.baseline_window: {p.stats.baseline_window!r} is not a window ({', '.join(names)})"
        )
    if p.stats.groups[0] == p.stats.groups[1]:
        raise ParamsError("stats.groups: the two groups must differ")
    test_names = [plugin_spec(s, "stats.tests")[0] for s in p.stats.tests]
    if p.report.primary_test not in test_names:
        raise ParamsError(
            f"report.primary_test: {p.report.primary_test!r} is not in stats.tests ({', '.join(test_names)})"
        )
    terms = get_registry().get("test", p.report.primary_test, "report.primary_test").terms_for(p.stats.design)
    if terms and p.report.primary_term not in terms:
        raise ParamsError(f"report.primary_term: {p.report.primary_term!r} is not a term of {p.report.primary_test} "
                          f"({', '.join(terms)}){did_you_mean(p.report.primary_term, terms)}")
    metric_names = [plugin_spec(s, "connectivity.metrics")[0] for s in p.connectivity.metrics]
    if p.report.metric is not None and p.report.metric not in metric_names:
        raise ParamsError(
            f"report.metric: {p.report.metric!r} is not in connectivity.metrics ({', '.join(metric_names)})"
        )
