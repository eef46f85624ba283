"""The one place plugins are built from params: a params entry (a name, or a mapping with ``name``
and options) becomes a validated plugin instance of the kind its section holds. Stages build the
plugins params select and hand them to the engines; no engine looks plugins up itself."""

from __future__ import annotations

from typing import Any

from fclab.framework.errors import ParamsError
from fclab.framework.pluginhost.registry import get_registry

PluginSpec = str | dict[str, Any]


def plugin_spec(spec: PluginSpec, key: str) -> tuple[str, dict[str, Any]]:
    """Split a params plugin entry (a name, or a mapping with ``name``) into name and options."""
    if isinstance(spec, str):
        return spec, {}
    if "name" not in spec or not isinstance(spec["name"], str):
        raise ParamsError(f"{key}.name: missing plugin name")
    opts = {k: v for k, v in spec.items() if k != "name"}
    return spec["name"], opts


SECTIONS = (("roi", "extract.rois"), ("metric", "connectivity.metrics"), ("test", "stats.tests"))
"""Each plugin kind and the params key that lists the plugins of that kind a study uses."""


def build(kind: str, spec: PluginSpec, key: str, registry=None):
    """The plugin of ``kind`` a params entry names, with its options validated (errors name ``key``)."""
    from pydantic import ValidationError

    from fclab.framework.section import first_error

    registry = registry if registry is not None else get_registry()
    name, opts = plugin_spec(spec, key)
    cls = registry.get(kind, name, key)
    try:
        options = cls.Params.model_validate(opts)
    except ValidationError as exc:
        raise ParamsError(first_error(exc, key, cls.Params)) from exc
    return cls(options)


def build_all(kind: str, specs, registry=None) -> list:
    """Every plugin of a params list (``extract.rois``, ``connectivity.metrics``, ``stats.tests``), in order."""
    key = dict(SECTIONS)[kind]
    return [build(kind, spec, f"{key}[{i}]", registry) for i, spec in enumerate(specs)]


def specs_of(params, kind: str) -> list:
    """The params entries of ``kind`` (``params`` is a validated ``Params``)."""
    section, attr = dict(SECTIONS)[kind].split(".")
    return list(getattr(getattr(params, section), attr))


def selected(params, registry=None):
    """(kind, params key, name, plugin instance) for every plugin ``params`` selects, in order."""
    for kind, key in SECTIONS:
        for i, spec in enumerate(specs_of(params, kind)):
            plugin = build(kind, spec, f"{key}[{i}]", registry)
            yield kind, f"{key}[{i}]", plugin.name, plugin
