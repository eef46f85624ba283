"""The kit's machinery: a ``Step`` (one check of a kind), the ``Conformance`` record of a run, and
``run_steps``, which runs a kind's steps on a case, stopping after a failed gate."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field


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
