"""fclab's built-in plugins, imported as ``fclab.plugins``. Each module is an ordinary fclab plugin
that uses only ``fclab.api``, like a third-party one."""

if __name__ != "fclab.plugins":  # pragma: no cover - a misuse guard
    raise ImportError(f"import fclab.plugins, not {__name__} (install fclab: pip install -e .)")
