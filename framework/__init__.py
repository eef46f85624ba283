"""fclab: a plugin-based framework for ROI-to-ROI resting-state connectivity studies."""

__version__ = "0.1.0"
