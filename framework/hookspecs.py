"""The hooks a plugin implements. Plugin authors write ``from fclab.framework.hookspecs import hookimpl``."""

from pluggy import HookimplMarker, HookspecMarker

hookspec = HookspecMarker("fclab")
hookimpl = HookimplMarker("fclab")


@hookspec
def register_rois(register):
    """Register ROI-set classes (subclasses of fclab.framework.contracts.RoiSet) by calling register(cls)."""


@hookspec
def register_metrics(register):
    """Register connectivity-metric classes (subclasses of fclab.framework.contracts.Metric)."""


@hookspec
def register_stat_tests(register):
    """Register group-level statistical-test classes (subclasses of fclab.framework.contracts.StatTest)."""


@hookspec
def register_commands(app):
    """Add extra commands to the typer application ``app``."""
