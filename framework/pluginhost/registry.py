"""Plugin discovery and the typed facade the rest of fclab uses.

Built-in plugins are ordinary plugin modules, declared as ``fclab`` entry points in pyproject.toml
like any third-party plugin (``builtin_plugins`` reads them back); they load first, through the same
function as third-party modules, and whatever ``FCLAB_LOAD_PLUGINS`` says. Core code asks
this module's ``Registry`` for plugin classes and never calls ``pm.hook`` itself.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
from dataclasses import dataclass
from functools import lru_cache

import pluggy
from pydantic import BaseModel

from fclab.framework import __version__
from fclab.framework.pluginhost import hookspecs
from fclab.framework.pluginhost.contracts import KINDS, TEST_INPUTS, Plugin, PluginParams, Scale
from fclab.framework.errors import ParamsError, PluginError

ENTRY_POINT_GROUP = "fclab"
ENV_SELECT = "FCLAB_LOAD_PLUGINS"


@lru_cache(maxsize=1)
def builtin_plugins() -> tuple[str, ...]:
    """fclab's own plugin modules: the ``fclab`` entry points of fclab's own distribution, which
    pyproject.toml lists (the one list of them), in the order its metadata gives (by name)."""
    return tuple(dict.fromkeys(ep.value.split(":")[0] for ep in md.entry_points(group=ENTRY_POINT_GROUP)
                               if ep.dist is not None and ep.dist.name == "fclab"))

_HOOK_OF_KIND = {"roi": "register_rois", "metric": "register_metrics", "test": "register_stat_tests"}


@dataclass(frozen=True)
class PluginInfo:
    name: str
    kind: str
    version: str
    distribution: str
    module: str
    builtin: bool
    entry_point: str  # the name FCLAB_LOAD_PLUGINS selects


def _selected_external() -> set[str] | None:
    """Names of the entry points to load, from FCLAB_LOAD_PLUGINS; None means all of them."""
    raw = os.environ.get(ENV_SELECT)
    if raw is None:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


class Registry:
    """Loads plugins once and answers "which ROI sets / metrics / tests exist" by kind."""

    def __init__(self):
        self.pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.load_errors: list[str] = []
        self.load_tracebacks: list[str] = []  # of the import failures among load_errors, for -v
        self._dists: dict[str, str] = {}  # module name -> distribution name
        for module_name in builtin_plugins():
            self._load(module_name, lambda m=module_name: importlib.import_module(m), "fclab")
        wanted = _selected_external()
        self._entry_points: dict[str, str] = {}  # module name -> entry-point name
        self.selection_error: str | None = None
        found = set()
        for ep in md.entry_points(group=ENTRY_POINT_GROUP):
            found.add(ep.name)
            self._entry_points.setdefault(ep.value.split(":")[0], ep.name)
            if wanted is not None and ep.name not in wanted:
                continue
            dist = ep.dist.name if ep.dist is not None else "?"
            self._load(ep.name, ep.load, dist)
        unknown = sorted((wanted or set()) - found)
        if unknown:
            self.selection_error = (f"{ENV_SELECT}: no installed plugin entry point named {unknown[0]!r} "
                                    f"(installed: {', '.join(sorted(found))}; `fclab plugins --all` lists them)")
        self._classes = {kind: self._collect(kind) for kind in KINDS}

    def _load(self, name, loader, dist):
        try:
            module = loader()
        except (Exception, SystemExit) as exc:  # a broken plugin (one that exits, too) must not take the others down
            import traceback

            self.load_errors.append(
                f"plugin {name!r} failed to import: {type(exc).__name__}: {exc}".replace("\n", " ")
            )
            self.load_tracebacks.append(traceback.format_exc())
            return
        if self.pm.is_registered(module):
            return  # a built-in that is also declared as an entry point
        try:
            self.pm.register(module, name)
            self.pm.check_pending()  # a hook fclab does not define (a misspelt name) is an error
        except pluggy.PluginValidationError as exc:
            if self.pm.is_registered(module):
                self.pm.unregister(module)
            self.load_errors.append(f"plugin {name!r} was not loaded: {exc}".replace("\n", " "))
            return
        self._dists[getattr(module, "__name__", name)] = dist

    def _collect(self, kind: str) -> dict[str, type[Plugin]]:
        base = KINDS[kind]
        found: dict[str, type[Plugin]] = {}
        hook = getattr(self.pm.hook, _HOOK_OF_KIND[kind])
        for impl in hook.get_hookimpls():  # in registration order: built-ins first
            plugin_name = impl.plugin_name

            def register(cls, _plugin=plugin_name):
                _validate(cls, base, kind, _plugin)
                if cls.name in found:
                    other = found[cls.name].__module__
                    raise PluginError(
                        f"plugin {_plugin!r}: {kind} name {cls.name!r} is already registered by {other!r}"
                    )
                found[cls.name] = cls

            before = dict(found)
            try:
                impl.function(register=register)
            except (Exception, SystemExit) as exc:  # one broken plugin leaves out its own classes only
                found.clear()
                found.update(before)
                message = str(exc) if isinstance(exc, PluginError) else (
                    f"plugin {plugin_name!r}: {_HOOK_OF_KIND[kind]} raised {type(exc).__name__}: {exc}")
                self.load_errors.append(f"{message} (its {kind} plugins were not loaded)".replace("\n", " "))
        return found

    # -- the typed facade -------------------------------------------------------------------
    def rois(self) -> dict[str, type[Plugin]]:
        return dict(self._classes["roi"])

    def metrics(self) -> dict[str, type[Plugin]]:
        return dict(self._classes["metric"])

    def stat_tests(self) -> dict[str, type[Plugin]]:
        return dict(self._classes["test"])

    def get_all(self, kind: str) -> dict[str, type[Plugin]]:
        """Name -> class of every loaded plugin of ``kind`` ("roi", "metric" or "test")."""
        return dict(self._classes[kind])

    def get(self, kind: str, name: str, key: str) -> type[Plugin]:
        """The class registered as ``name``; a params error naming ``key`` if there is none."""
        classes = self._classes[kind]
        if name not in classes:
            available = ", ".join(sorted(classes)) or "none"
            extra = f" ({'; '.join(self.load_errors)})" if self.load_errors else ""
            raise ParamsError(f"{key}: unknown {kind} plugin {name!r}; available: {available}{extra}")
        return classes[name]

    def add_commands(self, app) -> None:
        self.pm.hook.register_commands(app=app)

    def infos(self, include_all: bool = True) -> list[PluginInfo]:
        out = []
        for kind in KINDS:
            for name, cls in self._classes[kind].items():
                module = cls.__module__
                builtin = module in builtin_plugins()
                if not include_all and builtin:
                    continue
                dist = self._dist_of(module)
                version = cls.version or _dist_version(dist) or "unknown"
                top = next((m for m in self._entry_points if module == m or module.startswith(m + ".")), module)
                out.append(PluginInfo(name, kind, version, dist, module, builtin, self._entry_points.get(top, "")))
        return out

    def record(self, plugin: Plugin) -> dict:
        """What a result computed with ``plugin`` depends on: its distribution and version, a hash of
        its code, the versions of its distribution's requirements and the hashes of its input files."""
        from fclab.framework.io import file_digest

        dist = self._dist_of(type(plugin).__module__)
        inputs = {}
        for f in plugin.input_files():
            try:
                inputs[str(f)] = file_digest(f)
            except OSError:
                inputs[str(f)] = "missing"
        return {"distribution": dist, "version": type(plugin).version or _dist_version(dist) or "unknown",
                "code": code_digest(type(plugin)), "requirements": dict(requirement_versions(dist)), "inputs": inputs}

    def _dist_of(self, module: str) -> str:
        for mod, dist in self._dists.items():
            if module == mod or module.startswith(mod + "."):
                return dist
        dists = md.packages_distributions().get(module.split(".")[0], [])
        return dists[0] if dists else "unknown"


def code_digest(cls) -> str:
    """A hash of the source of the top-level package (or module) that defines ``cls``: every ``.py``
    file under it, by relative path, so an edit to a plugin or to a helper module beside it changes it,
    whether the distribution is installed as a wheel or in editable mode. fclab's own plugins are one
    module each: the hash is of that module (what it calls of the framework is a DVC dependency of the
    stages that run it, by path), so editing a test plugin changes test.json only."""
    parts = cls.__module__.split(".")
    return _package_digest(cls.__module__ if parts[:2] == ["fclab", "plugins"] else parts[0])


@lru_cache(maxsize=None)
def _package_digest(top_name: str) -> str:
    """Once per process and package: the code a process runs does not change under it."""
    import hashlib
    import sys
    from pathlib import Path

    top = sys.modules.get(top_name)
    h = hashlib.sha256()
    roots = list(getattr(top, "__path__", []) or [])
    files = [(Path(r), f) for r in roots for f in sorted(Path(r).rglob("*.py"))]
    if not files and getattr(top, "__file__", None):
        files = [(Path(top.__file__).parent, Path(top.__file__))]
    for root, f in files:
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


@lru_cache(maxsize=None)
def requirement_versions(dist: str) -> dict[str, str]:
    """Installed versions of what the distribution ``dist`` requires (extras left out); once per
    process and distribution, like the code digest (reset_registry forgets them)."""
    import re

    out = {}
    try:
        requires = md.requires(dist) or []
    except md.PackageNotFoundError:
        return out
    for req in requires:
        if "extra ==" in req:
            continue
        name = re.match(r"[A-Za-z0-9._-]+", req).group(0)
        out[name] = _dist_version(name) or "not installed"
    return dict(sorted(out.items()))


def _dist_version(dist: str) -> str | None:
    if dist == "fclab":
        return __version__
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _validate(cls, base, kind, plugin_name) -> None:
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise PluginError(
            f"plugin {plugin_name!r}: register_{kind} expects a subclass of {base.__name__}, "
            f"got {cls!r}"
        )
    if not isinstance(cls.name, str) or not cls.name.isidentifier():
        raise PluginError(f"plugin {plugin_name!r}: {cls.__name__}.name must be an identifier, got {cls.name!r}")
    params = getattr(cls, "Params", None)
    if not (isinstance(params, type) and issubclass(params, BaseModel)):
        raise PluginError(f"plugin {plugin_name!r}: {cls.__name__}.Params must be a pydantic model")
    if not issubclass(params, PluginParams) and params.model_config.get("extra") != "forbid":
        raise PluginError(
            f"plugin {plugin_name!r}: {cls.__name__}.Params must forbid unknown keys "
            "(subclass fclab.api.PluginParams)"
        )
    refs = cls.references
    if not isinstance(refs, (tuple, list)) or not all(isinstance(r, str) and r.strip() for r in refs):
        raise PluginError(f"plugin {plugin_name!r}: {cls.__name__}.references must be a tuple of non-empty strings")
    if kind == "metric" and not cls.scale:
        raise PluginError(f"plugin {plugin_name!r}: metric {cls.name!r} must declare its output scale")
    if kind == "metric" and not all(isinstance(s, Scale) for s in cls.scales):
        raise PluginError(f"plugin {plugin_name!r}: metric {cls.name!r}: scales must be a tuple of fclab.api.Scale")
    if kind == "test":
        unknown = sorted(set(cls.uses) - set(TEST_INPUTS))
        if unknown:
            raise PluginError(f"plugin {plugin_name!r}: test {cls.name!r} uses unknown input(s) {', '.join(unknown)} "
                              f"(available: {', '.join(TEST_INPUTS)})")


@lru_cache(maxsize=None)
def _cached(selection: str | None) -> Registry:
    return Registry()


def get_registry() -> Registry:
    """The process-wide registry, rebuilt when FCLAB_LOAD_PLUGINS changes."""
    return _cached(os.environ.get(ENV_SELECT))


def reset_registry() -> None:
    """Forget the loaded plugins, so newly installed distributions are found (used by tests)."""
    _cached.cache_clear()
    requirement_versions.cache_clear()
    builtin_plugins.cache_clear()
