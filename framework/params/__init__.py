"""params.yaml: one section per stage, validated in full before any work starts.

Re-exports the schema (``models``) and the loader (``load``); ``docs`` generates docs/params.md.
"""

from fclab.framework.params.load import load_params, load_yaml, validate
from fclab.framework.params.models import (
    SIM_GROUPS, SIM_ROIS, ConnectivityParams, DataParams, DenoiseParams, EffectSpec, ExclusionParams, ExecutorParams,
    ExtractParams, Params, ReportParams, RunSelect, SimulateParams, SlidingSpec, SlurmParams, StatsParams, WindowSpec,
    capped, check_label, is_mni_space, section_hash, strategy_options,
)

__all__ = ["load_params", "load_yaml", "validate", "SIM_GROUPS", "SIM_ROIS", "ConnectivityParams", "DataParams",
           "DenoiseParams", "EffectSpec", "ExclusionParams", "ExecutorParams", "ExtractParams", "Params",
           "ReportParams", "RunSelect", "SimulateParams", "SlidingSpec", "SlurmParams", "StatsParams", "WindowSpec",
           "capped", "check_label", "is_mni_space", "section_hash", "strategy_options"]
