"""fclab's built-in plugins. Each module is an ordinary fclab plugin, like a third-party one."""
