"""fclab's contract and runner, imported as ``fclab.framework``.

Imported under any other name (``import framework`` from the repository root) its classes would be
second copies that fail every isinstance check against the real ones, so that is refused.
"""

if __name__ != "fclab.framework":  # pragma: no cover - a misuse guard
    raise ImportError(f"import fclab.framework, not {__name__} (install fclab: pip install -e .)")

from fclab import __version__  # noqa: E402,F401
