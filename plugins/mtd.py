"""Metric plugin ``mtd``: multiplication of temporal derivatives (Shine et al., 2015, NeuroImage 122:399).

Each ROI's first difference is divided by its standard deviation over the window; the MTD of a pair
is the mean over the window of the product of those normalised derivatives. Over sliding windows
this is the windowed MTD of the paper (its simple moving average); over a fixed window it is the
window's mean coupling. Scaling or shifting a signal leaves it unchanged.
"""

from __future__ import annotations

import numpy as np

from fclab.api import Metric, hookimpl, refs


class Mtd(Metric):
    name = "mtd"
    scale = "mtd"
    references = (refs.MTD,)
    affine_invariant = True

    def problem(self, n_volumes: int, tr: float) -> str | None:
        return None if n_volumes >= 3 else "mtd needs at least 3 volumes"

    def compute(self, ts: np.ndarray, tr: float) -> np.ndarray:
        d = np.diff(ts, axis=-2)
        with np.errstate(invalid="ignore", divide="ignore"):
            z = d / d.std(axis=-2, keepdims=True)  # a constant ROI gives NaN
        return np.swapaxes(z, -1, -2) @ z / d.shape[-2]

    def describe(self) -> str:
        return "multiplication of temporal derivatives (MTD)"


@hookimpl
def register_metrics(register):
    register(Mtd)
