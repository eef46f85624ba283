"""Metric plugin ``pearson``: Pearson correlation, by default as Fisher z = artanh(r)."""

from __future__ import annotations

import numpy as np

from fclab.api import Metric, PluginParams, correlation, hookimpl, refs


class Pearson(Metric):
    name = "pearson"
    scale = "fisher_z"
    affine_invariant = True

    class Params(PluginParams):
        fisher_z: bool = True

    def __init__(self, params=None):
        super().__init__(params)
        self.scale = "fisher_z" if self.params.fisher_z else "r"
        self.references = (refs.FISHER_Z,) if self.params.fisher_z else ()

    def compute(self, ts: np.ndarray, tr: float) -> np.ndarray:
        r = correlation(ts)
        with np.errstate(divide="ignore"):
            return np.arctanh(r) if self.params.fisher_z else r

    def compute_edges(self, ts: np.ndarray, starts: np.ndarray, stops: np.ndarray, tr: float):
        # Overlapping windows (sliding ones) reuse each other's sums in a compiled kernel; windows
        # that do not overlap (fixed ones) are one batched matrix product each, as in compute.
        order = np.argsort(starts, kind="stable")
        overlap = len(starts) > 1 and bool((stops[order][:-1] > starts[order][1:]).any())
        if not overlap or not np.isfinite(ts).all():
            return super().compute_edges(ts, starts, stops, tr)
        from fclab.api import window_correlations  # here: its module imports numba

        if (order == np.arange(len(order))).all():
            r = window_correlations(ts, starts, stops)
        else:
            r = np.empty((len(starts), ts.shape[1] * (ts.shape[1] - 1) // 2))
            r[order] = window_correlations(ts, starts[order], stops[order])
        if self.params.fisher_z:
            with np.errstate(divide="ignore"):
                np.arctanh(r, out=r)
        return {"": r}

    def describe(self) -> str:
        return "Pearson correlation" + (", Fisher z-transformed" if self.params.fisher_z else "")


@hookimpl
def register_metrics(register):
    register(Pearson)
