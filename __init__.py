"""fclab: a plugin-based framework for ROI-to-ROI resting-state connectivity studies.

The import package ``fclab`` is the repository root: ``fclab.cli`` (cli.py), ``fclab.framework``
(the contract and runner), ``fclab.plugins`` (the built-in plugins) and ``fclab.api``, the public,
versioned surface plugin authors build on (docs/plugins.md).
"""

__version__ = "0.1.0"
