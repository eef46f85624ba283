"""The kit's machinery: a ``Step`` (one check of a kind), the ``Conformance`` record of a run,
``run_steps``, which runs a kind's steps on a case, stopping after a failed gate, and
``files_read``, the audit of the files a plugin opens."""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


class Unmet(Exception):
    """What a check builds on could not be computed; the gate check that asks first reports it."""


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class Step:
    """One check of a plugin kind: ``fn(case)`` returns None (pass) or why it failed. A ``gate`` is a
    check the later ones build on: when it fails, the run stops there."""

    name: str
    fn: Callable
    gate: bool = False


@dataclass
class Conformance:
    """The checks one plugin went through, in order."""

    kind: str
    plugin: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def run(self, name: str, fn) -> object:
        """Record check ``name``: ``fn()`` returns None (pass) or a reason it failed; an exception fails it."""
        try:
            why = fn()
        except Exception as exc:  # noqa: BLE001 - a plugin raising is what the kit reports
            why = f"raised {type(exc).__name__}: {_one_line(exc)}"
        self.checks.append(Check(name, why is None, why or ""))
        return why

    def lines(self) -> list[str]:
        return [f"{'ok  ' if c.ok else 'FAIL'}  {c.name}" + (f": {c.detail}" if c.detail else "") for c in self.checks]

    def assert_ok(self) -> None:
        if not self.ok:
            raise AssertionError(f"{self.kind} plugin {self.plugin!r} breaks the contract:\n  "
                                 + "\n  ".join(f"{c.name}: {c.detail}" for c in self.failures))


def run_steps(out: Conformance, steps, case, only: str | None = None) -> Conformance:
    """Run ``steps`` on ``case`` into ``out``, stopping after a failed gate; with ``only``, just the step
    of that name (a case computes what a step builds on when it is first asked for)."""
    steps = list(steps)
    if only is not None:
        chosen = [s for s in steps if s.name == only]
        if not chosen:
            raise KeyError(f"no check named {only!r} for {out.kind} plugins (they are: "
                           + "; ".join(s.name for s in steps) + ")")
        steps = chosen
    for step in steps:
        if out.run(step.name, lambda s=step: s.fn(case)) is not None and step.gate:
            break
    return out


def _one_line(exc: BaseException) -> str:
    return re.sub(r"\s+", " ", str(exc)).strip()[:300]


_audit = threading.local()  # .files: the set being filled on this thread, or None
_hooked = False


def _on_audit(event: str, args) -> None:
    """The audit hook (PEP 578): record paths opened for reading while ``files_read`` is active on
    this thread. It runs for every audited event of the process, so it does as little as it can."""
    if event != "open":
        return
    files = getattr(_audit, "files", None)
    if files is None:
        return
    path, _, flags = args
    if isinstance(path, str | bytes | os.PathLike) and not (flags or 0) & (os.O_WRONLY | os.O_RDWR):
        files.append(path)


@contextmanager
def files_read() -> Iterator[list]:
    """The paths opened for reading in the block, as given to ``open`` (``os.fspath`` them); Python's
    own imports included (``undeclared`` sorts those out). The hook, once added, stays for the
    process (audit hooks cannot be removed); outside the block it returns at once."""
    global _hooked
    if not _hooked:
        sys.addaudithook(_on_audit)
        _hooked = True
    _audit.files = found = []
    try:
        yield found
    finally:
        _audit.files = None


def installed_roots() -> list[Path]:
    """Where installed code and its shipped data live: the interpreter's prefixes and site
    directories. A file read from there is versioned with a package, not a study input."""
    import site
    import sysconfig

    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages(), site.getusersitepackages(),
             *(sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib"))}
    return [Path(r).resolve() for r in roots if r]


def undeclared(paths: list, declared: list, allowed: list[Path]) -> list[str]:
    """The files among ``paths`` (opened for reading) that are neither declared (``input_files``) nor
    under an ``allowed`` root, nor Python code or the system's device and process files."""
    want = {Path(f).resolve() for f in declared}
    out = []
    for raw in paths:
        f = Path(os.fsdecode(raw)).resolve()
        if f in want or f.suffix in (".py", ".pyc", ".so") or f.parts[1:2] in (("dev",), ("proc",), ("sys",)):
            continue
        if any(f.is_relative_to(root) for root in allowed) or not f.is_file():
            continue
        out.append(str(f))
    return sorted(set(out))


def reads_undeclared(plugin, work) -> str | None:
    """A fresh instance of ``plugin``'s class, constructed with its params and given to ``work``
    under the file-open audit (``files_read``), opens no file it does not declare in
    ``input_files()``, other than installed packages' files, its own package's, and fclab's caches:
    an undeclared input is one DVC and the provenance never see, so editing it would leave results
    silently stale. None when it reads only what it declares, else what it read."""
    import fclab.framework
    from fclab.framework.memo import cache_root

    cls = type(plugin)
    allowed = [*installed_roots(), Path(fclab.framework.__file__).parent.resolve(), cache_root().resolve()]
    source = getattr(sys.modules.get(cls.__module__), "__file__", None)  # None: code run from a string
    if source and Path(source).name == "__init__.py":
        allowed.append(Path(source).parent.resolve())  # a package's own data ships with its code
    with files_read() as opened:
        fresh = cls(plugin.params)
        work(fresh)
    extra = undeclared(opened, fresh.input_files(), allowed)
    return (f"opens {len(extra)} file(s) it does not declare in input_files(): {', '.join(extra[:3])}"
            f"{', …' if len(extra) > 3 else ''}") if extra else None
