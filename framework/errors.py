"""The error hierarchy. Each class carries the exit code the CLI maps it to."""


class FclabError(Exception):
    """Base of every error fclab reports as a one-line message."""

    exit_code = 1


class ParamsError(FclabError):
    """A usage or params.yaml problem, found before any work starts (exit 2)."""

    exit_code = 2


class PluginError(FclabError):
    """A plugin could not be imported or registered, or broke its contract (exit 2)."""

    exit_code = 2


class DataError(FclabError):
    """An input file is missing, corrupt or inconsistent (exit 1)."""

    exit_code = 1


def did_you_mean(word: str, choices) -> str:
    """'; did you mean X?' for the closest of ``choices``, or ''."""
    import difflib

    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
