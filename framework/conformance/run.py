"""Running the kit on any plugin by its kind, and on an installed plugin by name (``fclab plugins
check NAME``, with its options from params.yaml when the study uses it)."""

from __future__ import annotations

from fclab.framework.conformance.kit import Conformance
from fclab.framework.conformance.metrics import check_metric, metric_checks
from fclab.framework.conformance.roi_sets import check_roi_set, roi_set_checks
from fclab.framework.conformance.stat_tests import check_stat_test, stat_test_checks
from fclab.framework.pluginhost.contracts import Metric, RoiSet, StatTest


def check_plugin(plugin, only: str | None = None) -> Conformance:
    """The kit for any plugin instance, by its kind; ``only``: one check by name."""
    if isinstance(plugin, Metric):
        return check_metric(plugin, only=only)
    if isinstance(plugin, StatTest):
        return check_stat_test(plugin, only=only)
    if isinstance(plugin, RoiSet):
        return check_roi_set(plugin, only)
    raise TypeError(f"not an fclab plugin: {plugin!r}")


def plugin_checks(plugin):
    """The checks ``check_plugin`` runs for ``plugin``, in order (``Step`` name, function, gate)."""
    if isinstance(plugin, Metric):
        return list(metric_checks(plugin))
    if isinstance(plugin, StatTest):
        return list(stat_test_checks(plugin))
    if isinstance(plugin, RoiSet):
        return list(roi_set_checks(plugin))
    raise TypeError(f"not an fclab plugin: {plugin!r}")


_SECTIONS = {"roi": ("extract", "rois"), "metric": ("connectivity", "metrics"), "test": ("stats", "tests")}


def check_named(name: str, kind: str | None = None, params_path=None) -> Conformance:
    """``fclab plugins check NAME``: the kit for the installed plugin ``name``, built with its options
    from params.yaml when the study uses it there, else with its defaults."""
    from pathlib import Path

    from fclab.framework.errors import ParamsError
    from pydantic import ValidationError

    from fclab.framework.params import load_yaml
    from fclab.framework.section import first_error
    from fclab.framework.errors import did_you_mean
    from fclab.framework.pluginhost.builder import plugin_spec
    from fclab.framework.pluginhost.registry import get_registry

    registry = get_registry()
    found = {k: registry.get_all(k)[name] for k in _SECTIONS if name in registry.get_all(k) and kind in (None, k)}
    if not found:
        every = sorted({n for k in _SECTIONS for n in registry.get_all(k)})
        failed = f"; not loaded: {'; '.join(registry.load_errors)}" if registry.load_errors else ""
        raise ParamsError(f"plugins check: no installed {kind or 'plugin'} named {name!r}"
                          f"{did_you_mean(name, every) or ''} (`fclab plugins --all` lists them{failed})")
    if len(found) > 1:
        raise ParamsError(f"plugins check: {name!r} is a plugin of kinds {', '.join(found)}; choose one with --kind")
    (k, cls), = found.items()
    opts: dict = {}
    if params_path is not None and Path(params_path).is_file():
        section, key = _SECTIONS[k]
        raw = load_yaml(Path(params_path)) or {}
        for i, spec in enumerate(((raw.get(section) or {}).get(key)) or []):
            n, o = plugin_spec(spec, f"{section}.{key}[{i}]")
            if n == name:
                opts = o
                break
    try:
        plugin = cls(cls.Params.model_validate(opts))
    except ValidationError as exc:  # the plugin needs options params.yaml does not give
        raise ParamsError(f"plugins check: {first_error(exc, name, cls.Params)}; list {name!r} with its "
                          f"options in {params_path or 'params.yaml'} to check it") from exc
    return check_plugin(plugin)
