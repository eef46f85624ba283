"""fclab's own import graph, read from the source files with ``ast`` (nothing is imported), and what
each DVC stage's adapter reaches through it.

Every ``import`` and ``from ... import`` counts, at module level or inside a function. A name imported
from a module that only re-exports (``fclab.api``, ``fclab.framework.params``) resolves to the module
that defines it, so a plugin that imports ``fit_mmrm`` from the API depends on the MMRM engine and not
on everything the API exports.

    .venv/bin/python tests/importgraph.py          # the layer table and each stage's dependencies
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Bottom to top. A module may import from its own layer or below; a test fails on anything else.
LAYERS = (
    ("base", ("fclab", "fclab.framework", "fclab.framework.errors", "fclab.framework.references",
              "fclab.framework.section", "fclab.framework.io", "fclab.framework.executor", "fclab.framework.memo")),
    ("pluginhost", ("fclab.framework.pluginhost",)),
    ("params", ("fclab.framework.params",)),
    ("extraction", ("fclab.framework.extraction",)),
    ("connectome", ("fclab.framework.connectome",)),
    ("stats", ("fclab.framework.stats",)),
    ("simulation", ("fclab.framework.simulation",)),
    ("report", ("fclab.framework.report",)),
    ("conformance", ("fclab.framework.conformance",)),
    ("stages", ("fclab.framework.stages",)),
    ("commands", ("fclab.framework.commands",)),
    ("api", ("fclab.api",)),
    ("plugins", ("fclab.plugins",)),
    ("cli", ("fclab.cli",)),
)
REEXPORTS = ("fclab.api", "fclab.framework.params", "fclab.framework.conformance")  # modules whose names resolve to where they are defined


def module_files() -> dict[str, Path]:
    """Module name -> file, for fclab's own code (framework/, plugins/, api.py, cli.py, __init__.py)."""
    files = {"fclab": ROOT / "__init__.py", "fclab.api": ROOT / "api.py", "fclab.cli": ROOT / "cli.py"}
    for top in ("framework", "plugins"):
        for f in sorted((ROOT / top).rglob("*.py")):
            parts = ("fclab",) + f.relative_to(ROOT).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return files


def layer_of(module: str) -> int:
    """The index in LAYERS of the longest prefix that names ``module``'s layer."""
    best, index = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, index = len(p), i
    if index is None:
        raise KeyError(f"{module} is in no layer of tests/importgraph.py")
    return index


@dataclass
class Import:
    target: str  # the module imported from (a submodule when a name is one)
    names: tuple[str, ...]  # the names taken from it (() for a plain import)
    line: int
    in_function: str | None  # the top-level function or class it sits in, None at module level
    bound_as: tuple[str, ...] = ()  # the names they are bound to in the importer (``as`` aliases)


@dataclass
class Module:
    name: str
    path: Path
    imports: list[Import] = field(default_factory=list)
    bound: dict[str, str] = field(default_factory=dict)  # module-level name -> module it came from
    functions: dict[str, ast.AST] = field(default_factory=dict)  # top-level defs


def _resolve(base: str, name: str, files) -> str:
    """``from base import name``: the submodule base.name if there is one, else base."""
    return f"{base}.{name}" if f"{base}.{name}" in files else base


@lru_cache(maxsize=1)
def parse() -> dict[str, Module]:
    files = module_files()
    mods = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        mod = Module(name, path)
        owner_of = {}
        for top in tree.body:
            if isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                mod.functions[top.name] = top
                for node in ast.walk(top):
                    owner_of[id(node)] = top.name
        for node in ast.walk(tree):
            owner = owner_of.get(id(node))
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "fclab":
                by_target: dict[str, list] = {}
                for alias in node.names:
                    target = _resolve(node.module, alias.name, files)
                    by_target.setdefault(target, []).append(alias)
                    if owner is None:
                        mod.bound[alias.asname or alias.name] = target
                for target, aliases in by_target.items():
                    mod.imports.append(Import(target, tuple(a.name for a in aliases), node.lineno, owner,
                                              tuple(a.asname or a.name for a in aliases)))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "fclab":
                        mod.imports.append(Import(alias.name, (), node.lineno, owner))
                        if owner is None:
                            mod.bound[alias.asname or alias.name] = alias.name
        mods[name] = mod
    return mods


def _defined_in(module: str, name: str, mods, seen=()) -> str:
    """Where ``name`` taken from ``module`` is defined, through re-exporting modules."""
    if module not in REEXPORTS or (module, name) in seen:
        return module
    for imp in mods[module].imports:
        if name in imp.bound_as and imp.target in mods:
            return _defined_in(imp.target, name, mods, seen + ((module, name),))
    return module


def edges() -> list[tuple[str, str, Import]]:
    """(importer, imported module, the import) for every import of fclab's own code by fclab's own code.
    A package's ``__init__`` counts as imported with any of its submodules."""
    mods = parse()
    out = []
    for name, mod in mods.items():
        for imp in mod.imports:
            targets = {_defined_in(imp.target, n, mods) for n in imp.names} if imp.names else {imp.target}
            for t in targets:
                if t in mods and t != name:
                    out.append((name, t, imp))
    return out


def graph() -> dict[str, set[str]]:
    g: dict[str, set[str]] = {m: set() for m in parse()}
    for a, b, _ in edges():
        g[a].add(b)
    return g


def packages_of(module: str) -> list[str]:
    """The package ``__init__`` modules Python runs to import ``module``."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def closure(start: set[str]) -> set[str]:
    """Every module reachable from ``start`` (its packages' ``__init__`` included)."""
    g, mods = graph(), parse()
    seen, todo = set(), list(start)
    while todo:
        m = todo.pop()
        if m in seen or m not in mods:
            continue
        seen.add(m)
        todo += list(g[m]) + packages_of(m)
    return seen


def cycles() -> list[list[str]]:
    """Each strongly connected component of more than one module (Tarjan)."""
    g = graph()
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


# -- what each DVC stage's adapter reaches -------------------------------------------------------------

STAGES_MODULE = "fclab.framework.stages"
ADAPTERS = {"simulate": "stage_simulate", "extract": "stage_extract", "connectivity": "stage_connectivity",
            "truth": "stage_truth", "stats": "stage_stats", "report": "stage_report"}
PLUGIN_KIND_CALLS = {"roi_builder": "roi"}  # helpers of stages.py that build plugins of one kind


def function_reach(module: Module, func: str, skip: frozenset = frozenset(), seen: set | None = None):
    """(modules, plugin kinds) the top-level function ``func`` of ``module`` uses: the modules of the
    module-level imports whose names it mentions, its own imports, and the same for the functions of
    ``module`` it calls. ``plugins(params, "<kind>")`` and ``roi_builder`` name the plugin kinds it runs.
    Modules in ``skip`` are left out (cli's stage commands reach the stages only through the adapter)."""
    seen = set() if seen is None else seen
    if func in seen:
        return set(), set()
    seen.add(func)
    node = module.functions[func]
    mods = {imp.target for imp in module.imports if imp.in_function == func}
    kinds = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            if n.id in module.bound:
                mods.add(module.bound[n.id])
            elif n.id in module.functions and n.id != func:
                sub_mods, sub_kinds = function_reach(module, n.id, skip, seen)
                mods |= sub_mods
                kinds |= sub_kinds
            if n.id in PLUGIN_KIND_CALLS:
                kinds.add(PLUGIN_KIND_CALLS[n.id])
        if (isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "plugins" and len(n.args) > 1
                and isinstance(n.args[1], ast.Constant)):
            kinds.add(n.args[1].value)
    return mods - skip, kinds


@lru_cache(maxsize=None)
def plugin_modules(kind: str) -> frozenset:
    """The built-in plugin modules that register plugins of ``kind`` (read from the registry)."""
    from fclab.framework.pluginhost.registry import get_registry

    return frozenset(cls.__module__ for cls in get_registry().get_all(kind).values()
                     if cls.__module__.startswith("fclab.plugins."))


def stage_modules(stage: str) -> set[str]:
    """Every fclab module the DVC stage ``stage`` runs: its command in cli.py (reading params) and its
    adapter in stages.py, each with the modules whose names it uses and everything those import (at any
    level: the closure is conservative), and the built-in plugins of the kinds the adapter runs, with
    what they take from the API. Modules only imported, never used, by cli.py and stages.py are not in it:
    their code cannot change what the stage writes."""
    mods = parse()
    skip = frozenset({STAGES_MODULE, "fclab.framework.commands"})
    cli_reach, _ = function_reach(mods["fclab.cli"], stage, skip)
    reach, kinds = function_reach(mods[STAGES_MODULE], ADAPTERS[stage])
    used = closure(cli_reach | reach | {m for k in kinds for m in plugin_modules(k)})
    used |= {"fclab.cli", STAGES_MODULE} | set(packages_of(STAGES_MODULE))
    if kinds:
        used.add("fclab.api")  # the plugins import it (its names resolve to the modules above)
    return used


PACKAGE_DATA = {"fclab.framework.report.page": ("framework/report/templates",)}  # files a module reads at run time


def stage_deps(stage: str) -> list[str]:
    """``stage_modules`` as DVC dependency paths: a package's directory when the stage uses every module
    of it (the directory also holds the package's data: the report's templates), its files otherwise."""
    used = stage_modules(stage)
    mods = parse()
    out = []
    for pkg_dir in sorted({mods[m].path.parent for m in mods}):
        inside = {m for m in mods if mods[m].path.parent == pkg_dir}
        if not inside & used:
            continue
        whole = inside <= used and pkg_dir != ROOT and not any(
            mods[m].path.parent != pkg_dir and mods[m].path.is_relative_to(pkg_dir) for m in mods)
        if whole:
            out.append(pkg_dir.relative_to(ROOT).as_posix())
        else:
            out += sorted(mods[m].path.relative_to(ROOT).as_posix() for m in inside & used)
    covered = tuple(d + "/" for d in out)
    out += [d for m in sorted(used) for d in PACKAGE_DATA.get(m, ()) if not d.startswith(covered)]
    return out


if __name__ == "__main__":
    for i, (name, prefixes) in enumerate(LAYERS):
        members = sorted(m for m in parse() if layer_of(m) == i)
        print(f"{i:2d} {name:12s} {len(members):3d} modules")
    print("cycles:", cycles() or "none")
    for stage in ADAPTERS:
        print(f"{stage}: {', '.join(stage_deps(stage))}")
