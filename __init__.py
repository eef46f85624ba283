"""fclab: a plugin-based framework for ROI-to-ROI resting-state connectivity studies.

The import package ``fclab`` is the repository root: ``fclab.cli`` (cli.py), ``fclab.framework``
(the contract and runner), ``fclab.plugins`` (the built-in plugins) and ``fclab.api``, the public,
versioned surface plugin authors build on (docs/plugins.md).
"""

# While fclab is 0.x its minor version is the plugin API version (fclab.api.API_VERSION): plugins
# declare ``fclab>=0.2,<0.3``. The version is read here by pyproject.toml too.
__version__ = "0.2.0"
