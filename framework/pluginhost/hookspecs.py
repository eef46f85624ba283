"""The hooks a plugin implements. Plugin authors import everything from the public API:

    from fclab.api import Metric, PluginParams, hookimpl

and implement one ``register_*`` hook per kind they provide (docs/plugins.md).
"""

from pluggy import HookimplMarker, HookspecMarker

hookspec = HookspecMarker("fclab")
hookimpl = HookimplMarker("fclab")


@hookspec
def register_rois(register):
    """Register ROI-set classes (subclasses of ``fclab.api.RoiSet``) by calling ``register(cls)``."""


@hookspec
def register_metrics(register):
    """Register connectivity-metric classes (subclasses of ``fclab.api.Metric``)."""


@hookspec
def register_stat_tests(register):
    """Register group-level statistical-test classes (subclasses of ``fclab.api.StatTest``)."""


@hookspec
def register_commands(app):
    """Add extra commands to the typer application ``app``."""
