"""The plugin host: the three plugin kinds (``contracts``), the hooks a plugin implements
(``hookspecs``), discovery (``registry``) and the one function that builds the plugins params select
(``builder``). Plugin authors import all of it from ``fclab.api``."""
